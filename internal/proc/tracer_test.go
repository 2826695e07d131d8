package proc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"hotfleet/internal/testenv"
)

func targetBin(t testing.TB) string {
	return buildTarget(t, "target", "-O2", "-mavx2", "-pthread")
}

// TestStopAllResume stops a target with 16 busy threads plus threads
// blocked in read, epoll_wait, nanosleep and sigwaitinfo, many times, and checks that
// every thread carries on afterwards with no EINTR, no short sleep and no
// corrupted FP state.
func TestStopAllResume(t *testing.T) {
	testenv.NeedRoot(t)
	tg := startTarget(t, targetBin(t), "16")
	tg.waitProgress(1, 1)
	tr := attach(t, tg.pid)
	ctx := context.Background()
	const rounds = 50
	var maxPause time.Duration
	for i := 0; i < rounds; i++ {
		if err := tr.StopAll(ctx); err != nil {
			t.Fatalf("round %d: StopAll: %v", i, err)
		}
		st := tr.Stopped()
		if len(st) != 16+4 {
			t.Fatalf("round %d: %d threads stopped, want 20", i, len(st))
		}
		for _, th := range st {
			if th.PC == 0 || th.SP == 0 {
				t.Fatalf("thread %d stopped with PC %#x SP %#x", th.Tid, th.PC, th.SP)
			}
			if s := threadState(tg.pid, th.Tid); s != 't' {
				t.Fatalf("thread %d state %q while stopped, want t", th.Tid, s)
			}
		}
		pause, err := tr.Resume()
		if err != nil {
			t.Fatalf("round %d: Resume: %v", i, err)
		}
		if pause <= 0 {
			t.Fatalf("round %d: pause %v", i, pause)
		}
		maxPause = max(maxPause, pause)
		if tt := tracedThreads(tg.pid); len(tt) != 0 {
			t.Fatalf("round %d: threads %v still traced after Resume", i, tt)
		}
		time.Sleep(time.Duration(i%7) * 3 * time.Millisecond)
	}
	t.Logf("%d stop/resume rounds of 20 threads, max pause %v", rounds, maxPause)
	b, s := tg.status()
	tg.waitProgress(b+2, s+2) // nanosleep(1s) keeps completing full seconds
	tg.finish()
}

