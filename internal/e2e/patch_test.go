package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// roundTrip is the life of one patch as a user sees it: the answer before,
// apply, the answer after (the very next call runs the new code), status,
// revert, the original answer again.
type roundTrip struct {
	call, before, after string
	id                  string
	funcs               []string // functions the patch replaces
}

func (rt roundTrip) run(t *testing.T, tg *target, bundle string) {
	t.Helper()
	tg.expect(rt.call, rt.before, "before apply")
	requireNothingApplied(t, tg.pid)
	apply(t, bundle, tg.pid, len(rt.funcs))
	tg.expect(rt.call, rt.after, "right after apply")
	tg.expect(rt.call, rt.after, "second call after apply")
	requireApplied(t, tg.pid, rt.id, 1, rt.funcs...)
	revert(t, rt.id, tg.pid, len(rt.funcs))
	tg.expect(rt.call, rt.before, "after revert")
	requireNothingApplied(t, tg.pid)
	tg.healthy()
}

// TestPatchKinds patches one function of each kind a fix touches, in PIE and
// non-PIE executables, and checks the answer a user sees changes and changes
// back.
func TestPatchKinds(t *testing.T) {
	needs(t)
	cases := []struct {
		name   string
		src    string
		ef     exeFlags
		fix    []string
		funcs  []string
		call   string
		before string
		after  string
	}{
		{"pie", "basic.c", pie, []string{"x * 10 + 1", "x * 10 + 7"}, []string{"answer"}, "call 5", "51", "57"},
		{"non-pie", "basic.c", nonPIE, []string{"x * 10 + 1", "x * 10 + 7"}, []string{"answer"}, "call 5", "51", "57"},
		{"static-function", "static.c", pie, []string{"return x * 3;", "return x * 4;"}, []string{"scale"}, "call 5", "scaled 15", "scaled 20"},
		{"static-function-non-pie", "static.c", nonPIE, []string{"return x * 3;", "return x * 4;"}, []string{"scale"}, "call 5", "scaled 15", "scaled 20"},
		{"libc-through-plt", "plt.c", pie, []string{"(long)(arg[0] != 0)", "(long)strlen(arg)"}, []string{"answer"}, "call hello", "len=1", "len=5"},
		{"libc-through-plt-non-pie", "plt.c", nonPIE, []string{"(long)(arg[0] != 0)", "(long)strlen(arg)"}, []string{"answer"}, "call hello", "len=1", "len=5"},
		{"new-string-literal", "string.c", pie, []string{`"hello %s"`, `"hello %s, from the fixed code"`}, []string{"answer"}, "call world", "hello world", "hello world, from the fixed code"},
		{"new-string-literal-non-pie", "string.c", nonPIE, []string{`"hello %s"`, `"hello %s, from the fixed code"`}, []string{"answer"}, "call world", "hello world", "hello world, from the fixed code"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := buildExe(t, c.src, "driver.c", c.ef)
			id := "fix-" + c.name
			b := p.bundle(t, id, 1, p.fixed(t, "fixed", c.fix...), c.funcs)
			tg := start(t, p.bin, nil)
			roundTrip{call: c.call, before: c.before, after: c.after, id: id, funcs: c.funcs}.run(t, tg, b)
		})
	}
}

// TestGlobalSharedByOldAndNewCode: the fixed function reads and writes the
// same globals as the old one, so state survives apply and revert.
func TestGlobalSharedByOldAndNewCode(t *testing.T) {
	needs(t)
	for _, ef := range []exeFlags{pie, nonPIE} {
		t.Run(ef.name, func(t *testing.T) {
			p := buildExe(t, "global.c", "driver.c", ef)
			b := p.bundle(t, "fix-global", 1, p.fixed(t, "fixed", "total += x;", "total += x * 10;"), []string{"answer"})
			tg := start(t, p.bin, nil)
			tg.expect("call 1", "hits=1 total=1", "first call")
			tg.expect("call 2", "hits=2 total=3", "second call")
			apply(t, b, tg.pid, 1)
			tg.expect("call 1", "hits=3 total=13", "after apply: the fixed code continues the old counts")
			tg.expect("call 2", "hits=4 total=33", "after apply")
			requireApplied(t, tg.pid, "fix-global", 1, "answer")
			revert(t, "fix-global", tg.pid, 1)
			tg.expect("call 1", "hits=5 total=34", "after revert: the old code continues the fixed code's counts")
			requireNothingApplied(t, tg.pid)
		})
	}
}

// endbr64 is the instruction CET/IBT needs at every indirect-call target.
var endbr64 = []byte{0xf3, 0x0f, 0x1e, 0xfa}

// readMem reads n bytes of pid's memory at addr.
func readMem(t *testing.T, pid int, addr uint64, n int) []byte {
	t.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/mem")
	if err != nil {
		t.Fatalf("open the memory of %d: %v", pid, err)
	}
	defer f.Close()
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, int64(addr)); err != nil {
		t.Fatalf("read %d bytes at %#x in %d: %v", n, addr, pid, err)
	}
	return buf
}

