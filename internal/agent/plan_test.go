package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"hotfleet/internal/bundle"
)

func asg(id string, level uint32, mods ...string) Assignment {
	b := &bundle.Bundle{ID: id, Level: level}
	for _, m := range mods {
		b.Modules = append(b.Modules, bundle.Module{BuildID: bundle.HexBytes(m), Name: "lib" + m})
	}
	return Assignment{Bundle: b, SHA256: id, Origin: id + ".hfp"}
}

// For each module the highest level wins; equal levels of two patches for
// one module are a problem, reported, and resolved the same way on every
// device.
func TestPlanPicksNewestLevel(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []Assignment
		want    map[string]string // module (as hex of its bytes) → winning patch id
		problem string
	}{
		{"one", []Assignment{asg("a", 1, "x")}, map[string]string{"78": "a"}, ""},
		{"higher level wins", []Assignment{asg("a", 1, "x"), asg("b", 2, "x")}, map[string]string{"78": "b"}, ""},
		{"order does not matter", []Assignment{asg("b", 2, "x"), asg("a", 1, "x")}, map[string]string{"78": "b"}, ""},
		{"per module", []Assignment{asg("a", 3, "x", "y"), asg("b", 2, "x")}, map[string]string{"78": "a", "79": "a"}, ""},
		{"split", []Assignment{asg("a", 1, "x", "y"), asg("b", 2, "y")}, map[string]string{"78": "a", "79": "b"}, ""},
		{"same level conflicts", []Assignment{asg("b", 1, "x"), asg("a", 1, "x")}, map[string]string{"78": "a"}, "both hold level 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, probs := newPlan(tc.in)
			for mod, id := range tc.want {
				if got := p.byModule[mod]; got == nil || got.Bundle.ID != id {
					t.Errorf("module %s: got %v, want %s", mod, got, id)
				}
			}
			if len(p.byModule) != len(tc.want) {
				t.Errorf("%d modules planned, want %d", len(p.byModule), len(tc.want))
			}
			switch {
			case tc.problem == "" && len(probs) > 0:
				t.Errorf("unexpected problems: %v", probs)
			case tc.problem != "" && (len(probs) != 1 || !strings.Contains(probs[0].Error, tc.problem)):
				t.Errorf("problems %v, want one saying %q", probs, tc.problem)
			}
		})
	}
}

// The scheduler never hands one pid to two workers at once, and runs a pid
// that came due while it was worked on right after.
func TestSchedulerOnePidAtATime(t *testing.T) {
	s := newScheduler()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.run(ctx)
	now := time.Now()
	s.at(7, now)
	if got := <-s.work; got != 7 {
		t.Fatalf("got pid %d, want 7", got)
	}
	s.at(7, now) // due again while running
	s.at(8, now.Add(20*time.Millisecond))
	select {
	case got := <-s.work:
		if got == 7 {
			t.Fatal("pid 7 handed out twice at once")
		}
		if got != 8 {
			t.Fatalf("got pid %d, want 8", got)
		}
		s.done(8)
	case <-time.After(5 * time.Second):
		t.Fatal("pid 8 was never handed out")
	}
	s.done(7)
	select {
	case got := <-s.work:
		if got != 7 {
			t.Fatalf("got pid %d, want 7 again", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pid 7, due while it ran, was not run again")
	}
}

// Work beyond the burst is paced to the CPU share: the wait is what it takes
// at that share to earn back what was spent over the burst.
func TestBudgetPaces(t *testing.T) {
	var wall time.Time
	var cpu, slept time.Duration
	b := newBudget(0.5)
	b.now = func() time.Time { return wall }
	b.cpuClock = func() time.Duration { return cpu }
	b.sleep = func(_ context.Context, d time.Duration) { slept += d; wall = wall.Add(d) }
	b.last, b.cpu = wall, cpu

	b.wait(context.Background())
	if slept != 0 {
		t.Fatalf("the first work waited %s: a burst must be free", slept)
	}
	// 800 ms of CPU in 800 ms of wall time earns 400 ms at half a core; with
	// the 200 ms burst that is 200 ms short: 400 ms of waiting earns it.
	cpu += 800 * time.Millisecond
	wall = wall.Add(800 * time.Millisecond)
	b.wait(context.Background())
	if slept < 390*time.Millisecond || slept > 410*time.Millisecond {
		t.Errorf("waited %s after spending 200 ms over the budget at half a core, want 400ms", slept)
	}
	// Idle time refills the burst, and no more.
	slept = 0
	wall = wall.Add(time.Hour)
	b.wait(context.Background())
	cpu += budgetBurst
	b.wait(context.Background())
	if slept != 0 {
		t.Errorf("work within a refilled burst waited %s", slept)
	}
	cpu += 100 * time.Millisecond
	b.wait(context.Background())
	if slept < 190*time.Millisecond || slept > 210*time.Millisecond {
		t.Errorf("after an hour idle the burst held more than %s: waited %s, want 200ms", budgetBurst, slept)
	}
}
