package livepatch_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"hotfleet/internal/livepatch"
	"hotfleet/internal/livepatch/lptest"
	"hotfleet/internal/proc"
)

func status(t *testing.T, pid int) []livepatch.Applied {
	t.Helper()
	st, err := livepatch.Status(context.Background(), pid)
	if err != nil {
		t.Fatalf("status of pid %d: %v", pid, err)
	}
	return st
}

func TestApplyRevert(t *testing.T) {
	bin := lptest.BuildTarget(t, "testdata/target.c", "target")
	p := lptest.Start(t, bin)
	ctx := context.Background()
	p.Expect("answer", "1")

	code, fix := lptest.CallPlusOne(t, bin, "helper")
	b := lptest.MakeBundle(t, bin, "hf-001", 1, lptest.Fn{Old: "answer", Code: code, Fixups: fix})
	res, err := livepatch.Apply(ctx, p.Pid, b, livepatch.Options{})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if res.Functions != 1 || res.Pause <= 0 || res.AlreadyApplied {
		t.Errorf("apply result = %+v, want 1 function switched with a pause", res)
	}
	// The new code calls back into the target: helper() + 1.
	p.Expect("answer", "101")
	p.Expect("second", "2")
	if lptest.KernelNamesMappings(t) && !strings.Contains(lptest.Maps(t, p.Pid), "[anon:hotfleet:hf-001:L1]") {
		t.Errorf("the region is not named in /proc/%d/maps:\n%s", p.Pid, lptest.Maps(t, p.Pid))
	}
	st := status(t, p.Pid)
	if len(st) != 1 || st[0].State != "applied" || !st[0].Consistent || st[0].PatchID != "hf-001" ||
		len(st[0].Functions) != 1 || !st[0].Functions[0].Active || st[0].Functions[0].Name != "answer" {
		t.Fatalf("status after apply = %+v", st)
	}

	again, err := livepatch.Apply(ctx, p.Pid, b, livepatch.Options{})
	if err != nil || !again.AlreadyApplied || again.Functions != 0 {
		t.Errorf("second apply = %+v, %v; want already applied, nothing written", again, err)
	}
	if n := len(status(t, p.Pid)); n != 1 {
		t.Errorf("%d regions after applying twice, want 1", n)
	}

	rv, err := livepatch.Revert(ctx, p.Pid, "hf-001", livepatch.Options{})
	if err != nil {
		t.Fatalf("revert: %v", err)
	}
	if rv.Functions != 1 {
		t.Errorf("revert restored %d functions, want 1", rv.Functions)
	}
	p.Expect("answer", "1")
	if st := status(t, p.Pid); len(st) != 0 {
		t.Errorf("after revert the unused region should be unmapped, status = %+v", st)
	}
	if _, err := livepatch.Revert(ctx, p.Pid, "hf-001", livepatch.Options{}); !errors.Is(err, livepatch.ErrNotApplied) {
		t.Errorf("second revert: %v, want ErrNotApplied", err)
	}
}

func TestLevelTwoReplacesLevelOne(t *testing.T) {
	bin := lptest.BuildTarget(t, "testdata/target.c", "target")
	p := lptest.Start(t, bin)
	ctx := context.Background()
	l1 := lptest.MakeBundle(t, bin, "hf-lvl", 1, lptest.Fn{Old: "answer", Code: lptest.Ret(42)}, lptest.Fn{Old: "second", Code: lptest.Ret(43)})
	l2 := lptest.MakeBundle(t, bin, "hf-lvl", 2, lptest.Fn{Old: "answer", Code: lptest.Ret(44)})
	if _, err := livepatch.Apply(ctx, p.Pid, l1, livepatch.Options{}); err != nil {
		t.Fatalf("apply level 1: %v", err)
	}
	p.Expect("answer", "42")
	p.Expect("second", "43")
	res, err := livepatch.Apply(ctx, p.Pid, l2, livepatch.Options{})
	if err != nil {
		t.Fatalf("apply level 2: %v", err)
	}
	if res.Replaced != "hf-lvl" || res.Functions != 1 {
		t.Errorf("level 2 result = %+v, want 1 function and level 1 replaced", res)
	}
	// Level 2 no longer patches second(): it gets its original code back.
	p.Expect("answer", "44")
	p.Expect("second", "2")
	st := status(t, p.Pid)
	if len(st) != 1 || st[0].Level != 2 || st[0].State != "applied" || !st[0].Consistent {
		t.Fatalf("status after level 2 = %+v; want only level 2, the unused level 1 region unmapped", st)
	}
	_, err = livepatch.Apply(ctx, p.Pid, l1, livepatch.Options{})
	if !errors.Is(err, livepatch.ErrLevel) || !strings.Contains(err.Error(), "level 2 of hf-lvl is already applied") {
		t.Errorf("applying level 1 over level 2: %v, want ErrLevel naming level 2", err)
	}
	if _, err := livepatch.Revert(ctx, p.Pid, "hf-lvl", livepatch.Options{}); err != nil {
		t.Fatalf("revert level 2: %v", err)
	}
	p.Expect("answer", "1")
	p.Expect("second", "2")
}

