package proc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"hotfleet/internal/testenv"
)

// TestAlreadyTraced: a second tracer gets ErrAlreadyTraced naming the
// first, and the target is left running and untouched.
func TestAlreadyTraced(t *testing.T) {
	testenv.NeedRoot(t)
	tg := startTarget(t, targetBin(t), "2")
	// The first tracer is another process, as a debugger would be.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	holder := exec.Command(self, "-test.run=^$")
	holder.Env = append(os.Environ(), fmt.Sprintf("%s=hold %d", helperEnv, tg.pid))
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { holder.Process.Kill(); holder.Wait() }()
	buf := make([]byte, 64)
	n, _ := out.Read(buf)
	if !strings.HasPrefix(string(buf[:n]), "held") {
		t.Fatalf("holder said %q", buf[:n])
	}

	tr := attach(t, tg.pid)
	err = tr.StopAll(context.Background())
	if !errors.Is(err, ErrAlreadyTraced) {
		t.Fatalf("StopAll with another tracer: %v, want ErrAlreadyTraced", err)
	}
	want := fmt.Sprintf("pid %d is already traced by pid %d (proc.test); detach that debugger and retry", tg.pid, holder.Process.Pid)
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not say %q", err, want)
	}
	if _, err := tr.StopOne(context.Background()); !errors.Is(err, ErrAlreadyTraced) {
		t.Fatalf("StopOne with another tracer: %v, want ErrAlreadyTraced", err)
	}
	// Nothing of ours is left attached: only the holder's thread is traced.
	for _, tid := range tracedThreads(tg.pid) {
		if tp, _ := tracerOf(tg.pid, tid); tp != holder.Process.Pid {
			t.Fatalf("thread %d traced by pid %d after the failed stop", tid, tp)
		}
	}
	holder.Process.Kill()
	holder.Wait()
	if tt := waitUntraced(tg.pid); len(tt) != 0 {
		t.Fatalf("threads %v still traced", tt)
	}
	// Once the debugger is gone, hotfleet can stop it.
	if err := tr.StopAll(context.Background()); err != nil {
		t.Fatalf("StopAll after the other tracer left: %v", err)
	}
	if _, err := tr.Resume(); err != nil {
		t.Fatal(err)
	}
	tg.finish()
}

// TestNotPermitted: an unprivileged user gets ErrPermission with the fix in
// the message.
func TestNotPermitted(t *testing.T) {
	testenv.NeedRoot(t)
	tg := startTarget(t, targetBin(t), "1")
	// The test binary lives in a private build directory; copy it where
	// nobody can run it.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "hotfleet-proc-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "proc.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=attach %d", helperEnv, tg.pid))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper as uid 65534: %v: %s", err, out)
	}
	got := strings.TrimSpace(string(out))
	if !strings.HasPrefix(got, "permission ") || !strings.Contains(got, "run hotfleet as root or with CAP_SYS_PTRACE") {
		t.Fatalf("unprivileged attach said %q, want ErrPermission with the fix", got)
	}
	if tt := tracedThreads(tg.pid); len(tt) != 0 {
		t.Fatalf("threads %v traced", tt)
	}
	tg.finish()
}

// TestExitDuringStop stops and resumes a process that churns threads until
// it exits by itself: every call returns promptly, and once the process is
// gone the error is ExitedError.
func TestExitDuringStop(t *testing.T) {
	testenv.NeedRoot(t)
	bin := buildTarget(t, "exiter", "-O2", "-pthread")
	for trial := 0; trial < 5; trial++ {
		tg := startTarget(t, bin, fmt.Sprint(100+40*trial))
		tr := attach(t, tg.pid)
		ctx := context.Background()
		var lastErr error
		rounds := 0
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			start := time.Now()
			err := tr.StopAll(ctx)
			if err == nil {
				if _, err2 := tr.Syscall(ctx, unix.SYS_GETPID); err2 != nil && !errors.Is(err2, ErrExited) {
					t.Fatalf("trial %d: remote getpid: %v", trial, err2)
				}
				_, err = tr.Resume()
			}
			if d := time.Since(start); d > stopTimeout+time.Second {
				t.Fatalf("trial %d: a stop/resume round took %v", trial, d)
			}
			rounds++
			if err != nil {
				lastErr = err
				break
			}
		}
		if !errors.Is(lastErr, ErrExited) {
			t.Fatalf("trial %d: after %d rounds: %v, want ExitedError", trial, rounds, lastErr)
		}
		var ee ExitedError
		if !errors.As(lastErr, &ee) || ee.Pid != tg.pid {
			t.Fatalf("trial %d: %v does not carry pid %d", trial, lastErr, tg.pid)
		}
		t.Logf("trial %d: %d stop rounds, then: %v", trial, rounds, lastErr)
	}
}

// TestKilledWhileStopped: a process SIGKILLed while stopped makes Syscall
// and Resume report ExitedError or succeed trivially, never hang.
func TestKilledWhileStopped(t *testing.T) {
	testenv.NeedRoot(t)
	tg := startTarget(t, targetBin(t), "4")
	tr := attach(t, tg.pid)
	ctx := context.Background()
	if err := tr.StopAll(ctx); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(tg.pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := tr.Syscall(ctx, unix.SYS_GETPID)
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrExited) {
			t.Fatalf("Syscall on a killed process: %v, want ExitedError", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Syscall on a killed process hangs")
	}
	if _, err := tr.Resume(); err != nil {
		t.Fatalf("Resume of a killed process: %v", err)
	}
	// The pid may stay a zombie until its parent reaps it: then Attach works
	// but StopAll must say the process exited.
	tr2, err := Attach(ctx, tg.pid)
	if err != nil {
		if !errors.Is(err, ErrExited) {
			t.Fatalf("Attach to a dead process: %v, want ExitedError", err)
		}
		return
	}
	defer tr2.Close()
	if err := tr2.StopAll(ctx); !errors.Is(err, ErrExited) {
		t.Fatalf("StopAll of a dead process: %v, want ExitedError", err)
	}
}

// TestCloseReleases: Close without Resume puts registers back and detaches.
func TestCloseReleases(t *testing.T) {
	testenv.NeedRoot(t)
	tg := startTarget(t, targetBin(t), "4")
	tr := attach(t, tg.pid) // closed again by the cleanup, harmlessly
	if err := tr.StopAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A cancelled context fails the call without running it.
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := tr.Syscall(cctx, unix.SYS_GETPID); !errors.Is(err, context.Canceled) {
		t.Fatalf("Syscall with a cancelled context: %v", err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if tt := tracedThreads(tg.pid); len(tt) != 0 {
		t.Fatalf("threads %v still traced after Close", tt)
	}
	if err := tr.StopAll(context.Background()); err == nil {
		t.Fatal("StopAll after Close succeeded")
	}
	b, s := tg.status()
	tg.waitProgress(b+1, s+1)
	tg.finish()
}
