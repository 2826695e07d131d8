package agent_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"hotfleet/internal/agent"
	"hotfleet/internal/api"
	"hotfleet/internal/livepatch/lptest"
)

// startManagedAgent runs the real agent binary under a control plane.
func startManagedAgent(t *testing.T, server, stateDir, socket string, extra ...string) *agentProc {
	t.Helper()
	args := append([]string{"agent", "--server", server, "--state-dir", stateDir, "--socket", socket, "--no-notify", "--log-level", "debug"}, extra...)
	cmd := exec.Command(hotfleetBin(t), args...)
	os.MkdirAll(stateDir, 0o700)
	logPath := filepath.Join(stateDir, fmt.Sprintf("agent-%d.log", time.Now().UnixNano()))
	lf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the agent: %v", err)
	}
	a := &agentProc{t: t, cmd: cmd, socket: socket, logPath: logPath, done: make(chan error, 1), stateDir: stateDir}
	go func() { a.done <- cmd.Wait(); lf.Close() }()
	t.Cleanup(func() {
		a.stop()
		if t.Failed() {
			a.dumpLog()
		}
	})
	return a
}

func waitReports(t *testing.T, f *agent.FakeControlPlane, what string, timeout time.Duration, ok func(agent.Report) bool) agent.Report {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		rs, _ := f.Reports()
		for _, r := range rs {
			if ok(r) {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no report of %s within %s; %d reports received", what, timeout, len(rs))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The agent as a separate process under a control plane: it enrolls, takes
// an assignment within a second of the server's change, reports the
// outcome with the bundle's hash both as a report and in its next check-in,
// reverts a withdrawn bundle as fast, and an agent restarted while the
// server is down keeps enforcing what it was last assigned.
func TestAgentUnderControlPlane(t *testing.T) {
	p := buildPrograms(t)
	f := agent.NewFakeControlPlane(t, "tok")
	d := t.TempDir()
	stateDir, socket := filepath.Join(d, "state"), filepath.Join(d, "agent.sock")

	tg := lptest.StartGrandchild(t, p.target)
	t.Cleanup(tg.Kill)
	tg.Expect("exe", "1")

	a := startManagedAgent(t, f.Srv.URL, stateDir, socket, "--enroll-token", "tok", "--label", "site=lab")
	a.waitStatus(t, "the first check-in", 10*time.Second, func(s agent.Status) bool {
		return s.ControlPlane != nil && s.ControlPlane.DeviceID == 7 && !s.ControlPlane.LastCheckIn.IsZero() && s.ControlPlane.LastError == ""
	})
	first := f.WaitCheckIn(t, "the inventory", 5*time.Second, func(c api.CheckIn) bool { return c.Inventory != nil })
	found := false
	for _, m := range first.Inventory.Modules {
		found = found || (m.Name == "target" && m.Processes >= 1)
	}
	if !found || first.InventoryHash == "" || !first.Ready {
		t.Errorf("first check-in: inventory without the target, no hash, or not ready: ready %v, hash %q", first.Ready, first.InventoryHash)
	}

	t0 := time.Now()
	shas := f.Assign(bundleFor(t, p.target, "exe_answer", "fix-exe", 1, 2))
	waitCall(t, tg, "exe", "2", 10*time.Second)
	if d := time.Since(t0); d > 3*time.Second {
		t.Errorf("the assignment took %s from the server's change to the process; want about a second", d)
	}
	f.WaitCheckIn(t, "the bundle applied in the target", 10*time.Second, func(c api.CheckIn) bool {
		return len(c.Bundles) == 1 && c.Bundles[0].SHA256 == shas[0] && c.Bundles[0].Applied >= 1 && c.Bundles[0].Pending == 0 && c.Bundles[0].Failing == 0
	})
	waitReports(t, f, "the apply with its bundle", 10*time.Second, func(r agent.Report) bool {
		return r.Kind == agent.KindApplied && r.Pid == tg.Pid && r.Bundle == shas[0]
	})

	// Withdrawn (a rollback): reverted within about a second.
	t0 = time.Now()
	f.Assign()
	waitCall(t, tg, "exe", "1", 10*time.Second)
	if d := time.Since(t0); d > 3*time.Second {
		t.Errorf("the withdrawal took %s to reach the process; want about a second", d)
	}
	waitReports(t, f, "the revert with its bundle", 10*time.Second, func(r agent.Report) bool {
		return r.Kind == agent.KindReverted && r.Pid == tg.Pid && r.Bundle == shas[0]
	})
	if _, err := os.Stat(filepath.Join(stateDir, "bundles", shas[0]+".hfp")); err == nil {
		t.Error("the withdrawn bundle is still cached")
	}

	// A crash soon after a patch names the bundle, so the server can halt
	// the release it belongs to.
	crasher := exec.Command(p.target)
	in, _ := crasher.StdinPipe()
	if err := crasher.Start(); err != nil {
		t.Fatal(err)
	}
	defer crasher.Process.Kill()
	// xor %eax,%eax; movl %eax,(%rax): a write to address 0.
	bad := f.Assign(lptest.MakeBundle(t, p.target, "bad-fix", 1, lptest.Fn{Old: "exe_crash", Code: []byte{0x31, 0xc0, 0x89, 0x00, 0xc3}}))
	a.waitStatus(t, "the crasher patched", 10*time.Second, func(s agent.Status) bool { return procState(s, crasher.Process.Pid) == agent.StatePatched })
	fmt.Fprintln(in, "crash")
	crasher.Wait()
	r := waitReports(t, f, "the crash", 10*time.Second, func(r agent.Report) bool { return r.Kind == agent.KindCrash && r.Pid == crasher.Process.Pid })
	if len(r.Bundles) != 1 || r.Bundles[0] != bad[0] {
		t.Errorf("crash report names bundles %v, want [%s]", r.Bundles, bad[0])
	}

	// Assigned again, then the agent restarts while the server is down: a
	// process started meanwhile gets the patch from what is on disk.
	f.Assign(bundleFor(t, p.target, "exe_answer", "fix-exe", 1, 2))
	waitCall(t, tg, "exe", "2", 10*time.Second)
	a.cmd.Process.Signal(syscall.SIGTERM)
	if !a.exited(10 * time.Second) {
		t.Fatal("the agent did not stop on SIGTERM")
	}
	server := f.Srv.URL
	f.Srv.Close()
	tg2 := lptest.StartGrandchild(t, p.target)
	t.Cleanup(tg2.Kill)
	a2 := startManagedAgent(t, server, stateDir, socket)
	waitCall(t, tg2, "exe", "2", 10*time.Second)
	s := a2.waitStatus(t, "a failed check-in", 10*time.Second, func(s agent.Status) bool {
		return s.ControlPlane != nil && s.ControlPlane.LastError != ""
	})
	if s.ControlPlane.Assignments != 1 || len(s.Assigned) != 1 {
		t.Errorf("offline: %d assignments, %d assigned; want the 1 from before", s.ControlPlane.Assignments, len(s.Assigned))
	}
	out, err := exec.Command(hotfleetBin(t), "agent", "status", "--socket", socket).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "checkin  FAILED") || !strings.Contains(string(out), "device 7") {
		t.Errorf("hotfleet agent status: %v\n%s", err, out)
	}
	if bad := f.BadSignatures(); len(bad) > 0 {
		t.Errorf("requests with bad signatures: %v", bad)
	}
}

// The agent takes its assignments from one place: the control plane or a
// patch directory, from flags or the config file, and says so otherwise.
func TestAgentModeChoice(t *testing.T) {
	f := agent.NewFakeControlPlane(t, "tok")
	d := t.TempDir()
	conf := func(js string) string {
		p := filepath.Join(t.TempDir(), "agent.json")
		os.WriteFile(p, []byte(js), 0o644)
		return p
	}
	tokFile := filepath.Join(d, "token")
	os.WriteFile(tokFile, []byte("wrong-token\n"), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{}, "needs --patch-dir DIR (standalone) or --server URL"},
		{[]string{"--server", f.Srv.URL, "--patch-dir", d}, "not both"},
		{[]string{"--server", f.Srv.URL, "--report-url", "http://x"}, "--report-url is for --patch-dir mode"},
		{[]string{"--patch-dir", d, "--enroll-token", "x"}, "need --server"},
		{[]string{"--server", f.Srv.URL, "--label", "nokey"}, "give KEY=VALUE"},
		{[]string{"--server", "ftp://x", "--enroll-token", "x"}, "want http(s)://HOST"},
		{[]string{"--server", f.Srv.URL}, "not enrolled with " + f.Srv.URL + ": give --enroll-token"},
		{[]string{"--server", f.Srv.URL, "--enroll-token-file", tokFile}, "enrollment refused: the enrollment token is expired or used up; create a new token with 'hotfleet token create'"},
		{[]string{"--config", conf(`{"server": "` + f.Srv.URL + `", "enroll_token": "nope"}`)}, "enrollment refused"},
		{[]string{"--config", conf(`{"server": "` + f.Srv.URL + `", "labels": {"a=b": "c"}}`)}, `label "a=b"`},
		// A flag chooses the mode over the config file.
		{[]string{"--config", conf(`{"server": "` + f.Srv.URL + `"}`), "--patch-dir", filepath.Join(d, "missing"), "--report-url", "http://x", "--socket", filepath.Join(d, "s"), "--no-notify"}, "read the patch directory"},
	} {
		stateDir := filepath.Join(t.TempDir(), "state")
		args := append([]string{"agent", "--state-dir", stateDir}, tc.args...)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, hotfleetBin(t), args...).CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("hotfleet %s: err %v, output %q; want %q", strings.Join(args, " "), err, out, tc.want)
		}
		if _, err := os.Stat(filepath.Join(stateDir, "identity.json")); err == nil {
			t.Errorf("hotfleet %s wrote an identity", strings.Join(args, " "))
		}
	}
}