// TestSyscallMmap maps, uses and unmaps memory inside the target, and checks
// that the thread used for it comes back with every register intact.
func TestSyscallMmap(t *testing.T) {
	testenv.NeedRoot(t)
	tg := startTarget(t, targetBin(t), "4")
	tr := attach(t, tg.pid)
	ctx := context.Background()
	for _, stopAll := range []bool{false, true} {
		if stopAll {
			if err := tr.StopAll(ctx); err != nil {
				t.Fatal(err)
			}
		} else if _, err := tr.StopOne(ctx); err != nil {
			t.Fatal(err)
		}
		before := regsOf(t, tr)
		pid, err := tr.Syscall(ctx, unix.SYS_GETPID)
		if err != nil || int(pid) != tg.pid {
			t.Fatalf("remote getpid = %d, %v; want %d", pid, err, tg.pid)
		}
		const size = 3 * 4096
		addr, err := tr.Syscall(ctx, unix.SYS_MMAP, 0, size, unix.PROT_READ|unix.PROT_EXEC, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
		if err != nil {
			t.Fatalf("remote mmap: %v", err)
		}
		maps, err := ReadMaps(tg.pid)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, m := range maps {
			if m.Start == addr && m.End == addr+size && m.Perms == "r-xp" {
				found = true
			}
		}
		if !found {
			t.Fatalf("remote mmap returned %#x but no r-xp mapping of %d bytes is there", addr, size)
		}
		msg := []byte("written through /proc/PID/mem into an R-X page")
		if err := tr.Mem().WriteAt(msg, addr+100); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if err := tr.Mem().ReadAt(got, addr+100); err != nil || string(got) != string(msg) {
			t.Fatalf("read back %q, %v", got, err)
		}
		if r, err := tr.Syscall(ctx, unix.SYS_MUNMAP, addr, size); err != nil || r != 0 {
			t.Fatalf("remote munmap = %d, %v", r, err)
		}
		if err := tr.Mem().ReadAt(got, addr+100); err == nil {
			t.Fatalf("memory at %#x still readable after remote munmap", addr)
		}
		// A failing call reports the errno.
		if _, err := tr.Syscall(ctx, unix.SYS_MUNMAP, addr+1, size); !errorsIsErrno(err, unix.EINVAL) {
			t.Fatalf("remote munmap of an unaligned address: %v, want EINVAL", err)
		}
		after := regsOf(t, tr)
		for tid, r := range before {
			if after[tid] != r {
				t.Fatalf("thread %d registers changed by remote syscalls:\nbefore %+v\nafter  %+v", tid, r, after[tid])
			}
		}
		if _, err := tr.Resume(); err != nil {
			t.Fatal(err)
		}
	}
	b, s := tg.status()
	tg.waitProgress(b+1, s+1)
	tg.finish()
}

// regsOf reads the live registers of every stopped thread.
func regsOf(t *testing.T, tr *Tracer) map[int]unix.PtraceRegs {
	t.Helper()
	out := map[int]unix.PtraceRegs{}
	err := tr.do(context.Background(), func() error {
		for _, tid := range tr.order {
			var r unix.PtraceRegs
			if err := unix.PtraceGetRegs(tid, &r); err != nil {
				return err
			}
			out[tid] = r
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestNoSignalLost sends queued real-time signals to the target while it is
// stopped, resumed and made to run remote system calls over and over: every
// one of them must be handled exactly once.
func TestNoSignalLost(t *testing.T) {
	testenv.NeedRoot(t)
	tg := startTarget(t, targetBin(t), "4")
	tr := attach(t, tg.pid)
	ctx := context.Background()
	const sent = 3000
	held := signalsHeld.Load()
	done := make(chan error, 1)
	go func() {
		for i := 0; i < sent; i++ {
			if err := unix.Kill(tg.pid, glibcSIGRTMIN); err != nil {
				done <- err
				return
			}
			if i%10 == 0 {
				time.Sleep(100 * time.Microsecond)
			}
		}
		done <- nil
	}()
	rounds := 0
	for sending := true; sending; rounds++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			sending = false
		default:
		}
		if err := tr.StopAll(ctx); err != nil {
			t.Fatal(err)
		}
		if pid, err := tr.Syscall(ctx, unix.SYS_GETPID); err != nil || int(pid) != tg.pid {
			t.Fatalf("remote getpid: %d, %v", pid, err)
		}
		if _, err := tr.Resume(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	got := tg.signals()
	for got < sent && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		got = tg.signals()
	}
	if got != sent {
		t.Fatalf("target handled %d of %d signals sent during %d stop rounds", got, sent, rounds)
	}
	t.Logf("%d signals, %d stop/syscall/resume rounds, %d taken at a stop and re-injected, none lost", sent, rounds, signalsHeld.Load()-held)
	tg.finish()
}

// glibcSIGRTMIN is SIGRTMIN as the C target sees it: glibc keeps the first
// two real-time signals for itself.
const glibcSIGRTMIN = unix.Signal(34)

// TestZombieLeader: with the main thread gone (a zombie leader), StopOne
// picks a live thread, remote calls run on it, and StopAll skips the zombie.
func TestZombieLeader(t *testing.T) {
	testenv.NeedRoot(t)
	tg := startTarget(t, buildTarget(t, "zombieleader", "-O2", "-pthread"))
	deadline := time.Now().Add(5 * time.Second)
	for threadState(tg.pid, tg.pid) != 'Z' {
		if time.Now().After(deadline) {
			t.Fatal("the leader never became a zombie")
		}
		time.Sleep(5 * time.Millisecond)
	}
	tr := attach(t, tg.pid)
	ctx := context.Background()
	tid, err := tr.StopOne(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if tid == tg.pid {
		t.Fatalf("StopOne stopped the zombie leader %d", tid)
	}
	if pid, err := tr.Syscall(ctx, unix.SYS_GETPID); err != nil || int(pid) != tg.pid {
		t.Fatalf("remote getpid on thread %d: %d, %v", tid, pid, err)
	}
	if got, err := tr.Syscall(ctx, unix.SYS_GETTID); err != nil || int(got) != tid {
		t.Fatalf("remote gettid: %d, %v; want the stopped thread %d", got, err, tid)
	}
	if _, err := tr.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := tr.StopAll(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(tr.Stopped()); n != 2 {
		t.Fatalf("StopAll stopped %d threads, want the 2 live ones", n)
	}
	if _, err := tr.Resume(); err != nil {
		t.Fatal(err)
	}
	tg.send("still alive")
	tg.expect("got still alive", 5*time.Second)
	tg.stdin.Close()
	tg.expect("bye", 5*time.Second)
}

// TestSyscallFrameElsewhere: when the preferred thread's stack has no room
// for the restore frame, the call runs on another stopped thread.
func TestSyscallFrameElsewhere(t *testing.T) {
	testenv.NeedRoot(t)
	bin := buildTarget(t, "tinystack", "-O2", "-pthread")
	cmd := startTargetRaw(t, bin)
	tinyLine := cmd.expect("tiny", 5*time.Second)
	var tiny int
	if _, err := fmt.Sscanf(tinyLine, "tiny %d", &tiny); err != nil {
		t.Fatal(err)
	}
	cmd.expect("ready", 5*time.Second)
	tr := attach(t, cmd.pid)
	ctx := context.Background()
	if err := tr.StopAll(ctx); err != nil {
		t.Fatal(err)
	}
	maps, err := ReadMaps(cmd.pid)
	if err != nil {
		t.Fatal(err)
	}
	var frameErr error
	tr.do(ctx, func() error {
		g, err := tr.findGadgets()
		if err != nil {
			return err
		}
		_, frameErr = tr.writeRestoreFrame(tr.threads[tiny], g, maps)
		return nil
	})
	if frameErr == nil || !strings.Contains(frameErr.Error(), "does not fit") {
		t.Fatalf("restore frame on the tiny stack: %v, want a does-not-fit error", frameErr)
	}
	before := regsOf(t, tr)
	tr.preferTid = tiny
	got, err := tr.Syscall(ctx, unix.SYS_GETTID)
	if err != nil {
		t.Fatal(err)
	}
	if int(got) == tiny {
		t.Fatalf("remote gettid ran on the tiny-stack thread %d", tiny)
	}
	if _, ok := before[int(got)]; !ok {
		t.Fatalf("remote gettid ran on %d, not a stopped thread", got)
	}
	after := regsOf(t, tr)
	for tid, r := range before {
		if after[tid] != r {
			t.Fatalf("thread %d registers changed", tid)
		}
	}
	if _, err := tr.Resume(); err != nil {
		t.Fatal(err)
	}
	cmd.stdin.Close()
	cmd.expect("bye", 5*time.Second)
}

// TestSyscallAbandoned: a remote call that blocks is given up when its
// context expires; the thread that made it goes back to exactly what it was
// doing (here: reading stdin), with no EINTR.
func TestSyscallAbandoned(t *testing.T) {
	testenv.NeedRoot(t)
	tg := startTarget(t, targetBin(t), "2")
	// fd 3 is the read end of a pipe nobody ever writes to.
	if l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/3", tg.pid)); err != nil || !strings.HasPrefix(l, "pipe:") {
		t.Fatalf("fd 3 of the target is %q, %v; want a pipe", l, err)
	}
	tr := attach(t, tg.pid)
	ctx := context.Background()
	if _, err := tr.StopOne(ctx); err != nil {
		t.Fatal(err)
	}
	buf, err := tr.Syscall(ctx, unix.SYS_MMAP, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0)
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = tr.Syscall(cctx, unix.SYS_READ, 3, buf, 1)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("blocking remote read: %v, want the context's deadline", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("abandoning the call took %v", d)
	}
	if _, err := tr.Resume(); err != nil {
		t.Fatal(err)
	}
	if tt := waitUntraced(tg.pid); len(tt) != 0 {
		t.Fatalf("threads %v still traced", tt)
	}
	b, s := tg.status() // the main thread reads stdin again
	tg.waitProgress(b+1, s+1)
	tg.finish()
}

// Gadgets found in one process are looked for at the same place in the
// next; a remembered place whose bytes are wrong in this process is not
// used: the search runs again and the call still works.
func TestGadgetHints(t *testing.T) {
	testenv.NeedRoot(t)
	ctx := context.Background()
	call := func() {
		t.Helper()
		tg := startTarget(t, targetBin(t), "1")
		tr := attach(t, tg.pid)
		if _, err := tr.StopOne(ctx); err != nil {
			t.Fatal(err)
		}
		pid, err := tr.Syscall(ctx, unix.SYS_GETPID)
		if err != nil || int(pid) != tg.pid {
			t.Fatalf("remote getpid = %d, %v; want %d", pid, err, tg.pid)
		}
	}
	call()
	gadgetHints.Lock()
	h := gadgetHints.syscallRet
	gadgetHints.Unlock()
	if h.path == "" {
		t.Fatal("no place remembered after a search")
	}
	tg := startTarget(t, targetBin(t), "1")
	maps, err := ReadMaps(tg.pid)
	if err != nil {
		t.Fatal(err)
	}
	mem, err := OpenMem(tg.pid)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	g := hintedGadgets(mem, maps)
	if g == nil {
		t.Fatal("the remembered places were not found in a second process of the same program")
	}
	// Point the hint one byte off: the bytes there are not `syscall; ret`.
	gadgetHints.Lock()
	gadgetHints.syscallRet.fileOffset++
	gadgetHints.Unlock()
	if hintedGadgets(mem, maps) != nil {
		t.Fatal("a hint whose bytes are wrong was used")
	}
	call()
	gadgetHints.Lock()
	fixed := gadgetHints.syscallRet == h
	gadgetHints.Unlock()
	if !fixed {
		t.Error("the search after a wrong hint did not remember the right place")
	}
}
