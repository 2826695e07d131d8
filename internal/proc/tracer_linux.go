package proc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// maxStopRounds bounds how often StopAll re-lists the threads: each round
	// stops every thread created since the last one, so only a process that
	// creates threads faster than we can stop them needs more than a few.
	maxStopRounds = 100
	// stopTimeout bounds the wait for one thread to reach its ptrace stop; a
	// thread in uninterruptible sleep (D state, e.g. on a dead NFS server)
	// may never stop, and the process must not stay half stopped.
	stopTimeout = 5 * time.Second
	// stepTimeout bounds the wait for one single-stepped remote system call:
	// the calls hotfleet makes (mmap, munmap, mprotect, prctl) never block.
	stepTimeout = 5 * time.Second
	// spinFor is how long we poll for stops without sleeping when the tracer
	// runs at normal priority: a running thread reaches its stop within
	// microseconds, and sleeping on the first miss would add a timer tick.
	// A real-time tracer never spins: it would take a CPU from the very
	// threads that must run to reach their stops.
	spinFor = 200 * time.Microsecond
	// minPollSleep and maxPollSleep bound the back-off between polls, and so
	// the time a stop can go unnoticed, which adds to the pause.
	minPollSleep = 5 * time.Microsecond
	maxPollSleep = 50 * time.Microsecond
	// tracerRTPriority is the SCHED_FIFO priority of the tracer thread: above
	// every normal thread, so that a busy target (more runnable threads than
	// CPUs) cannot delay the tracer while its threads are stopped, and far
	// below the kernel's own real-time threads.
	tracerRTPriority = 10
	// stopCost is the first guess at how long one thread takes to reach
	// its stop once interrupted, per CPU, when they queue for the CPUs;
	// later sleeps follow the rate actually seen. maxStopSleep bounds one
	// such sleep.
	stopCost     = 12 * time.Microsecond
	maxStopSleep = 200 * time.Microsecond
	// zombieCheckAfter is how long a stop may be awaited before threads are
	// checked for having become zombies (which never stop): running threads
	// stop within microseconds, and the check is costly.
	zombieCheckAfter = 2 * time.Millisecond
)

// Tracer controls one process. All ptrace requests for it are issued by one
// goroutine locked to its OS thread, because the kernel binds a tracee to
// the thread that seized it; the exported methods hand closures to that
// goroutine and wait for them. A Tracer is not meant for concurrent use by
// several callers at once, but nothing breaks if it is: requests run one at
// a time.
type Tracer struct {
	pid  int
	mem  *Mem
	reqs chan func()
	done chan struct{}
	log  *slog.Logger

	// Owned by the tracer goroutine.
	threads   map[int]*thread // seized threads
	order     []int           // seize order, for deterministic Stopped() output
	firstStop time.Time       // first PTRACE_INTERRUPT of this stop
	allStop   time.Time       // when StopAll found every thread stopped
	gadgets   *gadgets        // syscall gadgets, found once per process
	preferTid int             // thread remote syscalls should use first; 0: the leader
	osTid     int             // the OS thread that is the tracer of every seized thread
	realtime  bool            // osTid runs SCHED_FIFO (see raisePriority)
	closed    bool
}

// thread is one seized thread.
type thread struct {
	tid     int
	stopped bool
	regs    unix.PtraceRegs // as the thread stopped; restored on Resume
	changed bool            // registers differ from regs
	sig     int             // signal taken at a signal-delivery-stop, re-injected at detach
	extra   []int           // further signals taken while sig was held, re-sent after detach
	inSig   bool            // the thread sits in a signal-delivery-stop (detach data delivers)
	asked   bool            // PTRACE_INTERRUPT was sent: a stop is coming
}

