package livepatch_test

import (
	"context"
	"strings"
	"testing"

	"hotfleet/internal/livepatch"
	"hotfleet/internal/livepatch/lptest"
)

// TestStatusAfterPatcherKilled kills a separate hotfleet process at each
// failpoint and checks that status, read from the target alone, says exactly
// what is there, and that the next run finishes or undoes it.
func TestStatusAfterPatcherKilled(t *testing.T) {
	bin := lptest.BuildTarget(t, "testdata/target.c", "target")
	exe := selfCopy(t)
	ctx := context.Background()
	b := lptest.MakeBundle(t, bin, "hf-kill", 1, lptest.Fn{Old: "answer", Code: lptest.Ret(42)}, lptest.Fn{Old: "second", Code: lptest.Ret(43)})

	cases := []struct {
		op, failpoint string
		oneByOne      bool   // sites written one write each, not all at once
		state         string // what status must say after the kill
		consistent    bool
		problem       string
		answer        string // what the target runs right after the kill
		second        string
		recovered     string // what Recover reports
		after         string // state after recovery; "" means no region left
		answerAfter   string
	}{
		{op: "apply", failpoint: "prepared", state: "prepared", problem: "interrupted before switching",
			answer: "1", second: "2", recovered: "interrupted before switching; removed", answerAfter: "1"},
		{op: "apply", failpoint: "switching", state: "switching", problem: "0 of 2 sites written",
			answer: "1", second: "2", recovered: "finished it (2 of 2 sites written now)", after: "applied", answerAfter: "42"},
		// The sites jump to stubs that run the old code until the switch
		// word is set: a kill between site writes leaves the old code running.
		{op: "apply", failpoint: "site:1", oneByOne: true, state: "switching", problem: "interrupted while switching: 1 of 2 sites written, the process runs the old code",
			answer: "1", second: "2", recovered: "finished it (1 of 2 sites written now)", after: "applied", answerAfter: "42"},
		{op: "apply", failpoint: "site:1", state: "switching", problem: "interrupted while switching: 2 of 2 sites written, the process runs the old code",
			answer: "1", second: "2", recovered: "finished it (0 of 2 sites written now)", after: "applied", answerAfter: "42"},
		{op: "apply", failpoint: "applied", state: "applied", consistent: true,
			answer: "42", second: "43", after: "applied", answerAfter: "42"},
		// Reverting switches the stubs off first: all old code at once.
		{op: "revert", failpoint: "site:1", oneByOne: true, state: "reverting", problem: "interrupted while reverting: 1 of 2 sites still jump to the patch, the process runs the old code",
			answer: "1", second: "2", recovered: "a revert was interrupted; finished it (1 of 2 sites restored now)", answerAfter: "1"},
		{op: "revert", failpoint: "site:1", state: "reverting", problem: "interrupted while reverting: 0 of 2 sites still jump",
			answer: "1", second: "2", recovered: "a revert was interrupted; finished it (0 of 2 sites restored now)", answerAfter: "1"},
		{op: "revert", failpoint: "reverting", state: "reverting", problem: "interrupted while reverting: 2 of 2 sites still jump to the patch, the process runs the new code",
			answer: "42", second: "43", recovered: "a revert was interrupted; finished it (2 of 2 sites restored now)", answerAfter: "1"},
	}
	for _, c := range cases {
		name := c.op + "@" + c.failpoint
		env := []string{livepatch.FailpointEnv + "=" + c.failpoint}
		if c.oneByOne {
			name += "/one-by-one"
			env = append(env, "LPTEST_ATOMIC_SPAN=0")
		}
		t.Run(name, func(t *testing.T) {
			p := lptest.Start(t, bin)
			if c.op == "revert" {
				if _, err := livepatch.Apply(ctx, p.Pid, b, livepatch.Options{}); err != nil {
					t.Fatal(err)
				}
			}
			out, err := runHelper(t, exe, c.op, p.Pid, b, nil, env...)
			if err == nil || !strings.Contains(err.Error(), "killed") {
				t.Fatalf("hotfleet %s with failpoint %s was not killed: %v\n%s", c.op, c.failpoint, err, out)
			}
			// The target keeps running, fully old, fully new or in between
			// for whole functions only.
			p.Expect("answer", c.answer)
			p.Expect("second", c.second)
			st := status(t, p.Pid)
			if len(st) != 1 || st[0].State != c.state || st[0].Consistent != c.consistent || !strings.Contains(st[0].Problem, c.problem) {
				t.Fatalf("status after the kill = %+v; want state %s, consistent %v, problem %q", st, c.state, c.consistent, c.problem)
			}
			done, err := livepatch.Recover(ctx, p.Pid, livepatch.Options{})
			if err != nil {
				t.Fatalf("recover: %v", err)
			}
			if c.recovered != "" && !strings.Contains(strings.Join(done, "\n"), c.recovered) {
				t.Errorf("recover reported %q, want %q", done, c.recovered)
			}
			st = status(t, p.Pid)
			switch {
			case c.after == "" && len(st) != 0:
				t.Errorf("after recovery regions remain: %+v", st)
			case c.after != "" && (len(st) != 1 || st[0].State != c.after || !st[0].Consistent):
				t.Errorf("after recovery status = %+v, want one consistent %s region", st, c.after)
			}
			p.Expect("answer", c.answerAfter)
			want := "2"
			if c.answerAfter == "42" {
				want = "43"
			}
			p.Expect("second", want)
		})
	}
}

