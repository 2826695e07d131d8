package e2e

import (
	"bufio"
	"bytes"
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

// TestRefusedFunctions: hotfleet refuses, naming the function, to patch a
// function whose bytes are not those the bundle was built against (someone
// else changed them) or that is too small to hold a jump; the process keeps
// running its code unchanged.
func TestRefusedFunctions(t *testing.T) {
	needs(t)
	t.Run("old-bytes-differ", func(t *testing.T) {
		// Non-PIE: the site the bundle names is the address in the process.
		p := buildExe(t, "static.c", "driver.c", nonPIE)
		b := p.bundle(t, "fix-scale", 1, p.fixed(t, "fixed", "return x * 3;", "return x * 4;"), []string{"scale"})
		tg := start(t, p.bin, nil)
		tg.expect("call 5", "scaled 15", "before")

		site := siteOf(t, b, "scale")
		code := readMem(t, tg.pid, site, 32)
		// Another tool rewrote the "return -1" branch, which "call 5" never
		// takes, to return -2.
		minusOne := []byte{0x48, 0xc7, 0xc0, 0xff, 0xff, 0xff, 0xff}
		i := bytes.Index(code, minusOne)
		if i < 0 {
			t.Fatalf("scale at %#x has no 'mov $-1, %%rax' in its first bytes (% x); did gcc change its code?", site, code)
		}
		writeMem(t, tg.pid, site+uint64(i)+3, []byte{0xfe})
		tg.expect("call 5", "scaled 15", "after the other tool's change")

		r := hotfleet(t, "patch", "apply", b, "--pid", strconv.Itoa(tg.pid))
		r.mustFail(t, "scale")
		tg.expect("call 5", "scaled 15", "after the refused apply")
		requireNothingApplied(t, tg.pid)
		if got := readMem(t, tg.pid, site, 32); got[i+3] != 0xfe || !bytes.Equal(got[:i], code[:i]) {
			t.Errorf("the refused apply changed scale: % x, was % x", got, code)
		}
	})
	t.Run("too-small", func(t *testing.T) {
		p := buildExe(t, "tiny.c", "driver.c", pie)
		fixed := p.fixed(t, "fixed", "void on_event(void)\n{\n}", "void on_event(void)\n{\n\tevents++;\n}")
		tg := start(t, p.bin, nil)
		tg.expect("call 0", "events=0", "before")
		// The builder may refuse already; if it writes a bundle, apply must.
		out := filepath.Join(p.dir, "fix-tiny.hfp")
		r := hotfleet(t, "patch", "build", "--target", p.bin, "--orig", p.orig, "--patched", fixed, "--id", "fix-tiny", "-o", out)
		if r.exit == 0 {
			r = hotfleet(t, "patch", "apply", out, "--pid", strconv.Itoa(tg.pid))
		}
		r.mustFail(t, "on_event", "small")
		tg.expect("call 0", "events=0", "after the refusal")
		requireNothingApplied(t, tg.pid)
		tg.healthy()
	})
}

// siteOf reads the link-time address of function name from the bundle, as
// 'hotfleet patch inspect --json' shows it.
func siteOf(t *testing.T, bundle, name string) uint64 {
	t.Helper()
	r := hotfleet(t, "patch", "inspect", "--json", bundle)
	r.mustSucceed(t)
	for _, o := range objects(t, "hotfleet patch inspect --json", r.stdout) {
		if o.str("name") != name || !o.has("site") {
			continue
		}
		s := o.str("site")
		v, err := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 64)
		if err != nil {
			t.Fatalf("inspect gives site %q for %s: %v", s, name, err)
		}
		return v
	}
	t.Fatalf("inspect --json names no function %s:\n%s", name, r.stdout)
	return 0
}

// writeMem writes data into pid's memory at addr, as a debugger would.
func writeMem(t *testing.T, pid int, addr uint64, data []byte) {
	t.Helper()
	f, err := os.OpenFile("/proc/"+strconv.Itoa(pid)+"/mem", os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("open the memory of %d: %v", pid, err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, int64(addr)); err != nil {
		t.Fatalf("write %d bytes at %#x in %d: %v", len(data), addr, pid, err)
	}
}
