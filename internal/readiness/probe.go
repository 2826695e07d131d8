package readiness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// ProbeEnv, set to 1 in the environment, makes the binary a probe target: the
// proc-mem check re-executes the running binary with it and attaches to the
// child.
const ProbeEnv = "HOTFLEET_READINESS_PROBE"

const (
	// probeReady is the line a probe target prints once it runs its own code,
	// so the probe does not attach to the half-started child before exec.
	probeReady = "hotfleet-readiness-probe-ready"
	// probeTargetLifetime bounds a probe target whose parent forgot it: the
	// probe takes milliseconds.
	probeTargetLifetime = 10 * time.Second
	// probeStartTimeout bounds the wait for the child to start: a loaded
	// device may be slow to exec, but not this slow.
	probeStartTimeout = 5 * time.Second
	// probeStopTimeout bounds the wait for the attached process to stop after
	// PTRACE_INTERRUPT; a thread in uninterruptible sleep (D state, NFS) may
	// take a while, and the probe must not hang the agent.
	probeStopTimeout = 3 * time.Second
)

// ProbeTargetMain is called at the very start of main() when ProbeEnv is set:
// it blocks until stdin closes or 10 s pass, then exits 0.
func ProbeTargetMain() {
	fmt.Fprintln(os.Stdout, probeReady)
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(probeTargetLifetime):
	}
	os.Exit(0)
}

// forceOverride returns the proc_mem.force_override= boot parameter (Linux
// 6.12+), "" when absent. "never" makes /proc/PID/mem writes respect page
// protections, so the read-only, executable pages a patch rewrites cannot be
// written; "ptrace" allows it to an attached tracer, which the patcher is.
func (s sys) forceOverride() string {
	data, err := s.readFile("/proc/cmdline")
	if err != nil {
		return ""
	}
	var v string
	for _, f := range strings.Fields(string(data)) {
		if x, ok := strings.CutPrefix(f, "proc_mem.force_override="); ok {
			v = x // the last one on the command line wins
		}
	}
	return v
}

func (s sys) checkProcMem(ctx context.Context, opts Options) Check {
	const name = "proc-mem"
	fo := s.forceOverride()
	if fo == "never" {
		return fail(name, "proc_mem.force_override=never",
			"the kernel was booted with proc_mem.force_override=never, so /proc/PID/mem cannot write the read-only code pages a patch replaces",
			"remove proc_mem.force_override=never from the kernel command line (or set it to ptrace) and reboot")
	}
	if !opts.Probe {
		return Check{Name: name, OK: true, Detail: "not probed"}
	}
	var detail string
	var err error
	if opts.ProbePID > 0 {
		detail, err = probe(ctx, opts.ProbePID, false)
	} else {
		detail, err = probeChild(ctx)
	}
	if err != nil {
		return fail(name, detail, err.Error(), probeAction(err))
	}
	return Check{Name: name, OK: true, Detail: detail}
}

func probeAction(err error) string {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return "give the agent CAP_SYS_PTRACE, then look for the denial in the kernel log (dmesg): Yama ptrace_scope, SELinux deny_ptrace or an AppArmor profile confining the agent"
	case errors.Is(err, unix.EIO), errors.Is(err, unix.EFAULT):
		return "the kernel refused a forced write to a read-only page; check proc_mem.force_override on the kernel command line and any LSM restricting /proc/PID/mem"
	default:
		return "run hotfleet readiness --probe as root to see the failure, and report it to the hotfleet developers if it persists"
	}
}

// probeChild re-executes this binary as a harmless probe target and probes it.
func probeChild(ctx context.Context) (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find the running binary to start the probe target: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, probeTargetLifetime)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(os.Environ(), ProbeEnv+"=1")
	// No Pdeathsig: it fires when the forking OS thread exits, which a Go
	// program does whenever a locked goroutine ends, not when we do. The
	// child ends by itself when our end of its stdin closes, as it does
	// when we die, or after probeTargetLifetime.
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", fmt.Errorf("start probe target %s: %w", exe, err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", fmt.Errorf("start probe target %s: %w", exe, err)
	}
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("start probe target %s: %w", exe, err)
	}
	defer func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	ready := make(chan error, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err == nil && strings.TrimSpace(line) != probeReady {
			err = fmt.Errorf("it printed %q instead of %q (is ProbeTargetMain wired into main?)", line, probeReady)
		}
		ready <- err
	}()
	select {
	case err := <-ready:
		if err != nil {
			return "", fmt.Errorf("start probe target %s: %w", exe, err)
		}
	case <-time.After(probeStartTimeout):
		return "", fmt.Errorf("start probe target %s: not ready after %v", exe, probeStartTimeout)
	case <-ctx.Done():
		return "", fmt.Errorf("start probe target %s: %w", exe, ctx.Err())
	}
	return probe(ctx, cmd.Process.Pid, true)
}

