package agent_test

import (
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"hotfleet/internal/agent"
	"hotfleet/internal/bundle"
)

// BenchmarkExecToPatched starts short-lived programs one after another while
// the agent holds a patch for them, and measures how soon after its exec each
// one runs the fixed code: as the agent measures it (exec event to apply
// done) and as the program sees it (start of main to the first fixed call).
// Run: go test -run '^$' -bench ExecToPatched -benchtime 1000x ./internal/agent/
func BenchmarkExecToPatched(b *testing.B) {
	p := buildPrograms(b)
	b.Run("executable", func(b *testing.B) {
		execToPatched(b, p.short, bundleFor(b, p.short, "exe_answer", "fix-short", 1, 2))
	})
	b.Run("library", func(b *testing.B) {
		execToPatched(b, p.shortLib, bundleFor(b, p.libfix, "lib_answer", "fix-lib", 1, 2))
	})
}

func execToPatched(b *testing.B, prog string, fix *bundle.Bundle) {
	e := newEnv(b)
	drop(b, e.patchDir, fix)
	a := startAgent(b, e.opts())
	a.waitStatus(b, "the assignment loaded", 10*time.Second, func(s agent.Status) bool { return len(s.Assigned) == 1 && !s.Readiness.At.IsZero() })
	before := a.status(b).Latency.Count

	var seen []time.Duration
	missed := 0
	b.ResetTimer()
	for range b.N {
		out, err := exec.Command(prog).Output()
		if err != nil {
			b.Fatalf("run the short-lived program: %v", err)
		}
		us, _ := strconv.Atoi(strings.TrimSpace(string(out)))
		if us < 0 {
			missed++
			continue
		}
		seen = append(seen, time.Duration(us)*time.Microsecond)
	}
	b.StopTimer()
	s := a.status(b)
	sort.Slice(seen, func(i, j int) bool { return seen[i] < seen[j] })
	pct := func(q float64) float64 {
		if len(seen) == 0 {
			return -1
		}
		return float64(seen[min(len(seen)-1, int(q*float64(len(seen))))].Microseconds())
	}
	b.ReportMetric(float64(s.Latency.P50US), "agent-p50-µs")
	b.ReportMetric(float64(s.Latency.P99US), "agent-p99-µs")
	b.ReportMetric(pct(0.5), "seen-p50-µs")
	b.ReportMetric(pct(0.99), "seen-p99-µs")
	b.ReportMetric(float64(missed), "unpatched")
	b.ReportMetric(float64(s.Latency.Count-before), "measured")
	if missed > 0 {
		b.Logf("%d of %d programs never saw the fix within their second", missed, b.N)
	}
}

// BenchmarkIdle runs the agent on this device with a patch assigned (so it
// watches execs and library opens) and nothing to do, and measures its CPU
// use and memory. HOTFLEET_IDLE sets how long (default 60s; BENCHMARKS.md
// uses 10m).
// Run: HOTFLEET_IDLE=10m go test -run '^$' -bench Idle -benchtime 1x -timeout 30m ./internal/agent/
func BenchmarkIdle(b *testing.B) {
	p := buildPrograms(b)
	e := newEnv(b)
	drop(b, e.patchDir, bundleFor(b, p.short, "exe_answer", "fix-short", 1, 2))
	a := startAgent(b, e.opts())
	a.waitStatus(b, "the agent settled", 10*time.Second, func(s agent.Status) bool { return len(s.Assigned) == 1 && !s.Readiness.At.IsZero() })
	d := time.Minute
	if v := os.Getenv("HOTFLEET_IDLE"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			b.Fatal(err)
		}
	}
	pid := a.cmd.Process.Pid
	time.Sleep(2 * time.Second) // past start-up work
	b.ResetTimer()
	for range b.N {
		cpu0 := cpuTime(b, pid)
		t0 := time.Now()
		time.Sleep(d)
		cpu := cpuTime(b, pid) - cpu0
		wall := time.Since(t0)
		b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "%cpu")
		b.ReportMetric(float64(cpu.Milliseconds()), "cpu-ms")
	}
	b.StopTimer()
	rss := statusKB(b, pid, "VmRSS")
	hwm := statusKB(b, pid, "VmHWM")
	b.ReportMetric(float64(rss)/1024, "rss-MiB")
	b.ReportMetric(float64(hwm)/1024, "peak-rss-MiB")
}

func cpuTime(b *testing.B, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ is 100 on Linux
}

func statusKB(b *testing.B, pid int, key string) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return n
		}
	}
	return 0
}
