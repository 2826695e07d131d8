// Package livepatch applies, reverts and reports hot patches on one running
// process, keeping the state of every patch inside the target in a region
// header so that any later run can tell exactly what is applied and finish or
// undo an operation that was interrupted.
//
// API CONTRACT (filled in by the implementation; signatures are fixed):
//
//	type Options struct {
//		Deadline  time.Duration // how long to retry a busy function (default 10s)
//		Quiescent bool          // force quiescent mode for every function
//		Log       *slog.Logger
//		Failpoint func(name string) // test hook, called at named points; nil in production
//	}
//	type Result struct {
//		Pid       int
//		PatchID   string
//		Level     uint32
//		Functions int           // sites switched (or restored, for revert)
//		Replaced  string        // id of the level that was replaced, if any
//		Pause     time.Duration // threads stopped, first interrupt to last detach
//		Recovered []string      // what an interrupted earlier run left and what was done about it
//	}
//	func Apply(ctx context.Context, pid int, b *bundle.Bundle, opts Options) (Result, error)
//	func Revert(ctx context.Context, pid int, id string, opts Options) (Result, error)
//	func Status(ctx context.Context, pid int) ([]Applied, error)     // read-only
//	func Recover(ctx context.Context, pid int, opts Options) ([]string, error)
//	func Targets(ctx context.Context, b *bundle.Bundle) ([]int, error) // pids mapping a module of b
//	func Patched(ctx context.Context) ([]int, error)                   // pids holding a hotfleet region
//
//	type Applied struct {  // one region found in a process
//		Pid int; PatchID string; Level uint32; BuildID []byte; Module string
//		State string     // "prepared", "switching", "applied", "reverting", "reverted", "superseded"
//		Region uint64; Functions []AppliedFunc; Consistent bool; Problem string
//	}
//	type AppliedFunc struct{ Name string; Site uint64; New uint64; Active bool }
//
//	Errors (wrapped with %w, messages name function, thread and action):
//	var ErrBuildIDMismatch, ErrOldBytes, ErrTooSmall, ErrBusy, ErrNotApplied, ErrLevel error
//	(proc.ErrNoHole, proc.ErrPermission, proc.ErrAlreadyTraced, proc.ErrExited pass through)
package livepatch
