package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"hotfleet/internal/testenv"
)

// TestUserErrors: each mistake a user can make gets a plain error from the
// command line, and the target is left exactly as it was.
func TestUserErrors(t *testing.T) {
	needs(t)
	p := buildExe(t, "basic.c", "driver.c", pie)
	const id = "fix-errors"
	b := p.bundle(t, id, 1, p.fixed(t, "fixed", "x * 10 + 1", "x * 10 + 7"), []string{"answer"})
	good, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	tg := start(t, p.bin, nil)
	pid := strconv.Itoa(tg.pid)
	unchanged := func(t *testing.T, tg *target) {
		t.Helper()
		tg.expect("call 5", "51", "after the refused apply")
		requireNothingApplied(t, tg.pid)
		tg.healthy()
	}
	unchanged(t, tg)

	badFiles := []struct {
		name string
		data []byte
		says []string
	}{
		// A file that does not start with the bundle magic is not a bundle,
		// whatever its length: saying "truncated" would send the user looking
		// for the rest of a file that never was a bundle.
		{"not-a-bundle", []byte("#!/bin/sh\necho this is a script\n"), []string{"malformed", "not a hotfleet patch bundle"}},
		{"object-file", objectFile(t, p), []string{"malformed", "not a hotfleet patch bundle"}},
		{"truncated", good[:len(good)/2], []string{"malformed", "truncated"}},
		{"corrupted", corrupt(good), []string{"malformed"}},
		{"empty", nil, []string{"malformed"}},
	}
	for _, c := range badFiles {
		t.Run("bundle-"+c.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), c.name+".hfp")
			if err := os.WriteFile(f, c.data, 0o644); err != nil {
				t.Fatal(err)
			}
			r := hotfleet(t, "patch", "apply", f, "--pid", pid)
			r.mustFail(t, append(c.says, filepath.Base(f))...)
			unchanged(t, tg)
			r = hotfleet(t, "patch", "inspect", f)
			r.mustFail(t, c.says...)
		})
	}

	t.Run("missing-bundle", func(t *testing.T) {
		r := hotfleet(t, "patch", "apply", filepath.Join(t.TempDir(), "nothing-here.hfp"), "--pid", pid)
		r.mustFail(t, "nothing-here.hfp")
		unchanged(t, tg)
	})

	t.Run("build-id-mismatch", func(t *testing.T) {
		// The same program rebuilt with another constant: the function is the
		// same, the build is not.
		other := buildExeIn(t, t.TempDir(), "basic.c", "driver.c", pie, []string{`-DBUILD_TAG="2"`})
		tg2 := start(t, other.bin, nil)
		tg2.expect("tag", "tag 2", "the rebuilt target")
		r := hotfleet(t, "patch", "apply", b, "--pid", strconv.Itoa(tg2.pid))
		r.mustFail(t, "build-id")
		unchanged(t, tg2)
		unchanged(t, tg)
	})

	t.Run("unprivileged-user", func(t *testing.T) {
		// nobody must be able to read the bundle, so the only thing it lacks
		// is the right to trace the target.
		shared := filepath.Join(shareDir, "unprivileged-"+strconv.Itoa(tg.pid)+".hfp")
		if err := os.WriteFile(shared, good, 0o644); err != nil {
			t.Fatal(err)
		}
		defer os.Remove(shared)
		nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
		r := hotfleetAs(t, nobody, "patch", "apply", shared, "--pid", pid)
		r.mustFail(t, "permission denied")
		unchanged(t, tg)
	})

	t.Run("already-traced", func(t *testing.T) {
		tracer := testenv.CC(t, "tracer", testdata("tracer.c"))
		stop := seize(t, tracer, tg.pid)
		r := hotfleet(t, "patch", "apply", b, "--pid", pid)
		r.mustFail(t, "already traced")
		tg.expect("call 5", "51", "while another tracer holds the target")
		stop()
		unchanged(t, tg)
		// Once the other tracer is gone, the same bundle applies.
		apply(t, b, tg.pid, 1)
		tg.expect("call 5", "57", "after the other tracer left")
		revert(t, id, tg.pid, 1)
		unchanged(t, tg)
	})

	t.Run("revert-not-applied", func(t *testing.T) {
		r := hotfleet(t, "patch", "revert", id, "--pid", pid)
		r.mustFail(t, id)
		unchanged(t, tg)
	})
}

// objectFile is what a user may pass by mistake: the fixed object instead
// of the bundle built from it.
func objectFile(t *testing.T, p *program) []byte {
	t.Helper()
	b, err := os.ReadFile(p.orig)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// corrupt flips one byte in the middle of a bundle.
func corrupt(b []byte) []byte {
	c := append([]byte(nil), b...)
	c[len(c)/2] ^= 0x55
	return c
}

// seize makes the tracer program PTRACE_SEIZE pid, as a debugger would, and
// returns a function that kills it (also run when the test ends).
func seize(t *testing.T, tracer string, pid int) (stop func()) {
	t.Helper()
	cmd := exec.Command(tracer, strconv.Itoa(pid))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}
	t.Cleanup(stop)
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(out).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	select {
	case l := <-line:
		if l != "seized" {
			t.Fatalf("tracer could not seize %d: %q", pid, l)
		}
	case <-time.After(answerTimeout):
		t.Fatalf("tracer did not seize %d within %v", pid, answerTimeout)
	}
	return stop
}
