package procwatch

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"hotfleet/internal/testenv"
)

// BenchmarkExecLatency measures how late the agent learns of an exec: from
// the kernel's timestamp of the event (CLOCK_MONOTONIC, taken in execve) to
// the moment the consumer receives it from Events. Run with
//
//	go test -run XXX -bench ExecLatency -benchtime 500x ./internal/procwatch/
//
// The poll variant measures from just before the program is started, since
// polling has no kernel timestamp.
func BenchmarkExecLatency(b *testing.B) {
	testenv.NeedRoot(b)
	quick := testenv.CC(b, "quick", "-O1", "testdata/quick.c")
	for _, mode := range []string{ModeNetlink, ModePoll} {
		b.Run(mode, func(b *testing.B) {
			w, err := Open(context.Background(), Options{Mode: mode, PollInterval: 20 * time.Millisecond})
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			// quick exits at once; poll mode only sees a process that
			// lives across a poll, so there it runs hold instead.
			prog, args := quick, []string(nil)
			if mode == ModePoll {
				prog = testenv.CC(b, "hold", "-O1", "testdata/hold.c")
			}
			lat := make([]time.Duration, 0, b.N)
			b.ResetTimer()
			for range b.N {
				cmd := exec.Command(prog, args...)
				stdin, _ := cmd.StdinPipe()
				started := monotonic()
				if err := cmd.Start(); err != nil {
					b.Fatal(err)
				}
				pid := cmd.Process.Pid
				for ev := range w.Events() {
					if ev.Kind == Exec && ev.Pid == pid {
						from := ev.Stamp
						if mode == ModePoll {
							from = started
						}
						lat = append(lat, monotonic()-from)
						break
					}
				}
				stdin.Close()
				cmd.Wait()
			}
			b.StopTimer()
			slices.Sort(lat)
			if len(lat) == 0 {
				return
			}
			p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
			b.ReportMetric(float64(p(0.5).Microseconds()), "p50-µs")
			b.ReportMetric(float64(p(0.99).Microseconds()), "p99-µs")
			b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
			b.ReportMetric(float64(w.Lost()), "lost")
			if testing.Verbose() {
				fmt.Printf("%s: %d execs, p50 %v, p99 %v, max %v\n", mode, len(lat), p(0.5), p(0.99), lat[len(lat)-1])
			}
		})
	}
}

// monotonic reads CLOCK_MONOTONIC, the clock of the kernel's event stamps.
func monotonic() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

// BenchmarkPollScan measures one poll of /proc, the poll mode's cost each
// interval, on however many processes the machine runs.
func BenchmarkPollScan(b *testing.B) {
	p := &poller{stat: make([]byte, maxStat)}
	var n int
	for range b.N {
		m, err := p.scan()
		if err != nil {
			b.Fatal(err)
		}
		n = len(m)
	}
	b.ReportMetric(float64(n), "procs")
}
