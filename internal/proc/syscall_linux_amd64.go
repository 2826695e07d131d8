package proc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	// redZone is the x86-64 ABI's 128 bytes below rsp that leaf code may use
	// without moving rsp; the restore frame goes below it.
	redZone = 128
	// sigframeSize is sizeof(struct rt_sigframe) on x86-64: pretcode (8),
	// struct ucontext (304), struct siginfo (128).
	sigframeSize = 8 + 304 + 128
	// maxXstate bounds the XSAVE area read from a thread: AVX-512 needs about
	// 2.7 KiB and AMX tile data adds 8 KiB; 64 KiB leaves room for new features.
	maxXstate = 64 << 10
	// maxGadgetScan bounds how many bytes of executable memory are searched
	// for the syscall gadgets; libc's text is about 2 MiB.
	maxGadgetScan = 256 << 20
	// gadgetChunk is the read size while scanning for gadgets.
	gadgetChunk = 1 << 20

	fpXstateMagic1 = 0x46505853
	fpXstateMagic2 = 0x46505845
	swReservedOff  = 464 // offset of sw_reserved in the legacy FXSAVE area
	xsaveMinSize   = 512 + 64
	// xfeatureDynamic marks XTILEDATA (AMX), enabled per process on request.
	xfeatureDynamic = 1 << 18

	ucFPXstate        = 1
	ucSigcontextSS    = 2
	ucStrictRestoreSS = 4
	ssFlagsInvalid    = 3 // neither SS_ONSTACK, SS_DISABLE nor 0: rt_sigreturn leaves the altstack alone
	errRestartSys     = -512
	errRestartNoIntr  = -513
	errRestartNoHand  = -514
	errRestartBlock   = -516
	syscallInsnSize   = 2
	maxErrno          = 4095
	maxSyscallArgs    = 6
	maxOtherStops     = 16 // unrelated stops (signals, late interrupts) tolerated per call
)

var (
	// syscallRet is `syscall; ret`: the vDSO's fallback paths and libc's
	// wrappers hold it.
	syscallRet = []byte{0x0f, 0x05, 0xc3}
	// sigreturnGadgets perform rt_sigreturn: glibc's and musl's __restore_rt.
	sigreturnGadgets = [][]byte{
		{0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05}, // mov $15,%rax; syscall
		{0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05},             // mov $15,%eax; syscall
	}
)

// gadgets are code addresses inside the target that remote system calls use;
// hotfleet never writes code into the target.
type gadgets struct {
	syscallRet uint64 // G1: syscall; ret
	sigreturn  uint64 // G2: rt_sigreturn restorer, 0 when none was found
	g2         []byte // the bytes found at sigreturn, to re-check before use
}

// testHook, when set (only by tests), runs at named points of a remote
// system call so that a test can kill the process at that instant.
var testHook func(point string)

func hook(point string) {
	if testHook != nil {
		testHook(point)
	}
}

// Syscall makes system call nr with args in the target, on a stopped thread,
// and returns its result. It needs StopOne or StopAll first. A result in
// [-4095, -1] is returned as an error wrapping the unix.Errno.
//
// It is crash-safe: while the thread's registers are changed, its stack
// holds a signal frame that restores the original registers, so that if
// hotfleet dies the thread finishes the call and returns exactly to where it
// was (see docs/proc.md).
func (t *Tracer) Syscall(ctx context.Context, nr int, args ...uint64) (uint64, error) {
	var ret uint64
	err := t.do(ctx, func() error {
		var err error
		ret, err = t.syscall(ctx, nr, args)
		return t.exitedOr(err)
	})
	return ret, err
}

