package rollout

import (
	"strings"
	"testing"
)

func TestEvaluate(t *testing.T) {
	th := Thresholds{MinFailures: 5, MaxFailurePercent: 10}
	type want struct {
		kind ActionKind
		ring string
	}
	for _, tc := range []struct {
		name     string
		stats    []RingStats
		rollback bool
		want     []want
		reason   string // in the first action's reason
	}{
		{"healthy", []RingStats{{Ring: "First", Assigned: 100, Applied: 95, Failed: 1, Crashed: 1}}, false, nil, ""},
		{"below the count even at 100%", []RingStats{{Ring: "Test", Assigned: 4, Failed: 2, Crashed: 2}}, false, nil, ""},
		{"count reached, rate below", []RingStats{{Ring: "Broad", Assigned: 1000, Applied: 950, Failed: 30, Crashed: 20}}, false, nil, ""},
		{"count and rate exactly at the thresholds", []RingStats{{Ring: "First", Assigned: 60, Applied: 45, Failed: 3, Crashed: 2}}, false,
			[]want{{Halt, "First"}}, "5 of 50 reporting devices failed (3 apply failures, 2 crashes after patch; 60 assigned) = 10.0%"},
		{"crashes alone count", []RingStats{{Ring: "Fast", Assigned: 90, Applied: 10, Crashed: 6}}, false,
			[]want{{Halt, "Fast"}}, "6 of 16 reporting devices failed"},
		{"rate among reports, not among assigned", []RingStats{{Ring: "Broad", Assigned: 9000, Applied: 20, Failed: 5}}, false,
			[]want{{Halt, "Broad"}}, "= 20.0%"},
		{"rollback on halt", []RingStats{{Ring: "Test", Assigned: 5, Failed: 5}}, true,
			[]want{{Halt, "Test"}, {Rollback, "Test"}}, "5 of 5"},
		{"every breaching ring, in order", []RingStats{
			{Ring: "Test", Assigned: 10, Applied: 10},
			{Ring: "First", Assigned: 10, Failed: 5},
			{Ring: "Fast", Assigned: 10, Crashed: 5, Applied: 5},
		}, false, []want{{Halt, "First"}, {Halt, "Fast"}}, "ring First"},
		{"nothing reported", []RingStats{{Ring: "Broad", Assigned: 9000}}, false, nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			th := th
			th.Rollback = tc.rollback
			if err := th.Validate(); err != nil {
				t.Fatal(err)
			}
			acts := Evaluate(tc.stats, th)
			if len(acts) != len(tc.want) {
				t.Fatalf("Evaluate = %+v, want %v", acts, tc.want)
			}
			for i, w := range tc.want {
				a := acts[i]
				if a.Kind != w.kind || a.Stats.Ring != w.ring || a.Thresholds != th {
					t.Errorf("action %d = %s on %s with %+v, want %s on %s", i, a.Kind, a.Stats.Ring, a.Thresholds, w.kind, w.ring)
				}
				if a.Stats.Failures() < th.MinFailures || a.Percent < th.MaxFailurePercent {
					t.Errorf("action %d carries %d failures at %.1f%%, under the thresholds it claims", i, a.Stats.Failures(), a.Percent)
				}
			}
			if len(acts) > 0 && !strings.Contains(acts[0].Reason, tc.reason) {
				t.Errorf("reason %q does not say %q", acts[0].Reason, tc.reason)
			}
			t.Log(func() string {
				if len(acts) == 0 {
					return "no action"
				}
				return acts[0].Reason
			}())
		})
	}
}

func TestThresholdsValidate(t *testing.T) {
	if err := DefaultThresholds().Validate(); err != nil {
		t.Errorf("DefaultThresholds: %v", err)
	}
	for _, tc := range []struct {
		th   Thresholds
		want string
	}{
		{Thresholds{MinFailures: 0, MaxFailurePercent: 5}, "min_failures is 0"},
		{Thresholds{MinFailures: 3, MaxFailurePercent: 0}, "max_failure_percent is 0"},
		{Thresholds{MinFailures: 3, MaxFailurePercent: 101}, "max_failure_percent is 101"},
	} {
		if err := tc.th.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want an error saying %q", tc.th, err, tc.want)
		}
	}
}