// TestApplyFinishesInterruptedRun checks that a plain apply, not only
// Recover, first completes what a killed run left.
func TestApplyFinishesInterruptedRun(t *testing.T) {
	bin := lptest.BuildTarget(t, "testdata/target.c", "target")
	p := lptest.Start(t, bin)
	b := lptest.MakeBundle(t, bin, "hf-again", 1, lptest.Fn{Old: "answer", Code: lptest.Ret(42)}, lptest.Fn{Old: "second", Code: lptest.Ret(43)})
	out, err := runHelper(t, selfCopy(t), "apply", p.Pid, b, nil, livepatch.FailpointEnv+"=site:1", "LPTEST_ATOMIC_SPAN=0")
	if err == nil {
		t.Fatalf("hotfleet was not killed:\n%s", out)
	}
	res, err := livepatch.Apply(context.Background(), p.Pid, b, livepatch.Options{})
	if err != nil {
		t.Fatalf("apply after the kill: %v", err)
	}
	if !res.AlreadyApplied || len(res.Recovered) != 1 || !strings.Contains(res.Recovered[0], "finished it") {
		t.Errorf("apply after the kill = %+v; want the interrupted switch finished and nothing more to do", res)
	}
	p.Expect("answer", "42")
	p.Expect("second", "43")
}

// TestStubsRunOldCodeUntilSwitched kills hotfleet after it wrote two of
// three sites: the written sites jump to its stub, which must run the
// old instructions it displaced (a %rip-relative load, a short conditional
// branch, a plain prologue), relocated, until the switch word is set.
func TestStubsRunOldCodeUntilSwitched(t *testing.T) {
	bin := lptest.BuildTarget(t, "testdata/target.c", "target")
	p := lptest.Start(t, bin)
	b := lptest.MakeBundle(t, bin, "hf-stub", 1,
		lptest.Fn{Old: "reader", Code: lptest.Ret(78)},
		lptest.Fn{Old: "branchy", Code: lptest.Ret(3)},
		lptest.Fn{Old: "answer", Code: lptest.Ret(42)})
	out, err := runHelper(t, selfCopy(t), "apply", p.Pid, b, nil, livepatch.FailpointEnv+"=site:2", "LPTEST_ATOMIC_SPAN=0")
	if err == nil {
		t.Fatalf("hotfleet was not killed:\n%s", out)
	}
	st := status(t, p.Pid)
	if len(st) != 1 || !strings.Contains(st[0].Problem, "2 of 3 sites written, the process runs the old code") {
		t.Fatalf("status after the kill = %+v", st)
	}
	p.Expect("reader", "77")
	p.Expect("branchy", "2")
	p.Expect("answer", "1")
	if _, err := livepatch.Recover(context.Background(), p.Pid, livepatch.Options{}); err != nil {
		t.Fatal(err)
	}
	p.Expect("reader", "78")
	p.Expect("branchy", "3")
	p.Expect("answer", "42")
}

// TestRevertFinishesInterruptedRevert checks that reverting again after a
// revert was killed half way finishes it and reports success, not "not
// applied".
func TestRevertFinishesInterruptedRevert(t *testing.T) {
	bin := lptest.BuildTarget(t, "testdata/target.c", "target")
	p := lptest.Start(t, bin)
	b := lptest.MakeBundle(t, bin, "hf-unrevert", 1, lptest.Fn{Old: "answer", Code: lptest.Ret(42)}, lptest.Fn{Old: "second", Code: lptest.Ret(43)})
	ctx := context.Background()
	if _, err := livepatch.Apply(ctx, p.Pid, b, livepatch.Options{}); err != nil {
		t.Fatal(err)
	}
	out, err := runHelper(t, selfCopy(t), "revert", p.Pid, b, nil, livepatch.FailpointEnv+"=reverting")
	if err == nil {
		t.Fatalf("hotfleet was not killed:\n%s", out)
	}
	res, err := livepatch.Revert(ctx, p.Pid, b.ID, livepatch.Options{})
	if err != nil {
		t.Fatalf("revert after the interrupted revert: %v", err)
	}
	if res.Functions != 2 || len(res.Recovered) == 0 || !strings.Contains(res.Recovered[0], "finished it") {
		t.Errorf("revert after the kill = %+v; want the interrupted revert of 2 functions finished", res)
	}
	p.Expect("answer", "1")
	p.Expect("second", "2")
	if st := status(t, p.Pid); len(st) != 0 {
		t.Errorf("regions left after the revert: %+v", st)
	}
}