func (t *Tracer) syscall(ctx context.Context, nr int, args []uint64) (uint64, error) {
	name := syscallName(nr)
	if len(args) > maxSyscallArgs {
		return 0, fmt.Errorf("remote %s in pid %d: %d arguments, at most %d", name, t.pid, len(args), maxSyscallArgs)
	}
	var cands []*thread
	first := t.pid
	if t.preferTid != 0 {
		first = t.preferTid
	}
	if th := t.threads[first]; th != nil && th.stopped {
		cands = append(cands, th)
	}
	for _, tid := range t.order {
		if th := t.threads[tid]; th != nil && th.stopped && tid != first {
			cands = append(cands, th)
		}
	}
	if len(cands) == 0 {
		return 0, fmt.Errorf("remote %s in pid %d: no thread is stopped; call StopOne or StopAll first", name, t.pid)
	}
	g, err := t.findGadgets()
	if err != nil {
		return 0, fmt.Errorf("remote %s in pid %d: %w", name, t.pid, err)
	}
	maps, err := ReadMaps(t.pid)
	if err != nil {
		return 0, fmt.Errorf("remote %s in pid %d: %w", name, t.pid, err)
	}

	var th *thread
	var frame uint64
	var why []string
	for _, c := range cands {
		f, err := t.writeRestoreFrame(c, g, maps)
		if err == nil {
			th, frame = c, f
			break
		}
		why = append(why, fmt.Sprintf("thread %d: %v", c.tid, err))
	}
	if th == nil {
		th = cands[0]
		t.log.Warn("remote system call is not crash-safe: no thread can hold a restore frame; if hotfleet dies during it the thread resumes at the syscall gadget",
			"pid", t.pid, "syscall", name, "reasons", strings.Join(why, "; "))
	}

	regs := th.regs
	regs.Rip = g.syscallRet
	regs.Rax = uint64(nr)
	regs.Orig_rax = ^uint64(0) // -1: the kernel must not restart the injected state as a syscall
	argRegs := []*uint64{&regs.Rdi, &regs.Rsi, &regs.Rdx, &regs.R10, &regs.R8, &regs.R9}
	for i := range argRegs {
		*argRegs[i] = 0
		if i < len(args) {
			*argRegs[i] = args[i]
		}
	}
	if frame != 0 {
		regs.Rsp = frame
	}
	th.changed = true
	if err := unix.PtraceSetRegs(th.tid, &regs); err != nil {
		return 0, t.failSyscall(th, name, fmt.Errorf("set registers: %w", err))
	}
	hook("after-setregs")
	cur, where, err := t.runInjected(ctx, th, g)
	if err != nil {
		if where != atInterrupt && frame != 0 && !errors.Is(err, ErrExited) {
			t.abandon(th, g, where)
		}
		return 0, t.failSyscall(th, name, err)
	}
	if err := unix.PtraceSetRegs(th.tid, &th.regs); err != nil {
		return 0, t.failSyscall(th, name, fmt.Errorf("restore registers: %w", err))
	}
	th.changed = false
	if r := int64(cur.Rax); r < 0 && r >= -maxErrno {
		return 0, fmt.Errorf("remote %s in pid %d failed: %w", name, t.pid, unix.Errno(-r))
	}
	return cur.Rax, nil
}

// abandon gives up a remote call whose thread is inside the injected call
// or running towards it, where putting the original registers back would
// not restart the thread's own interrupted call right. The thread is kicked
// out of the call if it blocks, and told not to restart it (orig_rax = -1);
// once detached (by Resume, or at the latest by Close) it returns through
// the restore frame exactly to where it was.
func (t *Tracer) abandon(th *thread, g *gadgets, where threadAt) {
	th.changed = false // the restore frame owns the registers now
	if where == running {
		th.stopped = false
		if err := unix.PtraceInterrupt(th.tid); err != nil {
			return
		}
		ws, err := t.waitTid(context.Background(), th.tid, stopTimeout)
		if err != nil || !ws.Stopped() {
			return // Resume waits for the stop, Close releases it at the latest
		}
		th.stopped = true
		if int(ws)>>16 != unix.PTRACE_EVENT_STOP && int(ws.StopSignal()) != int(unix.SIGTRAP)|0x80 {
			th.hold(int(ws.StopSignal()))
		}
	}
	var cur unix.PtraceRegs
	if unix.PtraceGetRegs(th.tid, &cur) != nil || cur.Rip != g.syscallRet+syscallInsnSize {
		return
	}
	cur.Orig_rax = ^uint64(0)
	_ = unix.PtraceSetRegs(th.tid, &cur)
}

// failSyscall puts the thread's registers back (Resume retries if this
// fails) and explains the failure.
func (t *Tracer) failSyscall(th *thread, name string, err error) error {
	if _, ok := t.threads[th.tid]; ok && th.changed && th.stopped {
		if serr := unix.PtraceSetRegs(th.tid, &th.regs); serr == nil {
			th.changed = false
		}
	}
	if errors.Is(err, ErrExited) {
		return fmt.Errorf("remote %s in pid %d: %w", name, t.pid, err)
	}
	return fmt.Errorf("remote %s in pid %d on thread %d: %w", name, t.pid, th.tid, err)
}

