package rollout

import (
	"testing"
	"time"
)

func TestStateOf(t *testing.T) {
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	const offlineAfter = 2 * time.Hour
	recent, stale := now.Add(-10*time.Minute), now.Add(-3*time.Hour)
	applied := Report{Outcome: ReportApplied, At: stale}
	failed := Report{Outcome: ReportFailed, Reason: "site hash mismatch", At: recent}
	crashed := Report{Outcome: ReportCrashed, Reason: "nginx SIGSEGV after patch", At: recent}
	for _, tc := range []struct {
		name       string
		last       time.Time
		rep        Report
		applicable bool
		baseline   bool
		want       State
	}{
		{"online, no report yet", recent, Report{}, true, false, Assigned},
		{"online, applied", recent, applied, true, false, Applied},
		{"quiet since it applied: still applied", stale, applied, true, false, Applied},
		{"apply failed", recent, failed, true, false, Failed},
		{"crashed after patch", recent, crashed, true, false, Failed},
		{"failed, then went offline: the failure shows", stale, failed, true, false, Failed},
		{"not applicable wins over everything", stale, failed, false, true, NotApplicable},
		{"older baseline", recent, Report{}, true, true, NeedsRestart},
		{"older baseline, failed attempt", recent, failed, true, true, NeedsRestart},
		{"applied though inventory says old baseline", recent, applied, true, true, Applied},
		{"silent past offline-after", stale, Report{}, true, false, Offline},
		{"exactly at offline-after: online", now.Add(-offlineAfter), Report{}, true, false, Assigned},
		{"never checked in", time.Time{}, Report{}, true, false, Offline},
	} {
		if got := StateOf(tc.last, tc.rep, tc.applicable, tc.baseline, now, offlineAfter); got != tc.want {
			t.Errorf("%s: StateOf = %s, want %s", tc.name, got, tc.want)
		}
	}
}

func TestStateNames(t *testing.T) {
	for s := Assigned; s <= Offline; s++ {
		got, err := ParseState(s.String())
		if err != nil || got != s {
			t.Errorf("ParseState(%q) = %v, %v; want %v", s.String(), got, err, s)
		}
	}
	if want := "not-applicable"; NotApplicable.String() != want {
		t.Errorf("NotApplicable is %q, want %q (stored names must not change)", NotApplicable.String(), want)
	}
	if _, err := ParseState("pending"); err == nil {
		t.Error("ParseState accepted an unknown state")
	}
}
