package proc

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"
)

// BenchmarkStopResume measures the pause of one StopAll+Resume of a target
// with N busy AVX threads plus 3 blocked ones, and reports p50/p99/max.
func BenchmarkStopResume(b *testing.B) {
	for _, n := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("busy=%d", n), func(b *testing.B) {
			tg := startTarget(b, targetBin(b), fmt.Sprint(n))
			tr := attach(b, tg.pid)
			ctx := context.Background()
			pauses := make([]time.Duration, 0, b.N)
			for i := 0; i < b.N; i++ {
				if err := tr.StopAll(ctx); err != nil {
					b.Fatal(err)
				}
				p, err := tr.Resume()
				if err != nil {
					b.Fatal(err)
				}
				pauses = append(pauses, p)
				time.Sleep(time.Millisecond)
			}
			sort.Slice(pauses, func(i, j int) bool { return pauses[i] < pauses[j] })
			q := func(f float64) float64 { return float64(pauses[int(f*float64(len(pauses)-1))].Microseconds()) }
			b.ReportMetric(q(0.5), "p50-µs")
			b.ReportMetric(q(0.99), "p99-µs")
			b.ReportMetric(q(1), "max-µs")
		})
	}
}