func TestEndbr64StaysInPlace(t *testing.T) {
	bin := lptest.BuildTarget(t, "testdata/target.c", "target")
	p := lptest.Start(t, bin)
	b := lptest.MakeBundle(t, bin, "hf-cet", 1, lptest.Fn{Old: "endbr", Code: lptest.Ret(55)})
	if _, err := livepatch.Apply(context.Background(), p.Pid, b, livepatch.Options{}); err != nil {
		t.Fatalf("apply: %v", err)
	}
	p.Expect("endbr", "55")
	st := status(t, p.Pid)
	if len(st) != 1 {
		t.Fatalf("status = %+v", st)
	}
	mem, err := proc.OpenMem(p.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	head := make([]byte, 5)
	if err := mem.ReadAt(head, st[0].Functions[0].Site); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(head[:4], []byte{0xf3, 0x0f, 0x1e, 0xfa}) || head[4] != 0xe9 {
		t.Errorf("site of endbr holds % x; want endbr64 kept, then the jmp", head)
	}
	if _, err := livepatch.Revert(context.Background(), p.Pid, "hf-cet", livepatch.Options{}); err != nil {
		t.Fatal(err)
	}
	p.Expect("endbr", "5")
}

func TestBranchIntoJumpForcesQuiescent(t *testing.T) {
	bin := lptest.BuildTarget(t, "testdata/target.c", "target")
	p := lptest.Start(t, bin)
	p.Expect("loopy", "10")
	b := lptest.MakeBundle(t, bin, "hf-loop", 1, lptest.Fn{Old: "loopy", Code: lptest.Ret(11)})
	res, err := livepatch.Apply(context.Background(), p.Pid, b, livepatch.Options{})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if len(res.Quiescent) != 1 || !strings.HasPrefix(res.Quiescent[0], "loopy: switched in quiescent mode because the jl") {
		t.Errorf("result says quiescent %q; want loopy forced to quiescent because of its jl", res.Quiescent)
	}
	p.Expect("loopy", "11")
}

func TestQuiescentSucceedsWhenFunctionIdlesSometimes(t *testing.T) {
	bin := lptest.BuildTarget(t, "testdata/target.c", "target")
	p := lptest.Start(t, bin, "busy")
	b := lptest.MakeBundle(t, bin, "hf-busy", 1, lptest.Fn{Old: "busy", Code: lptest.Ret(33), Quiescent: true})
	res, err := livepatch.Apply(context.Background(), p.Pid, b, livepatch.Options{Deadline: 10 * time.Second})
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	if len(res.Quiescent) != 1 {
		t.Errorf("result lists quiescent functions %q, want busy", res.Quiescent)
	}
	p.Expect("busy", "33")
}

func TestQuiescentFailsInTimeOnFunctionThatNeverReturns(t *testing.T) {
	bin := lptest.BuildTarget(t, "testdata/target.c", "target")
	p := lptest.Start(t, bin, "forever")
	time.Sleep(50 * time.Millisecond) // let the thread enter forever()
	b := lptest.MakeBundle(t, bin, "hf-forever", 1,
		lptest.Fn{Old: "forever", Code: lptest.Ret(44), Quiescent: true}, lptest.Fn{Old: "answer", Code: lptest.Ret(42)})
	deadline := 300 * time.Millisecond
	t0 := time.Now()
	_, err := livepatch.Apply(context.Background(), p.Pid, b, livepatch.Options{Deadline: deadline})
	took := time.Since(t0)
	var busy *livepatch.BusyError
	if !errors.As(err, &busy) || !errors.Is(err, livepatch.ErrBusy) {
		t.Fatalf("apply: %v, want a BusyError", err)
	}
	if busy.Func != "forever" || !busy.InPC || !strings.Contains(err.Error(), "function forever is running in thread") {
		t.Errorf("error %q does not name forever as running", err)
	}
	if took > deadline+2*time.Second {
		t.Errorf("apply gave up after %s, the deadline was %s", took, deadline)
	}
	// Nothing changed: the other function is not patched, no region is left.
	p.Expect("answer", "1")
	if st := status(t, p.Pid); len(st) != 0 {
		t.Errorf("a failed apply left regions: %+v", st)
	}
}

// TestReplacedRegionStaysWhileInUse replaces a level while a thread is still
// running inside its code: the old region must stay mapped (superseded)
// because unmapping it would crash that thread.
func TestReplacedRegionStaysWhileInUse(t *testing.T) {
	bin := lptest.BuildTarget(t, "testdata/target.c", "target")
	p := lptest.Start(t, bin, "busy")
	ctx := context.Background()
	// Level 1 makes busy() spin forever: the busy thread's next call stays in it.
	spin := []byte{0xeb, 0xfe}
	l1 := lptest.MakeBundle(t, bin, "hf-spin", 1, lptest.Fn{Old: "busy", Code: spin})
	if _, err := livepatch.Apply(ctx, p.Pid, l1, livepatch.Options{}); err != nil {
		t.Fatalf("apply level 1: %v", err)
	}
	time.Sleep(100 * time.Millisecond) // the busy thread enters the level 1 code
	l2 := lptest.MakeBundle(t, bin, "hf-spin", 2, lptest.Fn{Old: "busy", Code: lptest.Ret(33)})
	if _, err := livepatch.Apply(ctx, p.Pid, l2, livepatch.Options{}); err != nil {
		t.Fatalf("apply level 2: %v", err)
	}
	p.Expect("busy", "33")
	if _, err := livepatch.Recover(ctx, p.Pid, livepatch.Options{}); err != nil {
		t.Fatalf("recover: %v", err)
	}
	st := status(t, p.Pid)
	states := map[uint32]string{}
	for _, a := range st {
		states[a.Level] = a.State
		if !a.Consistent {
			t.Errorf("region %+v is not consistent", a)
		}
	}
	if len(st) != 2 || states[1] != "superseded" || states[2] != "applied" {
		t.Fatalf("status = %+v; want level 1 kept superseded (a thread runs in it) and level 2 applied", st)
	}
}
