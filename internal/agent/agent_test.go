package agent_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"hotfleet/internal/agent"
	"hotfleet/internal/livepatch"
	"hotfleet/internal/livepatch/lptest"
)

// A device with programs started before and after a patch arrives, one of
// them loading the patched library late with dlopen(): every one ends up
// running the fixed code; a higher level replaces the lower; a withdrawn
// patch is reverted everywhere.
func TestAgentKeepsProcessesPatched(t *testing.T) {
	p := buildPrograms(t)
	e := newEnv(t)
	rcv := newReceiver(t)
	o := e.opts()
	o.reportURL = rcv.srv.URL
	a := startAgent(t, o)

	var before []*lptest.Target
	for range 3 {
		tg := lptest.StartGrandchild(t, p.target)
		t.Cleanup(tg.Kill)
		tg.Expect("exe", "1")
		tg.Expect("lib", "1")
		before = append(before, tg)
	}
	a.waitStatus(t, "the agent to see the device", 10*time.Second, func(s agent.Status) bool { return s.Readiness.Ready })

	drop(t, e.patchDir, bundleFor(t, p.target, "exe_answer", "fix-exe", 1, 2))
	drop(t, e.patchDir, bundleFor(t, p.libfix, "lib_answer", "fix-lib", 1, 2))
	drop(t, e.patchDir, bundleFor(t, p.libdl, "dl_answer", "fix-dl", 1, 2))
	for _, tg := range before {
		waitCall(t, tg, "exe", "2", 10*time.Second)
		waitCall(t, tg, "lib", "2", 10*time.Second)
	}

	// Programs started after the patch arrived are patched as they start.
	var after []*lptest.Target
	for range 3 {
		tg := lptest.StartGrandchild(t, p.target)
		t.Cleanup(tg.Kill)
		after = append(after, tg)
	}
	for _, tg := range after {
		waitCall(t, tg, "exe", "2", 5*time.Second)
		waitCall(t, tg, "lib", "2", 5*time.Second)
	}

	// A library loaded late with dlopen() is patched too.
	late := after[0]
	late.Expect("dl "+p.libdl, "ok")
	waitCall(t, late, "dlcall", "2", 10*time.Second)

	var pids []int
	for _, tg := range append(before, after...) {
		pids = append(pids, tg.Pid)
	}
	s := a.waitStatus(t, "every target patched", 10*time.Second, func(s agent.Status) bool { return allIn(s, agent.StatePatched, pids...) })
	if len(s.Assigned) != 3 {
		t.Errorf("status lists %d assigned patches, want 3", len(s.Assigned))
	}
	if s.Latency.Count < len(after) {
		t.Errorf("exec→patched measured for %d processes, want at least %d", s.Latency.Count, len(after))
	}
	t.Logf("exec→patched: %d processes, p50 %d µs, p99 %d µs", s.Latency.Count, s.Latency.P50US, s.Latency.P99US)

	// The command shows the same, in words and in JSON.
	out, err := exec.Command(hotfleetBin(t), "agent", "status", "--socket", e.socket).CombinedOutput()
	if err != nil {
		t.Fatalf("hotfleet agent status: %v\n%s", err, out)
	}
	for _, want := range []string{"hotpatch-ready", "assigned fix-exe level 1", "patched", fmt.Sprint(before[0].Pid)} {
		if !strings.Contains(string(out), want) {
			t.Errorf("agent status does not say %q:\n%s", want, out)
		}
	}
	out, err = exec.Command(hotfleetBin(t), "agent", "status", "--json", "--socket", e.socket).Output()
	if err != nil {
		t.Fatalf("hotfleet agent status --json: %v", err)
	}
	var js agent.Status
	if err := json.Unmarshal(out, &js); err != nil || procState(js, before[0].Pid) != agent.StatePatched {
		t.Errorf("agent status --json: %v, state of pid %d %q", err, before[0].Pid, procState(js, before[0].Pid))
	}

	// Reports reached the receiver: one apply per process and patch.
	rcv.waitReport(t, "applied fix-lib to a late process", 10*time.Second, func(r agent.Report) bool {
		return r.Kind == agent.KindApplied && r.PatchID == "fix-lib" && r.Pid == after[2].Pid
	})

	// Level 2 replaces level 1 in one step.
	drop(t, e.patchDir, bundleFor(t, p.target, "exe_answer", "fix-exe-2", 2, 3))
	for _, tg := range append(before, after...) {
		waitCall(t, tg, "exe", "3", 10*time.Second)
	}
	// Withdrawing the level 2 bundle and the library one reverts them; the
	// level 1 bundle, still assigned, comes back.
	os.Remove(filepath.Join(e.patchDir, "fix-exe-2.hfp"))
	os.Remove(filepath.Join(e.patchDir, "fix-lib.hfp"))
	for _, tg := range append(before, after...) {
		waitCall(t, tg, "lib", "1", 10*time.Second)
		waitCall(t, tg, "exe", "2", 10*time.Second)
	}
	rcv.waitReport(t, "reverted fix-lib", 10*time.Second, func(r agent.Report) bool {
		return r.Kind == agent.KindReverted && r.PatchID == "fix-lib"
	})
}

