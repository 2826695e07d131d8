package rollout

import (
	"fmt"
	"time"
)

// State is a device's state for one release, as counted in the aggregates.
type State int

const (
	Assigned State = iota
	Applied
	Failed
	NotApplicable
	NeedsRestart
	Offline
)

var stateNames = [...]string{"assigned", "applied", "failed", "not-applicable", "needs-restart", "offline"}

// String is the state's stable name, as stored and shown.
func (s State) String() string {
	if s < 0 || int(s) >= len(stateNames) {
		return fmt.Sprintf("state(%d)", int(s))
	}
	return stateNames[s]
}

// ParseState is the inverse of String.
func ParseState(name string) (State, error) {
	for i, n := range stateNames {
		if n == name {
			return State(i), nil
		}
	}
	return 0, fmt.Errorf("device state %q: unknown; want one of %v", name, stateNames[:])
}

// Outcome is what a device last reported for a release.
type Outcome int

const (
	NoReport Outcome = iota
	ReportApplied
	ReportFailed
	ReportCrashed // applied, then a patched process crashed
)

// Report is a device's last report for a release.
type Report struct {
	Outcome Outcome
	Reason  string
	At      time.Time
}

// StateOf computes a device's state for a release. In order:
//   - not applicable: nothing on the device is affected, whatever else holds;
//   - applied: the report is stored, and an agent re-applies after a reboot
//     on its own, so a device that went quiet since is still counted applied;
//   - needs restart: the device is on an older baseline than the release
//     patches, which is what the admin must act on, even if an attempt failed;
//   - failed: the last report is a failure or a crash after patch, kept even
//     when the device is now offline, as the failure is what needs a look;
//   - offline: no check-in within offlineAfter of now (or never);
//   - assigned otherwise: the device has it and is expected to report.
func StateOf(lastCheckIn time.Time, rep Report, applicable, baselineNeeded bool, now time.Time, offlineAfter time.Duration) State {
	switch {
	case !applicable:
		return NotApplicable
	case rep.Outcome == ReportApplied:
		return Applied
	case baselineNeeded:
		return NeedsRestart
	case rep.Outcome == ReportFailed || rep.Outcome == ReportCrashed:
		return Failed
	case lastCheckIn.IsZero() || now.Sub(lastCheckIn) > offlineAfter:
		return Offline
	}
	return Assigned
}