// Attach prepares to control pid: it opens the process's memory and starts
// the tracer goroutine. It stops nothing.
func Attach(ctx context.Context, pid int) (*Tracer, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("attach to pid %d: not a process id; pass the pid of a running process", pid)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("attach to pid %d: %w", pid, err)
	}
	quietStops()
	mem, err := OpenMem(pid)
	if err != nil {
		return nil, fmt.Errorf("attach to pid %d: %w", pid, err)
	}
	t := &Tracer{
		pid:     pid,
		mem:     mem,
		reqs:    make(chan func()),
		done:    make(chan struct{}),
		log:     slog.New(slog.DiscardHandler),
		threads: map[int]*thread{},
	}
	locked := make(chan struct{})
	go t.loop(locked)
	<-locked
	return t, nil
}

// SetLogger sets where the tracer reports events an operator should know
// about, such as a remote system call that could not be made crash-safe.
func (t *Tracer) SetLogger(l *slog.Logger) {
	if l != nil {
		t.log = l
	}
}

// loop runs every ptrace request. It never unlocks its OS thread: when it
// returns, Go ends the thread, and the kernel then detaches any tracee still
// attached, so even a bug here cannot leave a thread stopped for good.
//
// The process's main thread is the exception: Go parks it instead of ending
// it, so a tracer there would keep dead tracees unreaped. A loop that finds
// itself there starts another and hands over once that one holds a thread
// of its own (it cannot be the main thread, which this one still holds).
func (t *Tracer) loop(locked chan struct{}) {
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		next := make(chan struct{})
		go t.loop(next)
		<-next
		runtime.UnlockOSThread()
		close(locked)
		return
	}
	t.osTid = unix.Gettid()
	t.raisePriority()
	if locked != nil {
		close(locked)
	}
	defer close(t.done)
	for !t.closed {
		fn := <-t.reqs
		fn()
	}
}

// Run runs fn on the tracer's own OS thread and returns its error. Every
// Tracer method fn calls runs inline there, with no hand-over between
// threads: a sequence of steps taken with the world stopped (stop, scan,
// write, resume) does not wait for the Go scheduler to wake a thread
// between them, which on a virtual machine can cost tens of microseconds
// a wake-up. fn runs at the tracer's real-time priority: keep it short.
func (t *Tracer) Run(ctx context.Context, fn func() error) error {
	return t.do(ctx, fn)
}

// do runs fn on the tracer goroutine and returns its error. Called from
// the tracer goroutine itself (inside Run), it runs fn at once.
func (t *Tracer) do(ctx context.Context, fn func() error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("pid %d: %w", t.pid, err)
	}
	if t.onTracer() {
		return fn()
	}
	errc := make(chan error, 1)
	select {
	case t.reqs <- func() { errc <- fn() }:
	case <-t.done:
		return fmt.Errorf("pid %d: tracer is closed; attach again", t.pid)
	case <-ctx.Done():
		return fmt.Errorf("pid %d: %w", t.pid, ctx.Err())
	}
	return <-errc
}

// onTracer tells whether the caller runs on the tracer goroutine: the only
// goroutine on the tracer's locked OS thread.
func (t *Tracer) onTracer() bool {
	return t.osTid != 0 && unix.Gettid() == t.osTid
}

// Pid is the process under control.
func (t *Tracer) Pid() int { return t.pid }

// Mem is the process's memory.
func (t *Tracer) Mem() *Mem { return t.mem }

