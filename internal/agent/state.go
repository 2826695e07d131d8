package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"hotfleet/internal/atomicfile"
)

// stateVersion is the version of state.json this agent writes. An agent that
// finds a newer one refuses to start rather than lose what it does not know.
const stateVersion = 1

// maxWithdrawn bounds the remembered withdrawn patches: a withdrawn patch is
// kept until no process holds it, and a fleet withdraws a few a year.
const maxWithdrawn = 256

// state is what the agent must not forget across a restart. What is applied
// is not in it: each process says that itself (its region headers). The
// state holds what the processes cannot tell: retries, quarantines, which
// outcomes were reported, and what was assigned before.
type state struct {
	Version   int                   `json:"version"`
	BootID    string                `json:"boot_id"` // process records are void after a reboot
	Notified  bool                  `json:"notified"`
	Assigned  map[string]assignedID `json:"assigned"`  // patch id → what was assigned
	Withdrawn map[string]assignedID `json:"withdrawn"` // patch id → no longer assigned: revert it
	Processes map[string]*procRec   `json:"processes"` // key: "pid:start"
	Saved     time.Time             `json:"saved"`
}

type assignedID struct {
	Level    uint32    `json:"level"`
	BuildIDs []string  `json:"build_ids"`
	Since    time.Time `json:"since"`
	// SHA256 names the bundle's bytes, so reverts of a withdrawn bundle
	// are counted against it.
	SHA256 string `json:"sha256,omitempty"`
}

// procRec is the agent's record of one process.
type procRec struct {
	Pid   int    `json:"pid"`
	Start uint64 `json:"start"`
	Comm  string `json:"comm"`
	// Reported holds "id:level" of every apply outcome already queued as a
	// report, so that a restart neither repeats nor forgets one.
	Reported []string `json:"reported,omitempty"`
	// Failures counts consecutive failed attempts of the current patch.
	Failures    int       `json:"failures,omitempty"`
	RetryAt     time.Time `json:"retry_at,omitzero"`
	Quarantined time.Time `json:"quarantined,omitzero"` // until then: not touched
	LastError   string    `json:"last_error,omitempty"`
	// Permanent is set when the last error cannot go away by retrying
	// (old bytes differ, a higher level applied by hand): the process is left
	// alone until the assignments change.
	Permanent bool `json:"permanent,omitempty"`
	// ErrorPatch is the SHA-256 of the bundle the failure is about: a new
	// bundle under the same id is tried afresh.
	ErrorPatch string `json:"error_bundle,omitempty"`
}

func procKey(pid int, start uint64) string { return fmt.Sprintf("%d:%d", pid, start) }

func (r *procRec) reported(id string, level uint32) bool {
	k := fmt.Sprintf("%s:%d", id, level)
	for _, s := range r.Reported {
		if s == k {
			return true
		}
	}
	return false
}

func (r *procRec) markReported(id string, level uint32) {
	if !r.reported(id, level) {
		r.Reported = append(r.Reported, fmt.Sprintf("%s:%d", id, level))
	}
}

func newState(bootID string) *state {
	return &state{
		Version: stateVersion, BootID: bootID,
		Assigned: map[string]assignedID{}, Withdrawn: map[string]assignedID{}, Processes: map[string]*procRec{},
	}
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

// loadState reads the state, starting fresh when there is none. Process
// records from before a reboot are dropped: those processes are gone.
func loadState(dir, bootID string) (*state, error) {
	st := newState(bootID)
	err := atomicfile.ReadJSON(statePath(dir), st)
	if errors.Is(err, fs.ErrNotExist) {
		return newState(bootID), nil
	}
	if err != nil {
		return nil, fmt.Errorf("load agent state: %w", err)
	}
	if st.Version > stateVersion {
		return nil, fmt.Errorf("load agent state: %s was written by a newer hotfleet (version %d, this one knows %d); upgrade hotfleet", statePath(dir), st.Version, stateVersion)
	}
	if st.Assigned == nil {
		st.Assigned = map[string]assignedID{}
	}
	if st.Withdrawn == nil {
		st.Withdrawn = map[string]assignedID{}
	}
	if st.Processes == nil || st.BootID != bootID {
		st.Processes = map[string]*procRec{}
	}
	st.BootID = bootID
	return st, nil
}

func (st *state) save(dir string) error {
	st.Saved = time.Now().UTC()
	return atomicfile.WriteJSON(statePath(dir), st, 0o600)
}

// readBootID names the current boot, so that records of processes from an
// earlier boot are never matched to new processes with the same pid.
func readBootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
