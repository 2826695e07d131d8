package livepatch_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"hotfleet/internal/bundle"
	"hotfleet/internal/livepatch"
	"hotfleet/internal/livepatch/lptest"
	"hotfleet/internal/proc"
)

// TestMain lets the test binary double as a separate hotfleet process (see
// runHelper), so that a test can kill it or run it with other credentials.
func TestMain(m *testing.M) {
	if op := os.Getenv("LPTEST_OP"); op != "" {
		os.Exit(helperMain(op))
	}
	os.Exit(m.Run())
}

// helperMain applies or reverts a bundle in LPTEST_PID and prints the outcome.
func helperMain(op string) int {
	pid, _ := strconv.Atoi(os.Getenv("LPTEST_PID"))
	if v := os.Getenv("LPTEST_ATOMIC_SPAN"); v != "" {
		n, _ := strconv.ParseUint(v, 10, 64)
		livepatch.SetAtomicSpan(n)
	}
	var err error
	switch op {
	case "apply":
		var data []byte
		if data, err = os.ReadFile(os.Getenv("LPTEST_BUNDLE")); err == nil {
			var b *bundle.Bundle
			if b, err = bundle.Decode(data); err == nil {
				_, err = livepatch.Apply(context.Background(), pid, b, livepatch.Options{})
			}
		}
	case "revert":
		_, err = livepatch.Revert(context.Background(), pid, os.Getenv("LPTEST_ID"), livepatch.Options{})
	}
	if err != nil {
		os.Stdout.WriteString("error: " + err.Error() + "\npermission: " + strconv.FormatBool(errors.Is(err, proc.ErrPermission)) + "\n")
		return 1
	}
	os.Stdout.WriteString("done\n")
	return 0
}

// runHelper runs the test binary as a separate hotfleet process doing op on
// pid, with extra environment, and returns its output and exit error.
func runHelper(t *testing.T, exe, op string, pid int, b *bundle.Bundle, cred *syscall.Credential, env ...string) (string, error) {
	t.Helper()
	dir := filepath.Dir(exe)
	path := filepath.Join(dir, "fix.hfp")
	if b != nil {
		data, err := bundle.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "LPTEST_OP="+op, "LPTEST_PID="+strconv.Itoa(pid), "LPTEST_BUNDLE="+path)
	if b != nil {
		cmd.Env = append(cmd.Env, "LPTEST_ID="+b.ID)
	}
	cmd.Env = append(cmd.Env, env...)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// selfCopy copies the test binary into a directory every user can read, so
// that it can run under other credentials.
func selfCopy(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "lptest")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "hotfleet-helper")
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return exe
}

// requireUntouched checks that a failed apply left nothing in the target.
func requireUntouched(t *testing.T, p *lptest.Target, fn, want string) {
	t.Helper()
	p.Expect(fn, want)
	if st := status(t, p.Pid); len(st) != 0 {
		t.Errorf("the failed apply left regions in pid %d: %+v", p.Pid, st)
	}
}

