package rollout

import (
	"fmt"
	"math"
)

// RingStats are one ring's counts for a release, from stored device
// reports. Applied, Failed and Crashed are disjoint: a device whose patch
// applied and whose process then crashed counts as Crashed only.
type RingStats struct {
	Ring     string
	Assigned int // devices given the release, whether or not they reported
	Applied  int
	Failed   int // apply failures
	Crashed  int // crashes after patch
}

// Failures are apply failures plus crashes after patch.
func (s RingStats) Failures() int { return s.Failed + s.Crashed }

// Reported is how many devices reported an outcome.
func (s RingStats) Reported() int { return s.Applied + s.Failed + s.Crashed }

// FailurePercent is failures among devices that reported an outcome, not
// among all assigned: early in a ring most assigned devices have not
// reported yet, and counting them would dilute a patch that fails everywhere
// it lands. Zero when nothing was reported.
func (s RingStats) FailurePercent() float64 {
	if s.Reported() == 0 {
		return 0
	}
	return 100 * float64(s.Failures()) / float64(s.Reported())
}

// Thresholds decide when a release halts itself.
type Thresholds struct {
	// MinFailures is the count below which nothing triggers, whatever the
	// rate: two failures out of two devices are an anecdote.
	MinFailures int
	// MaxFailurePercent is the rate at or above which a ring halts.
	MaxFailurePercent float64
	// Rollback also reverts the release fleet-wide when it halts.
	Rollback bool
}

// DefaultThresholds halts at 3 failures making 5% of a ring's reports:
// a working hot patch almost never fails, so a few failures are already a
// signal, and 5% keeps one flaky machine in a large ring from halting it.
func DefaultThresholds() Thresholds {
	return Thresholds{MinFailures: 3, MaxFailurePercent: 5}
}

// Validate checks thresholds as an admin wrote them.
func (t Thresholds) Validate() error {
	if t.MinFailures < 1 {
		return fmt.Errorf("halt thresholds: min_failures is %d, must be at least 1 so that one failure never halts a release by rate alone", t.MinFailures)
	}
	if math.IsNaN(t.MaxFailurePercent) || t.MaxFailurePercent <= 0 || t.MaxFailurePercent > 100 {
		return fmt.Errorf("halt thresholds: max_failure_percent is %g, must be above 0 and at most 100", t.MaxFailurePercent)
	}
	return nil
}

// ActionKind is what an automatic action does.
type ActionKind string

const (
	// Halt pauses the release.
	Halt ActionKind = "halt"
	// Rollback makes agents revert the release everywhere.
	Rollback ActionKind = "rollback"
)

// Action is an automatic action with the numbers that triggered it, to be
// recorded as such.
type Action struct {
	Kind       ActionKind
	Stats      RingStats
	Percent    float64
	Thresholds Thresholds
	Reason     string
}

// Evaluate returns the actions the rings' stats call for: for every ring
// whose failures reach both MinFailures and MaxFailurePercent, a Halt and,
// if asked, a Rollback, in ring order. It is stateless: the caller skips
// actions already taken.
func Evaluate(stats []RingStats, t Thresholds) []Action {
	var acts []Action
	for _, s := range stats {
		f, pct := s.Failures(), s.FailurePercent()
		if f < t.MinFailures || pct < t.MaxFailurePercent {
			continue
		}
		reason := fmt.Sprintf("ring %s: %d of %d reporting devices failed (%d apply failures, %d crashes after patch; %d assigned) = %.1f%%, at or above the thresholds of %d failures and %g%%",
			s.Ring, f, s.Reported(), s.Failed, s.Crashed, s.Assigned, pct, t.MinFailures, t.MaxFailurePercent)
		acts = append(acts, Action{Kind: Halt, Stats: s, Percent: pct, Thresholds: t, Reason: reason})
		if t.Rollback {
			acts = append(acts, Action{Kind: Rollback, Stats: s, Percent: pct, Thresholds: t, Reason: reason + "; rollback on halt is on"})
		}
	}
	return acts
}
