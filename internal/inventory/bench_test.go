package inventory

import (
	"context"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"hotfleet/internal/testenv"
)

// fleetSize is the number of processes the goal names: a warm
// rescan of 1,000 processes in under 200 ms.
const fleetSize = 1000

// BenchmarkScan measures a warm Scan of a device running fleetSize small C
// processes (each mapping its executable, libc and the loader) besides
// whatever else runs. It reports the cold first scan, the cache hit rate of
// the warm scans, and how many processes one scan lists.
func BenchmarkScan(b *testing.B) {
	testenv.NeedRoot(b)
	bin := buildTarget(b, b.TempDir(), "fleet")
	tg := start(b, exec.Command(bin, strconv.Itoa(fleetSize)))
	ctx := context.Background()
	for _, pkgs := range []bool{false, true} {
		b.Run("packages="+strconv.FormatBool(pkgs), func(b *testing.B) {
			s := NewScanner(Options{Packages: pkgs})
			t0 := time.Now()
			ps, err := s.Scan(ctx)
			if err != nil {
				b.Fatal(err)
			}
			cold := time.Since(t0)
			kids := 0
			for _, p := range ps {
				if p.Exe == bin && len(p.Modules) >= 2 && p.Pid != tg.pid {
					kids++
				}
			}
			if kids != fleetSize {
				b.Fatalf("a scan listed %d of the %d fleet processes with their modules", kids, fleetSize)
			}
			before := s.Stats()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := s.Scan(ctx); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			after := s.Stats()
			hits, misses := after.Hits-before.Hits, after.Misses-before.Misses
			b.ReportMetric(float64(cold.Microseconds())/1e3, "cold-ms")
			b.ReportMetric(100*float64(hits)/float64(max(1, hits+misses)), "hit-%")
			b.ReportMetric(float64(len(ps)), "procs")
		})
	}
}
