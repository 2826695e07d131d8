package livepatch_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"hotfleet/internal/bundle"
	"hotfleet/internal/livepatch"
	"hotfleet/internal/livepatch/lptest"
	"hotfleet/internal/testenv"
)

// benchFuncs are the functions of testdata/bench/funcs_old.c, in the order
// the bench target reports them.
var benchFuncs = []string{"bf0", "bf1", "bf2", "bf3", "bf4", "bf5", "bf6", "bf7", "bf8", "bf9"}

// BenchmarkPause measures how long the threads of a busy process stay stopped
// while a patch switches in (and out again), for 1 and 10 functions and 1, 16
// and 64 threads calling them in a tight loop. It reports the percentiles of
// Result.Pause of Apply (p50-us, p99-us, max-us) and of Revert
// (revert-p99-us). The goal is p99 < 500 µs for 10 functions with 16 threads.
// Run it with 'make bench'; see BENCHMARKS.md.
func BenchmarkPause(b *testing.B) {
	testenv.NeedRoot(b)
	dir := b.TempDir()
	flags := []string{"-O2", "-g", "-ffunction-sections", "-fdata-sections"}
	orig := testenv.CC(b, filepath.Join(dir, "orig.o"), append(flags, "-c", "testdata/bench/funcs_old.c")...)
	fixed := testenv.CC(b, filepath.Join(dir, "fixed.o"), append(flags, "-c", "testdata/bench/funcs_new.c")...)
	exe := testenv.CC(b, filepath.Join(dir, "bench-target"), append(flags, "-pthread", "-Wl,--build-id", "testdata/bench/target.c", orig)...)

	for _, funcs := range []int{1, 10} {
		bd := lptest.MakeBundle(b, exe, fmt.Sprintf("bench-%d", funcs), 1, lptest.ObjectFns(b, fixed, benchFuncs[:funcs]...)...)
		for _, threads := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("funcs=%d/threads=%d", funcs, threads), func(b *testing.B) {
				benchPause(b, exe, bd, funcs, threads)
			})
		}
	}
}

func benchPause(b *testing.B, exe string, bd *bundle.Bundle, funcs, threads int) {
	ctx := context.Background()
	tg := startBenchTarget(b, exe, threads)
	steps := &stepRecorder{}
	opts := livepatch.Options{Log: slog.New(steps)}

	// The numbers mean something only if the patch does what it says.
	if _, err := livepatch.Apply(ctx, tg.pid, bd, opts); err != nil {
		b.Fatalf("apply %s to the bench target: %v", bd.ID, err)
	}
	if got, want := tg.query(b), benchKinds(funcs); got != want {
		b.Fatalf("after applying %s the functions run old(0)/new(1) code %s, want %s", bd.ID, got, want)
	}
	if _, err := livepatch.Revert(ctx, tg.pid, bd.ID, opts); err != nil {
		b.Fatalf("revert %s in the bench target: %v", bd.ID, err)
	}
	if got, want := tg.query(b), benchKinds(0); got != want {
		b.Fatalf("after reverting %s the functions run old(0)/new(1) code %s, want %s", bd.ID, got, want)
	}

	steps.reset()
	applyPause := make([]time.Duration, 0, b.N)
	revertPause := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := livepatch.Apply(ctx, tg.pid, bd, opts)
		if err != nil {
			b.Fatalf("apply %s, iteration %d: %v", bd.ID, i, err)
		}
		if res.Functions != funcs {
			b.Fatalf("apply %s switched %d functions, want %d", bd.ID, res.Functions, funcs)
		}
		applyPause = append(applyPause, res.Pause)
		res, err = livepatch.Revert(ctx, tg.pid, bd.ID, opts)
		if err != nil {
			b.Fatalf("revert %s, iteration %d: %v", bd.ID, i, err)
		}
		revertPause = append(revertPause, res.Pause)
	}
	b.StopTimer()
	if got, want := tg.query(b), benchKinds(0); got != want {
		b.Fatalf("after the last revert of %s the functions run old(0)/new(1) code %s, want %s", bd.ID, got, want)
	}
	p50, p99, pmax := benchPercentiles(applyPause)
	b.ReportMetric(p50, "p50-us")
	b.ReportMetric(p99, "p99-us")
	b.ReportMetric(pmax, "max-us")
	_, rp99, _ := benchPercentiles(revertPause)
	b.ReportMetric(rp99, "revert-p99-us")
	// Where the pause goes, as far as the engine reports it: stopping every
	// thread, then checking their PCs and stacks.
	for _, step := range []string{"stop", "scan", "stopping", "stopped", "detaching"} {
		if d := steps.get(step); len(d) > 0 {
			p50, p99, _ := benchPercentiles(d)
			b.ReportMetric(p50, step+"-p50-us")
			b.ReportMetric(p99, step+"-p99-us")
		}
	}
	// How much stack memory one scan reads, with every thread's stack.
	steps.mu.Lock()
	b.ReportMetric(float64(steps.stackBytes)/1024, "stack-KiB")
	steps.mu.Unlock()
	// The machine's load says how far to trust the numbers: every stopped
	// thread must get a CPU to enter its stop, so other work inflates them.
	if load, err := loadAverage(); err == nil {
		b.ReportMetric(load, "load1")
	}
}