// threadAt says where a thread is during a remote call.
type threadAt int

const (
	atInterrupt threadAt = iota // interrupt stop: original registers can be put back
	atSyscall                   // syscall-entry or -exit stop of the injected call
	atSignal                    // signal-delivery-stop
	running                     // resumed, not yet reported stopped again
)

// runInjected runs the injected `syscall` instruction of th and returns
// the registers right after it, leaving th in an interrupt stop.
//
// It runs the thread to the syscall-entry and syscall-exit stops rather than
// single-stepping: a single step ends in a SIGTRAP signal-delivery-stop, and
// if hotfleet died there the kernel would deliver that SIGTRAP to the target
// and kill it. Syscall stops report SIGTRAP|0x80 (PTRACE_O_TRACESYSGOOD),
// which the kernel does not turn into a signal when the tracer dies. The
// thread then goes back to an interrupt stop, which is also safe to be
// abandoned in, before its original registers are put back.
func (t *Tracer) runInjected(ctx context.Context, th *thread, g *gadgets) (cur unix.PtraceRegs, where threadAt, err error) {
	where = atInterrupt
	if err := unix.PtraceSetOptions(th.tid, unix.PTRACE_O_TRACESYSGOOD); err != nil {
		return cur, where, t.ptraceErr(th, "set ptrace options", err)
	}
	const sysStop = int(unix.SIGTRAP) | 0x80
	stops := 0 // 0: before entry, 1: at entry, 2: at exit
	for tries := 0; stops < 2; tries++ {
		if tries >= maxOtherStops {
			return cur, where, fmt.Errorf("more than %d other stops came before the call finished; retry", maxOtherStops)
		}
		if err := ptrace(unix.PTRACE_SYSCALL, th.tid, 0, 0); err != nil {
			return cur, where, t.ptraceErr(th, "resume into the call", err)
		}
		where = running
		ws, err := t.waitTid(ctx, th.tid, stepTimeout)
		if err != nil {
			return cur, where, err
		}
		switch {
		case ws.Exited() || ws.Signaled():
			return cur, where, t.threadGone(th)
		case !ws.Stopped():
		case int(ws)>>16 == unix.PTRACE_EVENT_STOP:
			// A late interrupt stop; the thread has not moved.
			where = atInterrupt
		case int(ws.StopSignal()) == sysStop:
			where = atSyscall
			stops++
			th.inSig = false
			if stops == 1 {
				hook("at-entry")
			}
		default:
			// A signal arrived: keep it for the target, do not deliver it now.
			th.hold(int(ws.StopSignal()))
			th.inSig = false
			where = atSignal
		}
	}
	hook("at-exit")
	if err := unix.PtraceGetRegs(th.tid, &cur); err != nil {
		return cur, where, t.ptraceErr(th, "read registers", err)
	}
	if cur.Rip != g.syscallRet+syscallInsnSize {
		return cur, where, fmt.Errorf("after the call the thread is at %#x, not %#x after the syscall instruction", cur.Rip, g.syscallRet+syscallInsnSize)
	}
	// Park the thread in an interrupt stop: there, its original registers
	// take effect through the kernel's own syscall-restart logic, whether
	// hotfleet detaches it or dies.
	if err := unix.PtraceInterrupt(th.tid); err != nil {
		return cur, where, t.ptraceErr(th, "interrupt", err)
	}
	if err := ptrace(unix.PTRACE_CONT, th.tid, 0, 0); err != nil {
		return cur, where, t.ptraceErr(th, "resume to the interrupt stop", err)
	}
	where = running
	for tries := 0; ; tries++ {
		if tries >= maxOtherStops {
			return cur, where, fmt.Errorf("more than %d other stops came before the interrupt stop; retry", maxOtherStops)
		}
		ws, err := t.waitTid(ctx, th.tid, stepTimeout)
		if err != nil {
			return cur, where, err
		}
		switch {
		case ws.Exited() || ws.Signaled():
			return cur, where, t.threadGone(th)
		case ws.Stopped() && int(ws)>>16 == unix.PTRACE_EVENT_STOP:
			where = atInterrupt
			hook("parked")
			return cur, where, nil
		case ws.Stopped():
			th.hold(int(ws.StopSignal()))
			if err := ptrace(unix.PTRACE_CONT, th.tid, 0, 0); err != nil {
				return cur, atSignal, t.ptraceErr(th, "resume to the interrupt stop", err)
			}
		}
	}
}