// The agent is killed with SIGKILL again and again while it enforces, with
// the report server down: no process crashes, nothing is applied twice, the
// final state is right and every report arrives once the server is back.
func TestAgentSurvivesKillDuringEnforcement(t *testing.T) {
	p := buildPrograms(t)
	e := newEnv(t)
	rcv := newReceiver(t)
	rcv.setRefuse(true)
	o := e.opts()
	o.reportURL = rcv.srv.URL

	const n = 16
	var targets []*lptest.Target
	for range n {
		tg := lptest.StartGrandchild(t, p.target)
		t.Cleanup(tg.Kill)
		targets = append(targets, tg)
	}
	drop(t, e.patchDir, bundleFor(t, p.target, "exe_answer", "fix-exe", 1, 2))
	drop(t, e.patchDir, bundleFor(t, p.libfix, "lib_answer", "fix-lib", 1, 2))

	// Kills at random moments, and kills at the worst moments: between
	// the decision and the apply, with a region prepared but not switched,
	// switched but not recorded, applied but not reported.
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	points := []string{"prepared:3", "", "after-apply:2", "applied:2", "before-apply:3", "", "after-apply:1", "prepared:1", ""}
	for round, fp := range points {
		ro := o
		if fp != "" {
			ro.env = []string{"HOTFLEET_AGENT_FAILPOINT=" + fp}
		}
		a := startAgent(t, ro)
		how := "killed at a random moment"
		if fp == "" {
			time.Sleep(time.Duration(150+rng.Intn(150)) * time.Millisecond)
			a.kill()
		} else if a.exited(5 * time.Second) {
			how = "killed itself at " + fp
		} else {
			a.kill()
			how = "never reached " + fp + "; killed"
		}
		patched := 0
		for _, tg := range targets {
			if st, err := livepatch.Status(context.Background(), tg.Pid); err == nil {
				patched += len(st)
			}
		}
		t.Logf("round %d: agent %s; %d of %d regions in place", round, how, patched, 2*n)
	}
	rcv.setRefuse(false)
	a := startAgent(t, o)
	var pids []int
	for _, tg := range targets {
		pids = append(pids, tg.Pid)
	}
	a.waitStatus(t, "every target patched after the restarts", 30*time.Second, func(s agent.Status) bool {
		return allIn(s, agent.StatePatched, pids...) && s.Queue.Queued == 0
	})
	for _, tg := range targets {
		tg.Expect("exe", "2")
		tg.Expect("lib", "2")
		// Exactly one region per module, applied and consistent: nothing
		// was applied twice, nothing left half done.
		st, err := livepatch.Status(context.Background(), tg.Pid)
		if err != nil {
			t.Fatal(err)
		}
		if len(st) != 2 {
			t.Errorf("pid %d holds %d regions, want 2: %+v", tg.Pid, len(st), st)
		}
		for _, r := range st {
			if r.State != "applied" || !r.Consistent {
				t.Errorf("pid %d: region %s is %s (consistent %v: %s)", tg.Pid, r.PatchID, r.State, r.Consistent, r.Problem)
			}
		}
	}
	// Every apply was reported, once the server came back, though the
	// agent that did it was killed.
	reps, seqs := rcv.snapshot()
	got := map[string]int{}
	for _, r := range reps {
		if r.Kind == agent.KindApplied {
			got[fmt.Sprintf("%d/%s", r.Pid, r.PatchID)]++
		}
	}
	for _, pid := range pids {
		for _, id := range []string{"fix-exe", "fix-lib"} {
			if got[fmt.Sprintf("%d/%s", pid, id)] == 0 {
				t.Errorf("no applied report for %s in pid %d", id, pid)
			}
		}
	}
	// Sequence numbers have no gaps: no queued report was lost.
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Errorf("reports %d..%d are missing", seqs[i-1]+1, seqs[i]-1)
		}
	}
	t.Logf("%d reports received, seq %d..%d", len(seqs), seqs[0], seqs[len(seqs)-1])
}

