// Package procwatch tells the agent of every exec and exit on the device as
// it happens, so that a new process is patched before it does much work and a
// patched process that dies of a fatal signal is noticed. It also tells when a
// watched file is opened (FileOpens), which is how a library about to be
// dlopen'ed is caught.
//
// Two sources feed a Watcher. The kernel's process connector (netlink,
// NETLINK_CONNECTOR / CN_IDX_PROC) reports each event as it happens, with the
// exact exit status. It needs a kernel with CONFIG_PROC_EVENTS and a caller
// in the initial user and pid namespaces; before Linux 6.6 also
// CAP_NET_ADMIN. Where it is unavailable, a poll of /proc every PollInterval
// diffs the set of processes: it misses processes that live shorter than one
// interval, cannot know why a process died (Exact is false), and notices an
// exec in a process it already knew only by the change of its program's
// addresses, which needs address space layout randomisation and the right to
// read other users' /proc/PID/stat fields (root).
//
// An Exit is the end of the whole process, never of one of its threads. Two
// cases need care, both handled: a main thread that calls pthread_exit while
// other threads run on (the Exit comes when the last thread ends, with its
// status), and a thread other than the main one that executes a program,
// which ends the main thread (no Exit; the Exec follows).
//
// Neither source reports processes that already ran when the Watcher opened:
// the agent opens the Watcher first and then scans /proc once, so that nothing
// falls between the two. Pids are those of the initial pid namespace.
//
// Lost events: when the kernel drops events (the socket's receive buffer
// overflowed, ENOBUFS) or the Events channel is full, the Watcher counts them
// in Lost and delivers one Overflow event as soon as the channel has room
// again. On Overflow the agent must rescan /proc: any exec or exit may have
// been missed. The kernel numbers its events per CPU, so the exact count of a
// drop shows when the next event from each CPU arrives; until then Lost
// counts one per ENOBUFS.
//
// Trust: events come from the kernel; messages on the netlink socket whose
// sender is not the kernel are dropped, and every message is parsed with
// bounds checks. /proc content is read defensively: a process may exit or be
// replaced between two reads.
package procwatch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Kind is what happened to a process.
type Kind uint8

const (
	// Exec: the process replaced its program (execve).
	Exec Kind = iota + 1
	// Exit: the whole process (thread group) ended.
	Exit
	// Fork: a new process was created (only with Options.Forks; new threads
	// are not reported).
	Fork
	// Overflow: events were lost (see Watcher.Lost); rescan /proc.
	Overflow
)

