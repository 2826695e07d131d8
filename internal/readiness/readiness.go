// Package readiness tells whether this device can be hot patched and, when it
// cannot, why and what the admin must do about it.
//
// Each check reads what the kernel says (files under /proc and /sys, uname,
// statfs, the clock) and, when asked, proves the one thing that matters by
// doing it: attaching to a harmless child process and writing its memory the
// way a patch would.
//
// Trust: the kernel's files are trusted to describe the running kernel; they
// are still parsed defensively, and a file that cannot be read or parsed makes
// its check fail with the reason rather than pass by default. The probe child
// is this same binary, so nothing outside hotfleet is ever attached to unless
// the caller names a process (Options.ProbePID).
package readiness

import (
	"context"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Check is the outcome of one readiness check.
type Check struct {
	Name   string // "arch", "ptrace-capability", "yama", "selinux", "lockdown", "proc-mem", "kernel", "disk", "clock"
	OK     bool
	Reason string // when !OK (or a warning): what is wrong, plainly
	Action string // when !OK: what the admin should do
	Detail string // the value observed, e.g. "ptrace_scope=1", "6.18.44", "12.4 GiB free"
}

// Report is the outcome of every check at one moment.
type Report struct {
	Ready  bool    // every check OK
	Checks []Check // in a fixed order (Names)
	At     time.Time
}

// Options says where the agent keeps its state and whether to probe.
type Options struct {
	StateDir     string // free-space and clock checks run on it; DefaultStateDir when empty
	MinFreeBytes uint64 // DefaultMinFreeBytes when 0
	Probe        bool   // actually attach to a child and write its memory (the proc-mem check)
	// ProbePID, with Probe, makes the proc-mem check probe this running
	// process instead of a fresh child: "can hotfleet patch that one?". The
	// bytes written are the bytes read, so the process sees no change, but it
	// is stopped for the duration of the probe.
	ProbePID int
}

const (
	// DefaultStateDir is where the agent keeps its state unless told otherwise.
	DefaultStateDir = "/var/lib/hotfleet"
	// DefaultMinFreeBytes leaves room for the state database, queued reports
	// and a few patch bundles, which are small (tens of KiB each).
	DefaultMinFreeBytes = 64 << 20
)

// Names lists the checks in the order every Report carries them.
var Names = []string{"arch", "ptrace-capability", "yama", "selinux", "lockdown", "proc-mem", "kernel", "disk", "clock"}

// sys is what the checks read the machine through, so that tests can point
// them at fixtures.
type sys struct {
	root    string                                      // prefix of /proc and /sys paths
	machine func() (machine, release string, err error) // uname
	now     func() time.Time
}

var host = sys{root: "/", machine: uname, now: time.Now}

func uname() (string, string, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "", "", err
	}
	return unix.ByteSliceToString(u.Machine[:]), unix.ByteSliceToString(u.Release[:]), nil
}

// Run runs every check and returns the report. It never fails as a whole:
// a check that cannot tell is a failing check with its reason. (It is not
// named Check because the type Check is one check's outcome.)
func Run(ctx context.Context, opts Options) Report {
	return host.check(ctx, opts)
}

func (s sys) check(ctx context.Context, opts Options) Report {
	if opts.StateDir == "" {
		opts.StateDir = DefaultStateDir
	}
	if opts.MinFreeBytes == 0 {
		opts.MinFreeBytes = DefaultMinFreeBytes
	}
	capc, haveCap := s.checkCapability()
	checks := []Check{
		s.checkArch(),
		capc,
		s.checkYama(haveCap),
		s.checkSELinux(),
		s.checkLockdown(),
		s.checkProcMem(ctx, opts),
		s.checkKernel(),
		s.checkDisk(opts.StateDir, opts.MinFreeBytes),
		s.checkClock(opts.StateDir),
	}
	r := Report{Ready: true, Checks: checks, At: s.now()}
	for _, c := range checks {
		if !c.OK {
			r.Ready = false
		}
	}
	return r
}

// Failing returns the checks that are not OK, in report order.
func (r Report) Failing() []Check {
	var out []Check
	for _, c := range r.Checks {
		if !c.OK {
			out = append(out, c)
		}
	}
	return out
}

// volatileDetail names the checks whose Detail is a measurement that moves
// all the time (free bytes); while such a check stays OK its Detail is not a
// change worth reporting.
var volatileDetail = map[string]bool{"disk": true}

// Equal tells whether two reports differ in anything but time (to report only
// on change). The free space of a disk that still has enough is not a change.
func (r Report) Equal(o Report) bool {
	if r.Ready != o.Ready || len(r.Checks) != len(o.Checks) {
		return false
	}
	for i, a := range r.Checks {
		b := o.Checks[i]
		if volatileDetail[a.Name] && a.OK && b.OK {
			a.Detail, b.Detail = "", ""
		}
		if a != b {
			return false
		}
	}
	return true
}

// readFile reads a small kernel file under the root.
func (s sys) readFile(path string) ([]byte, error) {
	return os.ReadFile(s.path(path))
}

func (s sys) path(p string) string {
	if s.root == "/" || s.root == "" {
		return p
	}
	return s.root + p
}