// probe attaches to pid the way the patcher does (PTRACE_SEIZE, then
// PTRACE_INTERRUPT), rewrites one byte of its code through /proc/PID/mem with
// the value read from it, and detaches. With ownChild it also rewrites a byte
// of a writable mapping; a process we did not start is spared that, since one
// of its running threads could store to the same byte between our read and
// write. Every ptrace request comes from one locked OS thread, as the kernel
// requires of a tracer.
func probe(ctx context.Context, pid int, ownChild bool) (string, error) {
	type result struct {
		detail string
		err    error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		d, attached, err := probeLocked(ctx, pid, ownChild)
		// A thread still attached to the process after a failed probe stays
		// locked and dies with the goroutine: its exit makes the kernel
		// detach. A clean thread goes back to the pool, since a thread's
		// exit also SIGKILLs children started from it with Pdeathsig.
		if !attached {
			runtime.UnlockOSThread()
		}
		ch <- result{d, err}
	}()
	r := <-ch
	return r.detail, r.err
}

func probeLocked(ctx context.Context, pid int, ownChild bool) (detail string, attached bool, err error) {
	if err := unix.PtraceSeize(pid); err != nil {
		return "", false, fmt.Errorf("attach to pid %d (PTRACE_SEIZE): %w", pid, err)
	}
	attached = true
	defer func() {
		if attached && unix.PtraceDetach(pid) == nil {
			attached = false
		}
	}()
	if err := unix.PtraceInterrupt(pid); err != nil {
		return "", attached, fmt.Errorf("stop pid %d (PTRACE_INTERRUPT): %w", pid, err)
	}
	start := time.Now()
	if err := waitStop(ctx, pid); err != nil {
		return "", attached, err
	}
	stopped := time.Since(start)

	maps, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/maps")
	if err != nil {
		return "", attached, fmt.Errorf("read memory map of pid %d: %w", pid, err)
	}
	text, data := pickMappings(string(maps))
	if text == 0 {
		return "", attached, fmt.Errorf("pid %d has no file-backed executable mapping to probe", pid)
	}
	mem, err := os.OpenFile("/proc/"+strconv.Itoa(pid)+"/mem", os.O_RDWR, 0)
	if err != nil {
		return "", attached, fmt.Errorf("open /proc/%d/mem for writing: %w", pid, err)
	}
	defer mem.Close()
	if err := rewriteByte(mem, pid, text, "code"); err != nil {
		return "", attached, err
	}
	what := "code"
	if ownChild {
		if data == 0 {
			return "", attached, fmt.Errorf("pid %d has no writable mapping to probe", pid)
		}
		if err := rewriteByte(mem, pid, data, "writable memory"); err != nil {
			return "", attached, err
		}
		what = "code and writable memory"
	}
	if err := unix.PtraceDetach(pid); err != nil {
		return "", attached, fmt.Errorf("detach from pid %d: %w", pid, err)
	}
	attached = false
	return fmt.Sprintf("attached to pid %d, stopped it in %v, rewrote %s through /proc/PID/mem", pid, stopped.Round(time.Microsecond), what), false, nil
}

// waitStop waits for the interrupt stop of a seized process without blocking
// forever in wait4.
func waitStop(ctx context.Context, pid int) error {
	deadline := time.Now().Add(probeStopTimeout)
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(pid, &ws, unix.WNOHANG|unix.WALL, nil)
		if err != nil && err != unix.EINTR {
			return fmt.Errorf("wait for pid %d to stop: %w", pid, err)
		}
		if got == pid {
			if ws.Stopped() {
				return nil
			}
			if ws.Exited() || ws.Signaled() {
				return fmt.Errorf("pid %d exited while being probed (%v)", pid, ws)
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d did not stop within %v of PTRACE_INTERRUPT (a thread in uninterruptible sleep?)", pid, probeStopTimeout)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("wait for pid %d to stop: %w", pid, ctx.Err())
		}
		time.Sleep(time.Millisecond)
	}
}

// pickMappings returns the start of the first file-backed read-only
// executable mapping and of the first ordinary writable mapping.
func pickMappings(maps string) (text, data uint64) {
	for _, line := range strings.Split(maps, "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || len(f[1]) < 3 {
			continue
		}
		lo, _, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err := strconv.ParseUint(lo, 16, 64)
		if err != nil {
			continue
		}
		path := ""
		if len(f) >= 6 {
			path = f[5]
		}
		perms := f[1]
		if text == 0 && perms[0] == 'r' && perms[1] == '-' && perms[2] == 'x' && strings.HasPrefix(path, "/") {
			text = start
		}
		// Kernel-provided mappings ([vvar], [vdso], [vsyscall]) are not memory
		// a patch writes; the heap and the program's data are.
		if data == 0 && perms[0] == 'r' && perms[1] == 'w' && !strings.HasPrefix(path, "[v") {
			data = start
		}
	}
	return text, data
}

func rewriteByte(mem *os.File, pid int, addr uint64, what string) error {
	b := make([]byte, 1)
	if _, err := mem.ReadAt(b, int64(addr)); err != nil {
		return fmt.Errorf("read %s of pid %d at %#x through /proc/PID/mem: %w", what, pid, addr, err)
	}
	if _, err := mem.WriteAt(b, int64(addr)); err != nil {
		return fmt.Errorf("write %s of pid %d at %#x through /proc/PID/mem: %w", what, pid, addr, err)
	}
	c := make([]byte, 1)
	if _, err := mem.ReadAt(c, int64(addr)); err != nil || c[0] != b[0] {
		return fmt.Errorf("read back %s of pid %d at %#x: got %#x, wrote %#x (%v)", what, pid, addr, c[0], b[0], err)
	}
	return nil
}