func (t *Tracer) ptraceErr(th *thread, what string, err error) error {
	if errors.Is(err, unix.ESRCH) && !processAlive(t.pid) {
		t.forget(th.tid)
		th.changed = false
		return ExitedError{Pid: t.pid}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// threadGone forgets an exited thread and says whether the process is gone.
func (t *Tracer) threadGone(th *thread) error {
	t.forget(th.tid)
	th.changed = false
	if !processAlive(t.pid) {
		return ExitedError{Pid: t.pid}
	}
	return fmt.Errorf("thread %d exited during the call; retry", th.tid)
}

// waitTid waits for one wait status of tid, polling so that ctx and the
// timeout are honoured.
func (t *Tracer) waitTid(ctx context.Context, tid int, timeout time.Duration) (unix.WaitStatus, error) {
	deadline := time.Now().Add(timeout)
	p := poller{realtime: t.realtime}
	for {
		var ws unix.WaitStatus
		wpid, err := unix.Wait4(tid, &ws, unix.WNOHANG|unix.WALL, nil)
		if err != nil && !errors.Is(err, unix.EINTR) {
			if errors.Is(err, unix.ECHILD) {
				var zero unix.WaitStatus
				return zero, t.threadGone(&thread{tid: tid})
			}
			return ws, fmt.Errorf("wait for thread %d: %w", tid, err)
		}
		if wpid == tid {
			return ws, nil
		}
		if err := ctx.Err(); err != nil {
			return ws, err
		}
		if time.Now().After(deadline) {
			return ws, fmt.Errorf("thread %d did not finish the call within %v", tid, timeout)
		}
		p.wait()
	}
}

// findGadgets finds (once, re-checked on every use) G1 and G2 in executable
// mappings: the vDSO first, then libc, then any other.
func (t *Tracer) findGadgets() (*gadgets, error) {
	if g := t.gadgets; g != nil {
		var b1 [3]byte
		b2 := make([]byte, len(g.g2))
		if t.mem.ReadAt(b1[:], g.syscallRet) == nil && bytes.Equal(b1[:], syscallRet) &&
			(g.sigreturn == 0 || t.mem.ReadAt(b2, g.sigreturn) == nil && bytes.Equal(b2, g.g2)) {
			return g, nil
		}
		t.gadgets = nil // a library was unmapped; search again
	}
	maps, err := ReadMaps(t.pid)
	if err != nil {
		return nil, err
	}
	if g := hintedGadgets(t.mem, maps); g != nil {
		t.gadgets = g
		return g, nil
	}
	rank := func(m Mapping) int {
		base := m.Name()
		if i := strings.LastIndexByte(base, '/'); i >= 0 {
			base = base[i+1:]
		}
		switch {
		case m.Path == "[vdso]":
			return 0
		case strings.HasPrefix(base, "libc.so") || strings.HasPrefix(base, "libc-") || strings.HasPrefix(base, "ld-musl"):
			return 1
		}
		return 2
	}
	var ordered []Mapping
	for r := 0; r <= 2; r++ {
		for _, m := range maps {
			if m.Exec() && m.Readable() && rank(m) == r {
				ordered = append(ordered, m)
			}
		}
	}
	g := &gadgets{}
	scanned := uint64(0)
	for _, m := range ordered {
		if g.syscallRet != 0 && g.sigreturn != 0 {
			break
		}
		for a := m.Start; a < m.End && scanned < maxGadgetScan; {
			n := min(uint64(gadgetChunk), m.End-a)
			// Overlap chunks so a gadget across a boundary is found.
			buf := make([]byte, n)
			if err := t.mem.ReadAt(buf, a); err != nil {
				break
			}
			scanned += n
			if g.syscallRet == 0 {
				if i := bytes.Index(buf, syscallRet); i >= 0 {
					g.syscallRet = a + uint64(i)
				}
			}
			if g.sigreturn == 0 {
				for _, pat := range sigreturnGadgets {
					if i := bytes.Index(buf, pat); i >= 0 {
						g.sigreturn, g.g2 = a+uint64(i), pat
						break
					}
				}
			}
			if n < gadgetChunk || g.syscallRet != 0 && g.sigreturn != 0 {
				break
			}
			a += n - 16
		}
	}
	if g.syscallRet == 0 {
		return nil, fmt.Errorf("no `syscall; ret` instruction pair in any executable mapping; remote system calls are impossible in this process")
	}
	t.gadgets = g
	rememberGadgets(maps, g)
	return g, nil
}

// gadgetHints remembers where the gadgets were found last, as a place in a
// file (or in the vDSO): every process maps the same vDSO, loader and libc,
// and a search reads up to megabytes of the target, the first remote call's
// biggest cost (about a millisecond for a process that just started). A hint
// is used only after the bytes at it in this process are checked, so a
// wrong hint costs a search, never a wrong call.
var gadgetHints struct {
	sync.Mutex
	syscallRet, sigreturn gadgetHint
	g2                    []byte
}

// gadgetHint is a place in a mapped file: the vDSO by its name, a file by
// device and inode.
type gadgetHint struct {
	path       string
	dev        string
	inode      uint64
	fileOffset uint64
}

func hintFor(maps []Mapping, addr uint64) gadgetHint {
	for _, m := range maps {
		if addr >= m.Start && addr < m.End && (m.Inode != 0 || m.Path == "[vdso]") {
			return gadgetHint{path: m.Path, dev: m.Dev, inode: m.Inode, fileOffset: m.Offset + addr - m.Start}
		}
	}
	return gadgetHint{}
}

func (h gadgetHint) resolve(maps []Mapping) uint64 {
	if h.path == "" {
		return 0
	}
	for _, m := range maps {
		if !m.Exec() || m.Inode != h.inode || m.Dev != h.dev || (m.Inode == 0 && m.Path != h.path) {
			continue
		}
		if h.fileOffset >= m.Offset && h.fileOffset < m.Offset+(m.End-m.Start) {
			return m.Start + h.fileOffset - m.Offset
		}
	}
	return 0
}

func rememberGadgets(maps []Mapping, g *gadgets) {
	gadgetHints.Lock()
	defer gadgetHints.Unlock()
	gadgetHints.syscallRet = hintFor(maps, g.syscallRet)
	gadgetHints.sigreturn, gadgetHints.g2 = gadgetHint{}, nil
	if g.sigreturn != 0 {
		gadgetHints.sigreturn, gadgetHints.g2 = hintFor(maps, g.sigreturn), g.g2
	}
}

// hintedGadgets returns the gadgets at the remembered places when both are
// mapped in this process and hold the right bytes; nil means search.
func hintedGadgets(mem *Mem, maps []Mapping) *gadgets {
	gadgetHints.Lock()
	h1, h2, g2 := gadgetHints.syscallRet, gadgetHints.sigreturn, gadgetHints.g2
	gadgetHints.Unlock()
	a1, a2 := h1.resolve(maps), h2.resolve(maps)
	if a1 == 0 || a2 == 0 {
		return nil
	}
	var b1 [3]byte
	b2 := make([]byte, len(g2))
	if mem.ReadAt(b1[:], a1) != nil || !bytes.Equal(b1[:], syscallRet) || mem.ReadAt(b2, a2) != nil || !bytes.Equal(b2, g2) {
		return nil
	}
	return &gadgets{syscallRet: a1, sigreturn: a2, g2: g2}
}

// writeRestoreFrame writes below th's red zone an rt_sigframe (and the XSAVE
// area it points to) that restores th's original registers, FP state and
// signal mask, and returns the frame's address. With rsp at the frame, the
// thread runs `syscall; ret` -> G2 -> rt_sigreturn -> exactly where it was.
func (t *Tracer) writeRestoreFrame(th *thread, g *gadgets, maps []Mapping) (uint64, error) {
	if g.sigreturn == 0 {
		return 0, errors.New("no rt_sigreturn restorer found in the process")
	}
	if shadowStackOn(t.pid, th.tid) {
		return 0, errors.New("the thread runs with a CET shadow stack, which a faked return would violate")
	}
	o := th.regs
	sp := o.Rsp
	var stack *Mapping
	for i := range maps {
		if sp > maps[i].Start && sp <= maps[i].End {
			stack = &maps[i]
			break
		}
	}
	if stack == nil || len(stack.Perms) < 2 || stack.Perms[1] != 'w' {
		return 0, fmt.Errorf("stack pointer %#x is not in a writable mapping", sp)
	}

	xs, err := readXstate(th.tid)
	if err != nil {
		return 0, err
	}
	mask, err := sigBlocked(t.pid, th.tid)
	if err != nil {
		return 0, err
	}
	if sp < redZone+uint64(len(xs))+sigframeSize+128 {
		return 0, fmt.Errorf("stack pointer %#x too low for a restore frame", sp)
	}
	fpAddr := (sp - redZone - uint64(len(xs))) &^ 63
	frame := (fpAddr-sigframeSize)&^15 - 8
	if frame < stack.Start {
		return 0, fmt.Errorf("the restore frame (%d bytes) does not fit in the stack mapping [%#x, %#x) below rsp %#x",
			sp-frame, stack.Start, stack.End, sp)
	}

	// The state to go back to. A thread stopped on the way out of an
	// interrupted restartable syscall would have it restarted by the kernel
	// when resumed; rt_sigreturn turns that logic off, so the frame itself
	// re-executes the syscall instruction with the original number.
	ip, ax := o.Rip, o.Rax
	if int64(o.Orig_rax) >= 0 {
		switch int64(o.Rax) {
		case errRestartSys, errRestartNoIntr, errRestartNoHand, errRestartBlock:
			// rt_sigreturn also resets the restart block, so restart_syscall
			// would fail with EINTR: re-issue the original call instead.
			ip, ax = o.Rip-syscallInsnSize, o.Orig_rax
		}
	}

	f := make([]byte, sigframeSize)
	le := binary.LittleEndian
	le.PutUint64(f[0:], g.sigreturn)                                 // pretcode
	le.PutUint64(f[8:], ucFPXstate|ucSigcontextSS|ucStrictRestoreSS) // uc_flags
	le.PutUint64(f[16:], 0)                                          // uc_link
	le.PutUint64(f[24:], 0)                                          // uc_stack.ss_sp
	le.PutUint32(f[32:], ssFlagsInvalid)                             // uc_stack.ss_flags
	le.PutUint64(f[40:], 0)                                          // uc_stack.ss_size
	sc := f[48:]
	for i, v := range []uint64{o.R8, o.R9, o.R10, o.R11, o.R12, o.R13, o.R14, o.R15,
		o.Rdi, o.Rsi, o.Rbp, o.Rbx, o.Rdx, ax, o.Rcx, o.Rsp, ip, o.Eflags} {
		le.PutUint64(sc[8*i:], v)
	}
	le.PutUint16(sc[144:], uint16(o.Cs))
	le.PutUint16(sc[150:], uint16(o.Ss))
	le.PutUint64(sc[184:], fpAddr) // fpstate
	le.PutUint64(f[304:], mask)    // uc_sigmask

	if err := t.mem.WriteAt(xs, fpAddr); err != nil {
		return 0, err
	}
	if err := t.mem.WriteAt(f, frame); err != nil {
		return 0, err
	}
	return frame, nil
}

// readXstate reads the thread's XSAVE area (standard format, as a signal
// frame holds it) and turns it into a signal frame's FP state: the software
// bytes of the FXSAVE area say it is an extended frame and how big, and
// FP_XSTATE_MAGIC2 follows it. ptrace leaves the user XCR0 in those bytes.
func readXstate(tid int) ([]byte, error) {
	buf := make([]byte, maxXstate)
	iov := unix.Iovec{Base: &buf[0]}
	iov.SetLen(len(buf))
	if err := ptrace(unix.PTRACE_GETREGSET, tid, unix.NT_X86_XSTATE, uintptr(unsafe.Pointer(&iov))); err != nil {
		return nil, fmt.Errorf("read XSAVE state of thread %d: %w", tid, err)
	}
	n := int(iov.Len)
	if n < xsaveMinSize || n > len(buf) {
		return nil, fmt.Errorf("XSAVE state of thread %d is %d bytes", tid, n)
	}
	le := binary.LittleEndian
	xcr0 := le.Uint64(buf[swReservedOff:])
	if xcr0&xfeatureDynamic != 0 {
		// The regset is sized for every feature, but a thread without AMX
		// permission restores a smaller frame; a size mismatch would make
		// rt_sigreturn silently drop the AVX state.
		return nil, fmt.Errorf("thread %d: the CPU has dynamically enabled XSAVE features (AMX)", tid)
	}
	out := make([]byte, n+4)
	copy(out, buf[:n])
	sw := out[swReservedOff : xsaveMinSize-64]
	clear(sw)
	le.PutUint32(sw[0:], fpXstateMagic1)
	le.PutUint32(sw[4:], uint32(n+4)) // extended_size: the area plus MAGIC2
	le.PutUint64(sw[8:], xcr0)        // xfeatures to restore
	le.PutUint32(sw[16:], uint32(n))  // xstate_size
	le.PutUint32(out[n:], fpXstateMagic2)
	return out, nil
}

// sigBlocked reads the thread's blocked signal mask.
func sigBlocked(pid, tid int) (uint64, error) {
	v := statusField(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid), "SigBlk")
	mask, err := strconv.ParseUint(v, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("read blocked signals of thread %d: %q", tid, v)
	}
	return mask, nil
}

// shadowStackOn reports whether the thread runs with a user shadow stack.
func shadowStackOn(pid, tid int) bool {
	v := statusField(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid), "x86_Thread_features")
	return strings.Contains(v, "shstk")
}

