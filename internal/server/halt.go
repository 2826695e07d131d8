package server

import (
	"context"
	"fmt"
	"strings"

	"hotfleet/internal/rollout"
	"hotfleet/internal/store"
)

// haltActor is the audit actor of automatic actions.
const haltActor = "rollout"

// ringStats turns a release's stored aggregates into the rollout's
// per-ring stats, in ring order. A crash after patch is stored as a failed
// state (reason "crash: …") and counts as a failure.
func ringStats(c store.RingCounts, rs rollout.Rings) []rollout.RingStats {
	var out []rollout.RingStats
	for _, r := range rs {
		var st rollout.RingStats
		for name, byState := range c {
			if !strings.EqualFold(name, r.Name) {
				continue
			}
			st.Applied += int(byState[stateApplied])
			st.Failed += int(byState[stateFailed])
			for state, n := range byState {
				if state != stateNotApplicable {
					st.Assigned += int(n)
				}
			}
		}
		st.Ring = r.Name
		out = append(out, st)
	}
	return out
}

// evaluateHalt halts rel when its failures reach the thresholds in some
// ring: a pause of the whole release (and a rollback when the release or
// the thresholds ask for it), with the numbers in the pause's reason and the
// audit log. It is safe to run on several replicas at once: the store halts
// a release once.
func (s *Server) evaluateHalt(ctx context.Context, rel store.Release) error {
	counts, err := s.st.Counts(ctx, rel.ID)
	if err != nil {
		return err
	}
	rs, err := s.rings(ctx)
	if err != nil {
		return err
	}
	th := rollout.DefaultThresholds()
	if _, err := s.st.Setting(ctx, store.SettingThresholds, &th); err != nil {
		return err
	}
	acts := rollout.Evaluate(ringStats(counts, rs), th)
	if len(acts) == 0 {
		return nil
	}
	first := acts[0] // the earliest ring to trip: the one the admin looks at
	rollback := rel.AutoRollback
	for _, a := range acts {
		rollback = rollback || a.Kind == rollout.Rollback
	}
	st := first.Stats
	reason := fmt.Sprintf("automatic halt: %d of %d reporting devices in ring %s failed (%.1f %%, thresholds %d failures and %g %%)",
		st.Failures(), st.Reported(), st.Ring, first.Percent, th.MinFailures, th.MaxFailurePercent)
	if rollback {
		reason += "; rolled back"
	}
	details := map[string]any{
		"release": rel.ID, "ring": st.Ring, "failed": st.Failures(), "reported": st.Reported(), "applied": st.Applied,
		"assigned": st.Assigned, "percent": first.Percent, "min_failures": th.MinFailures,
		"max_failure_percent": th.MaxFailurePercent, "rollback": rollback, "reason": reason,
	}
	halted, err := s.st.HaltRelease(ctx, store.Halt{ReleaseID: rel.ID, Actor: haltActor, Reason: reason, Details: details, Rollback: rollback})
	if err != nil {
		return err
	}
	if halted {
		s.log.Warn("release halted automatically", "release", rel.ID, "name", rel.Name, "reason", reason)
	}
	return nil
}