func TestApplyErrors(t *testing.T) {
	bin := lptest.BuildTarget(t, "testdata/target.c", "target")
	ctx := context.Background()

	t.Run("build-id mismatch", func(t *testing.T) {
		other := lptest.BuildTarget(t, "testdata/target.c", "target", "-DVARIANT=2")
		p := lptest.Start(t, other)
		b := lptest.MakeBundle(t, bin, "hf-e1", 1, lptest.Fn{Old: "answer", Code: lptest.Ret(42)})
		_, err := livepatch.Apply(ctx, p.Pid, b, livepatch.Options{})
		if !errors.Is(err, livepatch.ErrBuildIDMismatch) || !strings.Contains(err.Error(), "built for another version of this binary") {
			t.Fatalf("apply: %v, want ErrBuildIDMismatch", err)
		}
		requireUntouched(t, p, "answer", "2")
	})

	t.Run("module not mapped", func(t *testing.T) {
		nohole := lptest.BuildTarget(t, "testdata/nohole.c", "other")
		p := lptest.Start(t, nohole)
		b := lptest.MakeBundle(t, bin, "hf-e2", 1, lptest.Fn{Old: "answer", Code: lptest.Ret(42)})
		_, err := livepatch.Apply(ctx, p.Pid, b, livepatch.Options{})
		if !errors.Is(err, livepatch.ErrNotMapped) || !strings.Contains(err.Error(), "does not map any module of this bundle") {
			t.Fatalf("apply: %v, want ErrNotMapped", err)
		}
	})

	t.Run("old bytes differ", func(t *testing.T) {
		p := lptest.Start(t, bin)
		b := lptest.MakeBundle(t, bin, "hf-e3", 1, lptest.Fn{Old: "answer", Code: lptest.Ret(42)})
		// Something else changed answer() first: its "mov $1,%eax" now loads 7.
		syms, _ := lptest.ReadELF(t, bin)
		st := syms["answer"]
		at := strings.Index(string(st.Code), "\xb8\x01\x00\x00\x00")
		if at < 0 {
			t.Fatalf("answer() has no mov $1,%%eax: % x", st.Code)
		}
		mem, err := proc.OpenMem(p.Pid)
		if err != nil {
			t.Fatal(err)
		}
		defer mem.Close()
		if err := mem.WriteAt([]byte{7}, moduleBias(t, p.Pid, bin)+st.Addr+uint64(at)+1); err != nil {
			t.Fatal(err)
		}
		p.Expect("answer", "7")
		_, err = livepatch.Apply(ctx, p.Pid, b, livepatch.Options{})
		if !errors.Is(err, livepatch.ErrOldBytes) || !strings.Contains(err.Error(), "old bytes of answer at") {
			t.Fatalf("apply: %v, want ErrOldBytes naming answer", err)
		}
		requireUntouched(t, p, "answer", "7")
	})

	t.Run("function too small", func(t *testing.T) {
		p := lptest.Start(t, bin)
		b := lptest.MakeBundle(t, bin, "hf-e4", 1, lptest.Fn{Old: "answer", Code: lptest.Ret(42)}, lptest.Fn{Old: "tiny", Code: lptest.Ret(9)})
		_, err := livepatch.Apply(ctx, p.Pid, b, livepatch.Options{})
		if !errors.Is(err, livepatch.ErrTooSmall) || !strings.Contains(err.Error(), "function tiny is 3 bytes long") {
			t.Fatalf("apply: %v, want ErrTooSmall naming tiny", err)
		}
		requireUntouched(t, p, "tiny", "0")
		p.Expect("answer", "1")
	})

	t.Run("no hole in reach", func(t *testing.T) {
		nohole := lptest.BuildTarget(t, "testdata/nohole.c", "nohole")
		p := lptest.Start(t, nohole)
		b := lptest.MakeBundle(t, nohole, "hf-e5", 1, lptest.Fn{Old: "answer", Code: lptest.Ret(42)})
		_, err := livepatch.Apply(ctx, p.Pid, b, livepatch.Options{})
		if !errors.Is(err, proc.ErrNoHole) || !strings.Contains(err.Error(), "map the patch code near") {
			t.Fatalf("apply: %v, want ErrNoHole", err)
		}
		requireUntouched(t, p, "answer", "1")
	})

	t.Run("process exits mid-patch", func(t *testing.T) {
		p := lptest.Start(t, bin)
		b := lptest.MakeBundle(t, bin, "hf-e6", 1, lptest.Fn{Old: "answer", Code: lptest.Ret(42)})
		kill := func(name string) {
			if name == "prepared" {
				p.Kill()
			}
		}
		_, err := livepatch.Apply(ctx, p.Pid, b, livepatch.Options{Failpoint: kill})
		if !errors.Is(err, proc.ErrExited) {
			t.Fatalf("apply: %v, want ErrExited", err)
		}
	})

	t.Run("already traced", func(t *testing.T) {
		p := lptest.Start(t, bin)
		release := seize(t, p.Pid)
		b := lptest.MakeBundle(t, bin, "hf-e7", 1, lptest.Fn{Old: "answer", Code: lptest.Ret(42)})
		_, err := livepatch.Apply(ctx, p.Pid, b, livepatch.Options{})
		release()
		if !errors.Is(err, proc.ErrAlreadyTraced) {
			t.Fatalf("apply: %v, want ErrAlreadyTraced", err)
		}
		requireUntouched(t, p, "answer", "1")
	})

	t.Run("permission denied", func(t *testing.T) {
		p := lptest.Start(t, bin)
		b := lptest.MakeBundle(t, bin, "hf-e8", 1, lptest.Fn{Old: "answer", Code: lptest.Ret(42)})
		out, err := runHelper(t, selfCopy(t), "apply", p.Pid, b, &syscall.Credential{Uid: 65534, Gid: 65534})
		if err == nil || !strings.Contains(out, "permission: true") {
			t.Fatalf("apply as nobody: %v\n%s\nwant a permission error", err, out)
		}
		requireUntouched(t, p, "answer", "1")
	})
}

// moduleBias is the load bias of the executable bin in pid.
func moduleBias(t *testing.T, pid int, bin string) uint64 {
	t.Helper()
	mods, err := proc.Modules(pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mods {
		if m.Path == bin {
			return m.Bias
		}
	}
	t.Fatalf("pid %d does not map %s", pid, bin)
	return 0
}

// seize makes the test the tracer of pid, as a debugger would be; release
// detaches again. ptrace requests must come from the thread that seized.
func seize(t *testing.T, pid int) (release func()) {
	t.Helper()
	const ptraceSeize = 0x4206
	errc := make(chan error)
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		_, _, e := syscall.Syscall6(syscall.SYS_PTRACE, ptraceSeize, uintptr(pid), 0, 0, 0, 0)
		if e != 0 {
			errc <- e
			return
		}
		errc <- nil
		<-done
		_, _, _ = syscall.Syscall6(syscall.SYS_PTRACE, syscall.PTRACE_DETACH, uintptr(pid), 0, 0, 0, 0)
		close(errc)
	}()
	if err := <-errc; err != nil {
		t.Fatalf("seize pid %d: %v", pid, err)
	}
	return func() {
		close(done)
		<-errc
	}
}