// eintrOnStop lists system calls that fail with EINTR, instead of being
// restarted, when the thread is merely stopped and resumed (signal(7)); the
// target would see a spurious EINTR from hotfleet's stop.
var eintrOnStop = map[uint64]bool{
	unix.SYS_EPOLL_WAIT: true, unix.SYS_EPOLL_PWAIT: true, unix.SYS_EPOLL_PWAIT2: true,
	unix.SYS_RT_SIGTIMEDWAIT: true, unix.SYS_SEMOP: true, unix.SYS_SEMTIMEDOP: true,
	unix.SYS_IO_GETEVENTS: true, unix.SYS_IO_PGETEVENTS: true,
}

// undoStopEINTR makes a thread that our interrupt knocked out of such a call
// re-issue it on resume, as if it had never been stopped: its registers
// point back at the syscall instruction with the call's number.
// When a real signal is pending the EINTR is genuine and stays.
func (t *Tracer) undoStopEINTR(th *thread) {
	r := &th.regs
	if int64(r.Rax) != -int64(unix.EINTR) || !eintrOnStop[r.Orig_rax] || th.sig != 0 || r.Rip < syscallInsnSize {
		return
	}
	status := fmt.Sprintf("/proc/%d/task/%d/status", t.pid, th.tid)
	blk, err1 := strconv.ParseUint(statusField(status, "SigBlk"), 16, 64)
	pnd, err2 := strconv.ParseUint(statusField(status, "SigPnd"), 16, 64)
	shd, err3 := strconv.ParseUint(statusField(status, "ShdPnd"), 16, 64)
	if err1 != nil || err2 != nil || err3 != nil || (pnd|shd)&^blk != 0 {
		return
	}
	// Written now, not at detach: if hotfleet dies while the thread is
	// stopped, the kernel resumes it with these registers.
	fixed := *r
	fixed.Rip -= syscallInsnSize
	fixed.Rax = r.Orig_rax
	if err := unix.PtraceSetRegs(th.tid, &fixed); err == nil {
		*r = fixed
	}
}

var syscallNames = map[int]string{
	unix.SYS_MMAP: "mmap", unix.SYS_MUNMAP: "munmap", unix.SYS_MPROTECT: "mprotect",
	unix.SYS_GETPID: "getpid", unix.SYS_GETTID: "gettid", unix.SYS_PRCTL: "prctl",
	unix.SYS_MADVISE: "madvise", unix.SYS_MREMAP: "mremap", unix.SYS_CLOSE: "close",
	unix.SYS_OPENAT: "openat", unix.SYS_MEMFD_CREATE: "memfd_create", unix.SYS_WRITE: "write",
	unix.SYS_READ: "read", unix.SYS_MSYNC: "msync",
}

func syscallName(nr int) string {
	if n, ok := syscallNames[nr]; ok {
		return n
	}
	return "syscall " + strconv.Itoa(nr)
}