// A patch that makes the program crash is reported with the signal and the
// patch id: the signal that halts a bad rollout.
func TestAgentReportsCrashAfterPatch(t *testing.T) {
	p := buildPrograms(t)
	e := newEnv(t)
	rcv := newReceiver(t)
	o := e.opts()
	o.reportURL = rcv.srv.URL
	a := startAgent(t, o)

	cmd := exec.Command(p.target)
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	// xor %eax,%eax; movl %eax,(%rax): a write to address 0.
	bad := lptest.MakeBundle(t, p.target, "bad-fix", 1, lptest.Fn{Old: "exe_crash", Code: []byte{0x31, 0xc0, 0x89, 0x00, 0xc3}})
	drop(t, e.patchDir, bad)
	a.waitStatus(t, "the target patched", 10*time.Second, func(s agent.Status) bool { return procState(s, cmd.Process.Pid) == agent.StatePatched })
	fmt.Fprintln(in, "crash")
	err := cmd.Wait()
	out.Close()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if err == nil || !ws.Signaled() || ws.Signal() != syscall.SIGSEGV {
		t.Fatalf("the target was to die of SIGSEGV; it ended with %v", err)
	}
	r := rcv.waitReport(t, "crash", 10*time.Second, func(r agent.Report) bool { return r.Kind == agent.KindCrash && r.Pid == cmd.Process.Pid })
	if r.PatchID != "bad-fix" || r.Level != 1 || r.Signal != "SIGSEGV" || r.SinceApplyS <= 0 {
		t.Errorf("crash report %+v: want patch bad-fix level 1, SIGSEGV, a time since the patch", r)
	}
}

// Without CAP_SYS_PTRACE the agent says it is not ready, why, and what to
// do; and it patches nothing.
func TestAgentReadinessWithoutPtrace(t *testing.T) {
	p := buildPrograms(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatalf("setpriv (util-linux) is needed to drop a capability: %v", err)
	}
	e := newEnv(t)
	tg := lptest.StartGrandchild(t, p.target)
	t.Cleanup(tg.Kill)
	drop(t, e.patchDir, bundleFor(t, p.target, "exe_answer", "fix-exe", 1, 2))
	o := e.opts()
	o.wrap = []string{setpriv, "--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace"}
	a := startAgent(t, o)
	s := a.waitStatus(t, "readiness checked", 10*time.Second, func(s agent.Status) bool { return !s.Readiness.At.IsZero() })
	if s.Readiness.Ready {
		t.Fatalf("agent without CAP_SYS_PTRACE says it is ready: %+v", s.Readiness)
	}
	var found bool
	for _, c := range s.Readiness.Failing() {
		if c.Name == "ptrace-capability" {
			found = true
			if c.Reason == "" || c.Action == "" {
				t.Errorf("check %s fails without a reason or action: %+v", c.Name, c)
			}
		}
	}
	if !found {
		t.Errorf("readiness does not name the missing capability: %+v", s.Readiness.Checks)
	}
	out, _ := exec.Command(hotfleetBin(t), "agent", "status", "--socket", e.socket).CombinedOutput()
	if !bytes.Contains(out, []byte("NOT hotpatch-ready")) || !bytes.Contains(out, []byte("ptrace-capability")) {
		t.Errorf("agent status does not say why the device is not ready:\n%s", out)
	}
	// Without the capability the agent cannot even read other processes'
	// memory maps: nothing is touched.
	time.Sleep(time.Second)
	tg.Expect("exe", "1")
}