// TestCETKeepsEndbr64: built with -fcf-protection=full, the patched function
// keeps endbr64 as its first instruction, the jump goes after it, and revert
// restores every byte.
func TestCETKeepsEndbr64(t *testing.T) {
	needs(t)
	for _, ef := range []exeFlags{pie, nonPIE} {
		t.Run(ef.name, func(t *testing.T) {
			p := buildExe(t, "basic.c", "driver.c", ef, "-fcf-protection=full")
			b := p.bundle(t, "fix-cet", 1, p.fixed(t, "fixed", "x * 10 + 1", "x * 10 + 7"), []string{"answer"})
			tg := start(t, p.bin, nil)
			a := tg.ask("addr")
			addr, err := strconv.ParseUint(strings.TrimPrefix(a, "0x"), 16, 64)
			if err != nil {
				t.Fatalf("addr answered %q", a)
			}
			const n = 16
			orig := readMem(t, tg.pid, addr, n)
			if !bytes.Equal(orig[:4], endbr64) {
				t.Fatalf("answer does not start with endbr64 before the patch (% x); gcc ignored -fcf-protection", orig)
			}
			tg.expect("call 5", "51", "before apply")
			apply(t, b, tg.pid, 1)
			tg.expect("call 5", "57", "after apply")
			got := readMem(t, tg.pid, addr, n)
			if !bytes.Equal(got[:4], endbr64) {
				t.Errorf("after apply the function starts with % x, want endbr64 (% x) kept", got[:4], endbr64)
			}
			if bytes.Equal(got[4:9], orig[4:9]) {
				t.Errorf("after apply the bytes after endbr64 are unchanged (% x): the jump is not written after it", got[4:9])
			}
			revert(t, "fix-cet", tg.pid, 1)
			tg.expect("call 5", "51", "after revert")
			if back := readMem(t, tg.pid, addr, n); !bytes.Equal(back, orig) {
				t.Errorf("after revert the function's first bytes are % x, want the original % x", back, orig)
			}
		})
	}
}

// TestLevelTwoReplacesLevelOne: level 2 of a fix replaces level 1 in one
// step; status shows only level 2; reverting it restores the original.
func TestLevelTwoReplacesLevelOne(t *testing.T) {
	needs(t)
	p := buildExe(t, "basic.c", "driver.c", pie)
	b1 := p.bundle(t, "fix-answer-l1", 1, p.fixed(t, "level1", "x * 10 + 1", "x * 10 + 2"), []string{"answer"})
	b2 := p.bundle(t, "fix-answer-l2", 2, p.fixed(t, "level2", "x * 10 + 1", "x * 10 + 3"), []string{"answer"})
	tg := start(t, p.bin, nil)
	tg.expect("call 5", "51", "before apply")
	apply(t, b1, tg.pid, 1)
	tg.expect("call 5", "52", "after level 1")
	requireApplied(t, tg.pid, "fix-answer-l1", 1, "answer")
	oc := apply(t, b2, tg.pid, 1)
	tg.expect("call 5", "53", "after level 2")
	if rep := oc.str("replaced"); rep != "" && rep != "fix-answer-l1" {
		t.Errorf("apply of level 2 says it replaced %q, want fix-answer-l1", rep)
	}
	requireApplied(t, tg.pid, "fix-answer-l2", 2, "answer")
	revert(t, "fix-answer-l2", tg.pid, 1)
	tg.expect("call 5", "51", "after reverting level 2: the original, not level 1")
	requireNothingApplied(t, tg.pid)
	// Level 1 is gone for good: reverting it has nothing to do.
	r := hotfleet(t, "patch", "revert", "fix-answer-l1", "--pid", strconv.Itoa(tg.pid))
	tg.expect("call 5", "51", "after reverting the replaced level 1")
	if r.exit == 0 {
		t.Logf("revert of the replaced level 1 succeeded as a no-op: %v", r)
	}
}

// TestStatusAfterHotfleetKilled: status is read from the process, so a
// fresh hotfleet tells what an earlier one, killed right after applying,
// did.
func TestStatusAfterHotfleetKilled(t *testing.T) {
	needs(t)
	p := buildExe(t, "basic.c", "driver.c", pie)
	b := p.bundle(t, "fix-killed", 1, p.fixed(t, "fixed", "x * 10 + 1", "x * 10 + 7"), []string{"answer"})
	tg := start(t, p.bin, nil)
	tg.expect("call 5", "51", "before apply")

	// Kill hotfleet with SIGKILL as soon as it has reported: no exit path of
	// its own runs, nothing it kept in its memory survives.
	cmd := exec.Command(hotfleetBin, "patch", "apply", b, "--pid", strconv.Itoa(tg.pid), "--json")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var report any
	decoded := make(chan error, 1)
	go func() { decoded <- json.NewDecoder(out).Decode(&report) }()
	select {
	case err = <-decoded:
	case <-time.After(cliTimeout):
		err = errTimeout
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if err != nil {
		t.Fatalf("apply printed no JSON report (%v); stderr:\n%s", err, stderr.String())
	}
	tg.expect("call 5", "57", "after apply")

	requireApplied(t, tg.pid, "fix-killed", 1, "answer")
	// Without --pid status looks at every process and finds this one.
	all := parseStatus(t, hotfleet(t, "patch", "status", "--json"))
	found := false
	for _, s := range all {
		found = found || (s.pid == tg.pid && s.id == "fix-killed" && s.state == "applied")
	}
	if !found {
		t.Errorf("status without --pid does not list fix-killed in %d: %s", tg.pid, describeStates(all))
	}
	// The words version names the patch, its level and its function.
	r := hotfleet(t, "patch", "status", "--pid", strconv.Itoa(tg.pid))
	r.mustSucceed(t)
	for _, w := range []string{"fix-killed", "answer", "applied"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("status --pid does not mention %q:\n%s", w, r.stdout)
		}
	}
	revert(t, "fix-killed", tg.pid, 1)
	tg.expect("call 5", "51", "after revert")
}

var errTimeout = errors.New("timed out")