// loadAverage is the one-minute load average of the machine.
func loadAverage() (float64, error) {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, errors.New("/proc/loadavg is empty")
	}
	return strconv.ParseFloat(f[0], 64)
}

// benchSteps are the durations the engine and the tracer log for the steps
// of a stop: "stop" (seizing and stopping, as the engine sees it) and "scan"
// (the stack scan); "stopping" (first interrupt to the last thread
// stopped), "stopped" (the engine's work with every thread stopped) and
// "detaching" (releasing them), which add up to the pause.
var benchSteps = map[string]bool{"stop": true, "scan": true, "stopping": true, "stopped": true, "detaching": true}

// stepRecorder is a slog handler that keeps the durations the engine logs
// for the steps of a stop (attributes "stop" and "scan"), and nothing else.
type stepRecorder struct {
	mu         sync.Mutex
	steps      map[string][]time.Duration
	stackBytes int64 // the most stack bytes one scan read
}

func (r *stepRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (r *stepRecorder) Handle(_ context.Context, rec slog.Record) error {
	rec.Attrs(func(a slog.Attr) bool {
		if benchSteps[a.Key] && a.Value.Kind() == slog.KindDuration {
			r.mu.Lock()
			if r.steps == nil {
				r.steps = map[string][]time.Duration{}
			}
			r.steps[a.Key] = append(r.steps[a.Key], a.Value.Duration())
			r.mu.Unlock()
		}
		if a.Key == "stackbytes" && a.Value.Kind() == slog.KindInt64 {
			r.mu.Lock()
			r.stackBytes = max(r.stackBytes, a.Value.Int64())
			r.mu.Unlock()
		}
		return true
	})
	return nil
}

func (r *stepRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *stepRecorder) WithGroup(string) slog.Handler      { return r }

func (r *stepRecorder) reset() {
	r.mu.Lock()
	r.steps = nil
	r.mu.Unlock()
}

func (r *stepRecorder) get(step string) []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.steps[step])
}

// benchPercentiles returns the median, the 99th percentile (nearest rank) and the
// maximum of d, in microseconds.
func benchPercentiles(d []time.Duration) (p50, p99, pmax float64) {
	if len(d) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	rank := func(p int) float64 {
		i := (p*len(s)+99)/100 - 1 // ceil(p% of n), 1-based, to an index
		return float64(s[max(i, 0)]) / float64(time.Microsecond)
	}
	return rank(50), rank(99), float64(s[len(s)-1]) / float64(time.Microsecond)
}

// benchKinds is the target's answer when the first n functions run new code.
func benchKinds(n int) string {
	k := make([]string, len(benchFuncs))
	for i := range k {
		k[i] = "0"
		if i < n {
			k[i] = "1"
		}
	}
	return strings.Join(k, " ")
}

// benchTarget is a running bench target.
type benchTarget struct {
	pid   int
	stdin io.WriteCloser
	out   *bufio.Reader
}

// benchAnswerTimeout bounds a query: a running target answers at once.
const benchAnswerTimeout = 5 * time.Second

func startBenchTarget(b *testing.B, exe string, threads int) *benchTarget {
	b.Helper()
	cmd := exec.Command(exe, fmt.Sprint(threads))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start the bench target: %v", err)
	}
	b.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	tg := &benchTarget{pid: cmd.Process.Pid, stdin: stdin, out: bufio.NewReader(stdout)}
	if line := tg.line(b); line != fmt.Sprintf("ready %d", tg.pid) {
		b.Fatalf("bench target did not start: %q", line)
	}
	return tg
}

func (tg *benchTarget) line(b *testing.B) string {
	b.Helper()
	ch := make(chan string, 1)
	go func() {
		s, _ := tg.out.ReadString('\n')
		ch <- strings.TrimSpace(s)
	}()
	select {
	case s := <-ch:
		return s
	case <-time.After(benchAnswerTimeout):
		b.Fatalf("bench target %d did not answer within %v: left stopped?", tg.pid, benchAnswerTimeout)
		return ""
	}
}

// query returns which functions run new code, as "K0 .. K9".
func (tg *benchTarget) query(b *testing.B) string {
	b.Helper()
	if _, err := io.WriteString(tg.stdin, "q\n"); err != nil {
		b.Fatalf("query bench target %d: %v", tg.pid, err)
	}
	return strings.TrimPrefix(tg.line(b), "funcs ")
}