// A process in another mount namespace, whose executable does not exist in
// the agent's, is patched.
func TestAgentPatchesOtherMountNamespace(t *testing.T) {
	p := buildPrograms(t)
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatalf("unshare (util-linux) is needed: %v", err)
	}
	e := newEnv(t)
	drop(t, e.patchDir, bundleFor(t, p.target, "exe_answer", "fix-exe", 1, 2))
	a := startAgent(t, e.opts())

	// Inside a private mount namespace, a tmpfs over an empty directory
	// holds a copy of the program: that path has no file in the agent's
	// namespace.
	mnt := filepath.Join(t.TempDir(), "ns")
	os.MkdirAll(mnt, 0o755)
	script := fmt.Sprintf(`mount -t tmpfs none %[1]s && cp %[2]s %[1]s/target && cp %[3]s %[1]s/ && exec %[1]s/target`, mnt, p.target, p.libfix)
	tg := lptest.Start(t, unshare, "--mount", "--propagation", "private", "/bin/sh", "-c", script)
	t.Cleanup(tg.Kill)
	tg.Expect("exe", "1")
	if _, err := os.Stat(filepath.Join(mnt, "target")); err == nil {
		t.Fatal("the program's copy is visible outside its namespace: the test proves nothing")
	}
	waitCall(t, tg, "exe", "2", 10*time.Second)
	st, err := livepatch.Status(context.Background(), tg.Pid)
	if err != nil || len(st) != 1 {
		t.Fatalf("status of the namespaced target: %v %+v", err, st)
	}
	if want := bundleFor(t, p.target, "exe_answer", "x", 1, 2).Modules[0].BuildID; hex.EncodeToString(st[0].BuildID) != hex.EncodeToString(want) {
		t.Errorf("patched module %x, want %x", st[0].BuildID, want)
	}
	_ = a
}

// The first hot patch of the device tells the logged-in users (here: the
// message of the day, with the configured wording); later ones do not, even
// after a restart.
func TestAgentTellsUsersOnce(t *testing.T) {
	p := buildPrograms(t)
	e := newEnv(t)
	motd := filepath.Join(t.TempDir(), "motd.d", "hotfleet")
	os.MkdirAll(filepath.Dir(motd), 0o755)
	conf := filepath.Join(t.TempDir(), "agent.json")
	os.WriteFile(conf, []byte(fmt.Sprintf(`{"notify": true, "notify_body": "Fixed while you worked.", "notify_motd": %q}`, motd)), 0o644)
	o := e.opts()
	o.notify = true
	o.extra = []string{"--config", conf}
	drop(t, e.patchDir, bundleFor(t, p.target, "exe_answer", "fix-exe", 1, 2))
	a := startAgent(t, o)
	tg := lptest.StartGrandchild(t, p.target)
	t.Cleanup(tg.Kill)
	waitCall(t, tg, "exe", "2", 10*time.Second)
	a.waitStatus(t, "the users told", 10*time.Second, func(s agent.Status) bool { return s.Notified })
	b, err := os.ReadFile(motd)
	if err != nil || !strings.Contains(string(b), "Fixed while you worked.") {
		t.Fatalf("message of the day after the first patch: %q, %v", b, err)
	}
	a.stop()
	os.Remove(motd)

	a = startAgent(t, o)
	tg2 := lptest.StartGrandchild(t, p.target)
	t.Cleanup(tg2.Kill)
	waitCall(t, tg2, "exe", "2", 10*time.Second)
	time.Sleep(500 * time.Millisecond)
	if _, err := os.Stat(motd); err == nil {
		t.Errorf("the users were told again after a restart")
	}
}

// A bad config is refused with the field and the reason, before anything
// runs.
func TestAgentRefusesBadConfig(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct{ conf, want string }{
		{`{"workers": 1000}`, "workers 1000"},
		{`{"cpu_budget": -1}`, "cpu_budget"},
		{`{"events": "carrier-pigeon"}`, "events"},
		{`{"rescan": 5}`, "duration"},
		{`{"no_such_setting": 1}`, "unknown field"},
		{`{"workers": 1`, "unexpected EOF"},
	} {
		conf := filepath.Join(t.TempDir(), "agent.json")
		os.WriteFile(conf, []byte(tc.conf), 0o644)
		out, err := exec.Command(hotfleetBin(t), "agent", "--config", conf, "--patch-dir", e.patchDir, "--state-dir", e.stateDir, "--socket", e.socket).CombinedOutput()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("config %s: err %v, output %q; want a refusal naming %q", tc.conf, err, out, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(e.stateDir, "state.json")); err == nil {
		t.Errorf("a refused config still wrote agent state")
	}
}

// Where the kernel's process connector is unavailable, the agent polls
// /proc and still patches a process started after it.
func TestAgentPollMode(t *testing.T) {
	p := buildPrograms(t)
	e := newEnv(t)
	drop(t, e.patchDir, bundleFor(t, p.target, "exe_answer", "fix-exe", 1, 2))
	o := e.opts()
	o.extra = []string{"--events", "poll"}
	a := startAgent(t, o)
	a.waitStatus(t, "the agent in poll mode", 10*time.Second, func(s agent.Status) bool { return s.Events == "poll" && len(s.Assigned) == 1 })
	tg := lptest.StartGrandchild(t, p.target)
	t.Cleanup(tg.Kill)
	waitCall(t, tg, "exe", "2", 10*time.Second)
}