// ptrace issues one raw ptrace request: x/sys/unix has no helpers that pass
// a signal to PTRACE_DETACH, PTRACE_SYSCALL or PTRACE_CONT, nor a regset
// request for NT_X86_XSTATE.
func ptrace(req int, tid int, addr, data uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(tid), addr, data, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// StopAll seizes and stops every thread of the process, repeating until no
// new thread appears. On error every thread it seized is released again.
func (t *Tracer) StopAll(ctx context.Context) error {
	return t.do(ctx, func() error {
		if err := t.stopAll(ctx); err != nil {
			t.releaseAll()
			t.sweep()
			return t.exitedOr(err)
		}
		return nil
	})
}

func (t *Tracer) stopAll(ctx context.Context) error {
	if len(t.threads) == 0 {
		t.sweep()
	}
	for round := 0; round < maxStopRounds; round++ {
		tids, err := Threads(t.pid)
		if err != nil {
			return fmt.Errorf("stop pid %d: %w", t.pid, err)
		}
		// Seize every new thread before interrupting any: seizing does not
		// stop a thread, so its cost stays out of the pause.
		var fresh []int
		for _, tid := range tids {
			if _, ok := t.threads[tid]; ok {
				continue
			}
			ok, err := t.seize(tid)
			if err != nil {
				// Those already seized must stop too: only a stopped
				// tracee can be detached.
				for _, f := range fresh {
					t.interrupt(f)
				}
				return err
			}
			if ok {
				fresh = append(fresh, tid)
			}
		}
		// A thread blocked in a call that the kernel fails with EINTR on a
		// stop (epoll_wait...) is stopped last and alone, and its registers
		// are repaired the moment it stops (undoStopEINTR): should hotfleet
		// die in between, the kernel would resume it with the EINTR, so that
		// window is kept to one thread's stop instead of the whole stop.
		// Classify every thread before interrupting any: reading /proc
		// costs microseconds a thread, which must not count in the pause.
		var late, now []int
		for _, tid := range fresh {
			if blockedInEINTRCall(t.pid, tid) {
				late = append(late, tid)
			} else {
				now = append(now, tid)
			}
		}
		for _, tid := range now {
			if _, err := t.interrupt(tid); err != nil {
				t.interruptAll()
				return err
			}
		}
		if err := t.waitAllStopped(ctx); err != nil {
			t.interruptAll()
			return err
		}
		for _, tid := range late {
			if th := t.threads[tid]; th == nil || th.stopped {
				continue // exited, or stopped for a signal meanwhile
			}
			ok, err := t.interrupt(tid)
			if err != nil {
				t.interruptAll()
				return err
			}
			if !ok {
				continue
			}
			ws, err := t.waitTid(ctx, tid, stopTimeout)
			if err != nil {
				if errors.Is(err, ErrExited) || !processAlive(t.pid) {
					return fmt.Errorf("stop pid %d: %w", t.pid, ExitedError{Pid: t.pid})
				}
				if st := threadState(t.pid, tid); st == 0 || st == 'Z' || st == 'X' {
					t.forget(tid) // this thread exited; the process lives on
					continue
				}
				t.interruptAll()
				return fmt.Errorf("stop pid %d: %w", t.pid, err)
			}
			t.note(tid, ws)
		}
		if len(fresh) == 0 {
			if len(t.threads) == 0 {
				return fmt.Errorf("stop pid %d: %w", t.pid, ExitedError{Pid: t.pid})
			}
			t.allStop = time.Now()
			return nil
		}
	}
	return fmt.Errorf("stop pid %d: new threads kept appearing through %d rounds; the process creates threads faster than they can be stopped, retry later", t.pid, maxStopRounds)
}

// StopOne seizes and stops a single thread, the thread group leader unless
// it is a zombie, so that remote system calls can run while the other
// threads keep running. It returns the stopped thread's id.
func (t *Tracer) StopOne(ctx context.Context) (int, error) {
	var tid int
	err := t.do(ctx, func() error {
		if th := t.threads[t.pid]; th != nil && th.stopped {
			tid = th.tid
			return nil
		}
		for _, id := range t.order {
			if th := t.threads[id]; th != nil && th.stopped {
				tid = id
				return nil
			}
		}
		tids, err := Threads(t.pid)
		if err != nil {
			return fmt.Errorf("stop a thread of pid %d: %w", t.pid, err)
		}
		// Leader first: it is the most likely to live as long as the process.
		cands := append([]int{t.pid}, tids...)
		for _, c := range cands {
			if c == t.pid && !containsInt(tids, c) || threadState(t.pid, c) == 'Z' {
				continue
			}
			ok, err := t.seize(c)
			if err == nil && ok {
				ok, err = t.interrupt(c)
			}
			if err != nil {
				t.releaseAll()
				return err
			}
			if !ok {
				continue
			}
			if err := t.waitAllStopped(ctx); err != nil {
				t.releaseAll()
				return err
			}
			if th := t.threads[c]; th != nil && th.stopped {
				tid = c
				return nil
			}
		}
		t.releaseAll()
		if !processAlive(t.pid) {
			return fmt.Errorf("stop a thread of pid %d: %w", t.pid, ExitedError{Pid: t.pid})
		}
		return fmt.Errorf("stop a thread of pid %d: every thread exited or is a zombie; retry", t.pid)
	})
	return tid, t.exitedOr(err)
}

// exitedOr turns err into an ExitedError when the process is gone: whatever
// failed on the way, that is the reason the caller needs.
func (t *Tracer) exitedOr(err error) error {
	if err == nil || errors.Is(err, ErrExited) || errors.Is(err, ErrPermission) || errors.Is(err, ErrAlreadyTraced) ||
		processAlive(t.pid) && !processDying(t.pid) {
		return err
	}
	return fmt.Errorf("%w (%v)", ExitedError{Pid: t.pid}, err)
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// seize attaches to tid and asks it to stop. It reports false, with no
// error, when the thread exited before it could be seized.
func (t *Tracer) seize(tid int) (bool, error) {
	err := unix.PtraceSeize(tid)
	switch {
	case err == nil:
	case errors.Is(err, unix.ESRCH):
		if !processAlive(t.pid) {
			return false, fmt.Errorf("stop pid %d: %w", t.pid, ExitedError{Pid: t.pid})
		}
		return false, nil // the thread exited; the process lives on
	case errors.Is(err, unix.EPERM):
		// An exiting thread refuses to be traced with EPERM too.
		if s := threadState(t.pid, tid); s == 0 || s == 'Z' || s == 'X' {
			if !processAlive(t.pid) {
				return false, fmt.Errorf("stop pid %d: %w", t.pid, ExitedError{Pid: t.pid})
			}
			return false, nil
		}
		// A process being killed refuses too, its threads possibly still
		// traced by a tracer that has not yet reaped them.
		if processDying(t.pid) {
			return false, fmt.Errorf("stop pid %d: %w", t.pid, ExitedError{Pid: t.pid})
		}
		// A thread we still trace but lost track of (it failed to stop
		// cleanly once) is adopted again rather than reported as foreign.
		if tp, _ := strconv.Atoi(statusField(fmt.Sprintf("/proc/%d/task/%d/status", t.pid, tid), "TracerPid")); tp != 0 && tp == t.osTid {
			break
		}
		return false, permissionError(t.pid, tid)
	default:
		return false, fmt.Errorf("seize thread %d of pid %d: %w", tid, t.pid, err)
	}
	t.threads[tid] = &thread{tid: tid}
	t.order = append(t.order, tid)
	return true, nil
}

// interrupt asks a seized thread to stop. It reports false, with no error,
// when the thread exited in between.
func (t *Tracer) interrupt(tid int) (bool, error) {
	if t.firstStop.IsZero() {
		t.firstStop = time.Now()
	}
	if th := t.threads[tid]; th != nil {
		th.asked = true
	}
	if err := unix.PtraceInterrupt(tid); err != nil {
		if errors.Is(err, unix.ESRCH) {
			t.forget(tid) // exited between seize and interrupt
			return false, nil
		}
		return false, fmt.Errorf("interrupt thread %d of pid %d: %w", tid, t.pid, err)
	}
	return true, nil
}

// interruptAll asks every seized thread not yet asked to stop: only a
// stopped tracee can be detached, so an error path must stop them all
// before releasing them.
func (t *Tracer) interruptAll() {
	for _, tid := range t.order {
		if th := t.threads[tid]; th != nil && !th.asked && !th.stopped {
			t.interrupt(tid)
		}
	}
}

// blockedInEINTRCall reports whether tid sleeps in one of the system calls
// that a ptrace stop fails with EINTR (see eintrOnStop). The kernel reports
// the call of a blocked thread in /proc/PID/task/TID/syscall, "running"
// otherwise; a thread that wakes meanwhile is simply stopped first.
func blockedInEINTRCall(pid, tid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/syscall", pid, tid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return false
	}
	nr, err := strconv.ParseUint(f[0], 10, 64)
	return err == nil && eintrOnStop[nr]
}

// permissionError explains why the kernel refused to let us trace tid of pid.
func permissionError(pid, tid int) error {
	tracer, comm := tracerOf(pid, tid)
	if tracer != 0 {
		return fmt.Errorf("pid %d is already traced by pid %d (%s); detach that debugger and retry: %w", pid, tracer, comm, ErrAlreadyTraced)
	}
	return fmt.Errorf("ptrace pid %d: permission denied; run hotfleet as root or with CAP_SYS_PTRACE: %w", pid, ErrPermission)
}

// tracerOf reads the thread's TracerPid and the tracer's name.
func tracerOf(pid, tid int) (int, string) {
	v := statusField(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid), "TracerPid")
	tracer, err := strconv.Atoi(v)
	if err != nil || tracer == 0 {
		return 0, ""
	}
	// TracerPid names the tracing thread; the user knows its process.
	if tgid, err := strconv.Atoi(statusField(fmt.Sprintf("/proc/%d/status", tracer), "Tgid")); err == nil && tgid > 0 {
		tracer = tgid
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", tracer))
	if err != nil {
		return tracer, "unknown"
	}
	return tracer, strings.TrimSpace(string(comm))
}

// statusField returns the value of one "Key:\tvalue" line of a status file.
func statusField(path, key string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// processAlive reports whether pid still exists and is not a zombie.
func processAlive(pid int) bool {
	s := threadState(pid, pid)
	if s == 0 {
		return false
	}
	if s != 'Z' {
		return true
	}
	// A zombie leader with live threads is a live process.
	tids, err := Threads(pid)
	if err != nil {
		return false
	}
	for _, tid := range tids {
		if st := threadState(pid, tid); st != 0 && st != 'Z' && st != 'X' {
			return true
		}
	}
	return false
}

// processDying reports whether pid has been sent SIGKILL or is tearing
// down its memory: it is gone for every purpose of ours, though its
// threads may take a moment to exit.
func processDying(pid int) bool {
	status := fmt.Sprintf("/proc/%d/status", pid)
	const sigkillBit = 1 << (unix.SIGKILL - 1)
	for _, k := range []string{"SigPnd", "ShdPnd"} {
		if v, err := strconv.ParseUint(statusField(status, k), 16, 64); err == nil && v&sigkillBit != 0 {
			return true
		}
	}
	// A process whose memory is gone has no maps lines left.
	data, err := os.ReadFile(memFile(pid, "maps"))
	return errors.Is(err, fs.ErrNotExist) || err == nil && len(data) == 0
}

func (t *Tracer) forget(tid int) {
	delete(t.threads, tid)
	for i, x := range t.order {
		if x == tid {
			t.order = append(t.order[:i], t.order[i+1:]...)
			break
		}
	}
}

// waitAllStopped waits until every seized thread is in a ptrace stop or gone.
//
// Each wake-up of the real-time tracer takes a CPU from the very threads
// that must run to reach their stops, so when there are more threads to
// stop than CPUs it sleeps as long as the stops are expected to take, from
// the rate at which they have come so far (at first from stopCost a thread
// and CPU), instead of waking for every stop. The kernel sends the tracer no
// SIGCHLD for them (see quietStops), so nothing else wakes it.
func (t *Tracer) waitAllStopped(ctx context.Context) error {
	start := time.Now()
	deadline := start.Add(stopTimeout)
	p := poller{realtime: t.realtime}
	collected := 0
	for {
		pending := 0
		for _, th := range t.threads {
			if !th.stopped && th.asked {
				pending++
			}
		}
		if pending == 0 {
			return nil
		}
		var ws unix.WaitStatus
		// -1 with __WNOTHREAD: every tracee of this OS thread and no child of
		// any other goroutine's thread (another Tracer's tracees).
		wpid, err := unix.Wait4(-1, &ws, unix.WNOHANG|unix.WALL|unix.WNOTHREAD, nil)
		if err != nil && !errors.Is(err, unix.EINTR) {
			if errors.Is(err, unix.ECHILD) {
				// No tracee left: they all exited.
				for tid, th := range t.threads {
					if !th.stopped {
						t.forget(tid)
					}
				}
				continue
			}
			return fmt.Errorf("wait for threads of pid %d to stop: %w", t.pid, err)
		}
		if wpid > 0 {
			t.note(wpid, ws)
			collected++
			p.reset()
			continue
		}
		// Nothing ready: a zombie never reaches a stop; drop it (the
		// sweep in releaseAll reaps it once the kernel lets us). Reading
		// every thread's state costs tens of microseconds a thread, so it
		// is done only once the stops are overdue, not on every poll.
		if p.waited() >= zombieCheckAfter {
			for tid, th := range t.threads {
				if !th.stopped {
					if s := threadState(t.pid, tid); s == 0 || s == 'Z' || s == 'X' {
						t.forget(tid)
					}
				}
			}
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("stop pid %d: %w", t.pid, err)
		}
		if time.Now().After(deadline) {
			for tid, th := range t.threads {
				if !th.stopped && th.asked {
					return fmt.Errorf("stop pid %d: thread %d did not stop within %v (state %q); it may be in uninterruptible sleep, retry later", t.pid, tid, stopTimeout, threadState(t.pid, tid))
				}
			}
		}
		if t.realtime && pending > numCPU && p.waited() < zombieCheckAfter {
			var d time.Duration
			if collected == 0 {
				d = time.Duration((pending+numCPU-1)/numCPU) * stopCost
			} else {
				d = time.Since(start) * time.Duration(pending) / time.Duration(collected)
			}
			p.sleepFor(min(max(d, minPollSleep), maxStopSleep))
			continue
		}
		p.wait()
	}
}

// poller paces non-blocking waits: spin first, then sleep a little longer
// each time, up to maxPollSleep. Blocking waits cannot honour a deadline
// (the Go runtime restarts interrupted system calls), so we poll.
type poller struct {
	start    time.Time
	sleep    time.Duration
	realtime bool // the tracer thread runs SCHED_FIFO: never spin
}

func (p *poller) reset() { *p = poller{realtime: p.realtime} }

// waited is how long this poller has been waiting since its first wait.
func (p *poller) waited() time.Duration {
	if p.start.IsZero() {
		return 0
	}
	return time.Since(p.start)
}

// sleepFor sleeps d on the calling thread (counting as waited).
func (p *poller) sleepFor(d time.Duration) {
	if p.start.IsZero() {
		p.start = time.Now()
	}
	ts := unix.NsecToTimespec(d.Nanoseconds())
	for unix.Nanosleep(&ts, &ts) == unix.EINTR {
	}
}

func (p *poller) wait() {
	if p.start.IsZero() {
		p.start = time.Now()
	}
	if !p.realtime && time.Since(p.start) < spinFor {
		runtime.Gosched()
		return
	}
	p.sleep = min(max(2*p.sleep, minPollSleep), maxPollSleep)
	// Sleep the locked OS thread itself: a Go timer would hand the wake-up
	// to the runtime's scheduler, whose threads have normal priority.
	ts := unix.NsecToTimespec(p.sleep.Nanoseconds())
	for unix.Nanosleep(&ts, &ts) == unix.EINTR {
	}
}

// raisePriority makes the tracer thread real-time (SCHED_FIFO) when the
// kernel allows it, so that stopping, switching and resuming a process with
// more runnable threads than CPUs is not stretched by the scheduler: the
// stopped threads' pause is the tracer's working time, not its waiting for
// a CPU. Without CAP_SYS_NICE it stays at normal priority.
func (t *Tracer) raisePriority() {
	attr := unix.SchedAttr{
		Size:     unix.SizeofSchedAttr,
		Policy:   unix.SCHED_FIFO,
		Priority: tracerRTPriority,
		Flags:    unix.SCHED_FLAG_RESET_ON_FORK,
	}
	if err := unix.SchedSetAttr(0, &attr, 0); err != nil {
		t.log.Debug("tracer stays at normal priority", "pid", t.pid, "err", err)
		return
	}
	t.realtime = true
}

// note records one wait status of a seized thread during a stop.
func (t *Tracer) note(tid int, ws unix.WaitStatus) {
	th := t.threads[tid]
	if th == nil {
		return // not ours (cannot happen with __WNOTHREAD) or already forgotten
	}
	switch {
	case ws.Exited() || ws.Signaled():
		t.forget(tid)
	case ws.Stopped():
		if th.stopped {
			return
		}
		sig := int(ws.StopSignal())
		if int(ws)>>16 == unix.PTRACE_EVENT_STOP || sig == int(unix.SIGTRAP)|0x80 {
			// Interrupt stop or group-stop, or the syscall stop of a remote
			// call that was abandoned: no signal to hand on.
			th.inSig = false
		} else {
			// A signal arrived first: the thread is stopped too; keep the
			// signal and hand it back at detach so the target never loses it.
			th.hold(sig)
			th.inSig = true
		}
		if err := unix.PtraceGetRegs(tid, &th.regs); err != nil {
			// Without registers we cannot report or restore it; release it now.
			t.detach(th)
			t.forget(tid)
			return
		}
		th.stopped = true
		if !th.inSig {
			t.undoStopEINTR(th)
		}
	}
}

// signalsHeld counts signals taken for re-injection, so that tests can tell
// the path was exercised.
var signalsHeld atomic.Int64

// hold keeps a signal the thread would have received, for re-injection.
func (th *thread) hold(sig int) {
	if sig == 0 {
		return
	}
	signalsHeld.Add(1)
	if th.sig == 0 {
		th.sig = sig
		return
	}
	th.extra = append(th.extra, sig)
}

// Stopped lists the threads now stopped, with the PC and SP they stopped at.
func (t *Tracer) Stopped() []Thread {
	var out []Thread
	_ = t.do(context.Background(), func() error {
		for _, tid := range t.order {
			th := t.threads[tid]
			if th != nil && th.stopped {
				out = append(out, Thread{Tid: tid, PC: th.regs.Rip, SP: th.regs.Rsp, TP: th.regs.Fs_base})
			}
		}
		return nil
	})
	return out
}

// Resume restores every changed register set, detaches every thread and
// returns how long the process was stopped: from the first interrupt to the
// last detach.
func (t *Tracer) Resume() (time.Duration, error) {
	var pause time.Duration
	err := t.do(context.Background(), func() error {
		var err error
		pause, err = t.releaseAll()
		return err
	})
	return pause, err
}

// releaseAll puts back every changed register set and detaches every seized
// thread, re-injecting signals taken from them. Threads seized but not yet
// stopped are waited for first: the kernel detaches only stopped tracees.
func (t *Tracer) releaseAll() (time.Duration, error) {
	if len(t.threads) == 0 {
		t.firstStop = time.Time{}
		return 0, nil
	}
	var errs []error
	t.interruptAll()
	if err := t.waitAllStopped(context.Background()); err != nil {
		errs = append(errs, err)
	}
	release := time.Now()
	for _, tid := range t.order {
		th := t.threads[tid]
		if th == nil || !th.stopped {
			continue
		}
		if err := t.detach(th); err != nil {
			errs = append(errs, err)
		}
	}
	end := time.Now()
	pause := end.Sub(t.firstStop)
	if !t.allStop.IsZero() {
		// Where a stop's time goes, for the pause benchmark: stopping every
		// thread, the caller's work with the world stopped, and the detaches.
		t.log.Debug("process resumed", "pid", t.pid, "threads", len(t.order), "pause", pause,
			"stopping", t.allStop.Sub(t.firstStop), "stopped", release.Sub(t.allStop), "detaching", end.Sub(release))
	}
	t.allStop = time.Time{}
	t.threads = map[int]*thread{}
	t.order = nil
	t.firstStop = time.Time{}
	t.sweep()
	if len(errs) > 0 {
		return pause, fmt.Errorf("resume pid %d: %w", t.pid, errors.Join(errs...))
	}
	return pause, nil
}

// sweep reaps every exited tracee of this OS thread and releases threads
// that stopped after we gave up on them (a thread leaving uninterruptible
// sleep after a failed StopAll). An exited thread we trace stays a zombie
// until its tracer collects it, and the process cannot be reaped by its
// parent until then.
func (t *Tracer) sweep() {
	for range maxStopRounds * 16 {
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(-1, &ws, unix.WNOHANG|unix.WALL|unix.WNOTHREAD, nil)
		if wpid <= 0 || err != nil {
			return
		}
		th := t.threads[wpid]
		switch {
		case ws.Exited() || ws.Signaled():
			if th != nil {
				t.forget(wpid)
			}
		case ws.Stopped() && th == nil:
			sig := 0
			if int(ws)>>16 == 0 {
				sig = int(ws.StopSignal()) // a signal-delivery-stop: hand the signal on
			}
			_ = ptrace(unix.PTRACE_DETACH, wpid, 0, uintptr(sig))
		case ws.Stopped() && !th.stopped:
			t.note(wpid, ws)
		}
	}
}

// detach restores th's registers if they were changed and detaches it.
func (t *Tracer) detach(th *thread) error {
	var errs []error
	if th.changed {
		if err := unix.PtraceSetRegs(th.tid, &th.regs); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("restore registers of thread %d: %w", th.tid, err))
		} else {
			th.changed = false
		}
	}
	sig := 0
	if th.inSig {
		sig = th.sig
	}
	if err := ptrace(unix.PTRACE_DETACH, th.tid, 0, uintptr(sig)); err != nil && !errors.Is(err, unix.ESRCH) {
		errs = append(errs, fmt.Errorf("detach thread %d: %w", th.tid, err))
	}
	// A signal that could not ride on the detach is sent again; it loses its
	// siginfo but is not lost.
	resend := th.extra
	if !th.inSig && th.sig != 0 {
		resend = append([]int{th.sig}, resend...)
	}
	for _, s := range resend {
		_ = unix.Tgkill(t.pid, th.tid, syscall.Signal(s))
	}
	return errors.Join(errs...)
}