func (k Kind) String() string {
	switch k {
	case Exec:
		return "exec"
	case Exit:
		return "exit"
	case Fork:
		return "fork"
	case Overflow:
		return "overflow"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Event is one exec, exit or fork of a process.
type Event struct {
	Kind Kind
	Pid  int       // thread-group id (the process)
	Tid  int       // thread that caused it (for Fork: the parent thread)
	Time time.Time // when the agent received it (carries the monotonic clock)

	// Exit only. An Exit is the end of the whole process; its Tid is the
	// main thread (Tid == Pid), or the last thread when the main one ended
	// first (pthread_exit).
	ExitCode   int            // exit status when it exited normally
	Signal     syscall.Signal // fatal signal that killed it, 0 if it exited normally
	CoreDumped bool
	// Exact is false in poll mode: the cause of an exit is unknown and Time
	// is when the poll noticed it. In netlink mode it is false only for an
	// Exit whose last thread's end the kernel's events did not show (lost).
	Exact bool

	// Parent is the parent process (Fork, and Exit in netlink mode); 0 when
	// unknown (an Exit whose parent reaped it before the kernel sent the
	// event).
	Parent int
	// Stamp is the kernel's CLOCK_MONOTONIC time of the event (netlink mode);
	// 0 in poll mode. It measures how late the event arrived.
	Stamp time.Duration
}

// Options configure Open.
type Options struct {
	// Mode is "" (netlink, falling back to poll when the connector is
	// unavailable), "netlink" (fail instead of falling back) or "poll".
	Mode string
	// PollInterval is the poll mode's period; default 250ms.
	PollInterval time.Duration
	// Forks also delivers Fork events for new processes (default off: the
	// agent needs exec and exit). Netlink mode only: a poll cannot tell a
	// fork from an exec and reports every new process as an Exec.
	Forks bool
	// IgnoreSelf drops the events of the agent's own process and of its
	// descendants (its helpers and theirs): those running at Open, found by
	// their parent in /proc, and those forked later. A descendant stays
	// ignored when its parent exits and it is reparented.
	IgnoreSelf bool
	// Log receives warnings (fallback to poll, lost events); nil discards.
	Log *slog.Logger
}

const (
	// eventBuffer is the Events channel's capacity: an exec storm (a build,
	// a shell loop) produces thousands of events a second, and the agent
	// handles each in well under a millisecond, so a few seconds of burst
	// fit while the memory (about 100 bytes an event) stays small.
	eventBuffer = 8192
	// defaultPollInterval keeps poll mode's latency about that of a human
	// noticing, at a cost of one /proc scan (about 1 ms for 500 processes).
	defaultPollInterval = 250 * time.Millisecond
	// minPollInterval stops a configuration from turning the poll into a
	// busy loop over /proc.
	minPollInterval = 5 * time.Millisecond
	// overflowRetry is how often the reader retries delivering a pending
	// Overflow event when no other event wakes it.
	overflowRetry = 50 * time.Millisecond
	// maxIgnored bounds the set of the agent's own descendants IgnoreSelf
	// tracks: the agent runs a handful of helpers, and a runaway helper must
	// not grow the set without bound (its further children are then
	// reported, which is harmless).
	maxIgnored = 4096
)

// Mode names.
const (
	ModeNetlink = "netlink"
	ModePoll    = "poll"
)

// ErrUnavailable means the process connector cannot be used here; the error
// says why (not root, not in the initial namespaces, kernel without
// CONFIG_PROC_EVENTS). Mode "" falls back to poll on it.
var ErrUnavailable = errors.New("process connector unavailable")

// Watcher delivers process events until Close or the end of the context
// given to Open.
type Watcher struct {
	mode   string
	forks  bool
	log    *slog.Logger
	events chan Event
	lost   atomic.Uint64

	// Only the reader goroutine touches these.
	overflowPending bool
	ignore          map[int]struct{} // nil unless IgnoreSelf
	self            int

	closeOnce sync.Once
	closeErr  error
	done      chan struct{} // closed by Close
	exited    chan struct{} // closed when the reader has closed events
	stop      func() error  // stops the source and unblocks the reader
}

// Open starts watching. ctx bounds the Watcher's life: when it ends the
// Watcher closes itself and the Events channel is closed.
func Open(ctx context.Context, opts Options) (*Watcher, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("open process watcher: %w", err)
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	interval := opts.PollInterval
	if interval == 0 {
		interval = defaultPollInterval
	}
	if interval < minPollInterval {
		return nil, fmt.Errorf("open process watcher: poll interval %v is below %v; use a longer one", interval, minPollInterval)
	}
	w := &Watcher{
		forks:  opts.Forks,
		log:    log,
		events: make(chan Event, eventBuffer),
		done:   make(chan struct{}),
		exited: make(chan struct{}),
		self:   os.Getpid(),
	}
	if opts.IgnoreSelf {
		w.ignore = map[int]struct{}{w.self: {}}
	}
	var err error
	switch opts.Mode {
	case ModeNetlink:
		err = w.startNetlink(ctx)
	case ModePoll:
		err = w.startPoll(interval)
	case "":
		err = w.startNetlink(ctx)
		if err != nil {
			log.Warn("process connector unavailable; polling /proc instead (slower, misses short-lived processes and exit causes)",
				"err", err, "interval", interval)
			err = w.startPoll(interval)
		}
	default:
		return nil, fmt.Errorf("open process watcher: unknown mode %q; use \"\", %q or %q", opts.Mode, ModeNetlink, ModePoll)
	}
	if err != nil {
		return nil, err
	}
	go func() {
		select {
		case <-ctx.Done():
			w.Close()
		case <-w.done:
		}
	}()
	return w, nil
}

// Events delivers the events in the order the kernel (or the poll) saw them.
// It is closed after Close or when Open's context ends.
func (w *Watcher) Events() <-chan Event { return w.events }

// Mode is the source in use: "netlink" or "poll".
func (w *Watcher) Mode() string { return w.mode }

// Lost counts events the kernel dropped (ENOBUFS, sequence gaps) or that did
// not fit in the Events channel. Each loss is also announced by an Overflow
// event.
func (w *Watcher) Lost() uint64 { return w.lost.Load() }

// Close stops watching and waits until the Events channel is closed. It is
// safe to call more than once and from several goroutines.
func (w *Watcher) Close() error {
	w.closeOnce.Do(func() {
		close(w.done)
		w.closeErr = w.stop()
	})
	<-w.exited
	return w.closeErr
}

// deliver hands ev to the consumer without ever blocking the reader: when the
// channel is full the event is counted as lost and an Overflow is owed.
func (w *Watcher) deliver(ev Event) {
	if w.overflowPending && !w.tryOverflow(ev.Time) {
		w.lost.Add(1)
		return
	}
	select {
	case w.events <- ev:
	default:
		w.lost.Add(1)
		w.overflowPending = true
	}
}

// tryOverflow delivers the owed Overflow event if there is room.
func (w *Watcher) tryOverflow(now time.Time) bool {
	select {
	case w.events <- Event{Kind: Overflow, Time: now}:
		w.overflowPending = false
		return true
	default:
		return false
	}
}

// kernelLost records n events the kernel dropped.
func (w *Watcher) kernelLost(n uint64) {
	if n == 0 {
		return
	}
	w.lost.Add(n)
	if !w.overflowPending {
		w.log.Warn("process events lost; the agent will rescan /proc", "lost", n, "total", w.lost.Load())
	}
	w.overflowPending = true
}

// learnDescendants adds the agent's descendants among procs to the set
// IgnoreSelf drops.
func (w *Watcher) learnDescendants(procs map[int]procID) {
	if w.ignore == nil {
		return
	}
	for changed := true; changed; {
		changed = false
		for pid, id := range procs {
			if _, ok := w.ignore[pid]; ok {
				continue
			}
			if _, p := w.ignore[id.ppid]; p && len(w.ignore) < maxIgnored {
				w.ignore[pid] = struct{}{}
				changed = true
			}
		}
	}
}

// ignored applies IgnoreSelf: it reports whether an event of process pid
// (whose parent is parent, 0 if unknown) must be dropped, learning the
// agent's new descendants from forks and forgetting them at exit.
func (w *Watcher) ignored(kind Kind, pid, parent int) bool {
	if w.ignore == nil {
		return false
	}
	_, mine := w.ignore[pid]
	switch kind {
	case Fork:
		if _, p := w.ignore[parent]; p && !mine {
			if len(w.ignore) < maxIgnored {
				w.ignore[pid] = struct{}{}
			}
			return true
		}
	case Exit:
		if mine && pid != w.self {
			delete(w.ignore, pid)
		}
	}
	return mine
}