// Close resumes the process if it is stopped, closes its memory and ends
// the tracer goroutine.
func (t *Tracer) Close() error {
	var err error
	derr := t.do(context.Background(), func() error {
		if !t.closed {
			_, err = t.releaseAll()
			t.closed = true
		}
		return nil
	})
	if derr != nil {
		return nil // already closed
	}
	<-t.done
	if cerr := t.mem.Close(); err == nil {
		err = cerr
	}
	return err
}

// numCPU is how many CPUs the threads of a target can run on at once.
var numCPU = max(runtime.NumCPU(), 1)

// quietStops asks the kernel not to send hotfleet SIGCHLD when a tracee (or
// child) stops: SA_NOCLDSTOP on the Go runtime's own SIGCHLD handler. Each
// such signal would wake the real-time tracer thread, taking a CPU from the
// threads that still have to reach their stops; wait4 still sees every stop,
// and exits still send SIGCHLD. The Go runtime does not rely on stop
// notifications. Done once, by the first Attach.
var quietStops = sync.OnceFunc(func() {
	// struct kernel_sigaction on x86-64: handler, flags, restorer, mask.
	var act [4]uint64
	const saNoCldStop = 1
	if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(unix.SIGCHLD), 0, uintptr(unsafe.Pointer(&act)), 8, 0, 0); e != 0 {
		return
	}
	if act[1]&saNoCldStop != 0 {
		return
	}
	act[1] |= saNoCldStop
	unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(unix.SIGCHLD), uintptr(unsafe.Pointer(&act)), 0, 8, 0, 0)
})
