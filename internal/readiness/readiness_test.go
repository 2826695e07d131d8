package readiness

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
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

// noCapEnv makes the test binary, re-executed without CAP_SYS_PTRACE, run
// Run probing the pid in the variable and print the report as JSON.
const noCapEnv = "HOTFLEET_READINESS_TEST_NOCAP"

func TestMain(m *testing.M) {
	if os.Getenv(ProbeEnv) == "1" {
		ProbeTargetMain()
	}
	if v := os.Getenv(noCapEnv); v != "" {
		pid, err := strconv.Atoi(v)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bad", noCapEnv, v)
			os.Exit(2)
		}
		dir, err := os.MkdirTemp("", "readiness-nocap")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		defer os.RemoveAll(dir)
		r := Run(context.Background(), Options{StateDir: dir, Probe: true, ProbePID: pid})
		if err := json.NewEncoder(os.Stdout).Encode(r); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func byName(t *testing.T, r Report, name string) Check {
	t.Helper()
	for _, c := range r.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("report has no %q check: %+v", name, r.Checks)
	return Check{}
}

func fixture(dir, machine string, now time.Time) sys {
	return sys{
		root:    filepath.Join("testdata", dir),
		machine: func() (string, string, error) { return machine, "0.0.0-fixture", nil },
		now:     func() time.Time { return now },
	}
}

// fixtureNow is the real time: the state dirs the checks look at are fresh
// temp dirs, stamped with the real clock.
var fixtureNow = time.Now().Round(0)

func TestFixtureReady(t *testing.T) {
	r := fixture("good", "x86_64", fixtureNow).check(context.Background(), Options{StateDir: t.TempDir()})
	if !r.Ready || len(r.Failing()) != 0 {
		t.Fatalf("the good fixture is not ready: %+v", r.Failing())
	}
	var names []string
	for _, c := range r.Checks {
		names = append(names, c.Name)
	}
	if strings.Join(names, ",") != strings.Join(Names, ",") {
		t.Fatalf("checks in order %v, want %v", names, Names)
	}
	for name, want := range map[string]string{
		"ptrace-capability": "CapEff=000001fffeffffff (CAP_SYS_PTRACE)",
		"yama":              "ptrace_scope=1",
		"selinux":           "enforcing, deny_ptrace=0 0",
		"kernel":            "6.18.44-fc-v669",
		"proc-mem":          "not probed",
	} {
		if got := byName(t, r, name).Detail; got != want {
			t.Errorf("%s detail %q, want %q", name, got, want)
		}
	}
	if !r.At.Equal(fixtureNow) {
		t.Errorf("report at %v, want %v", r.At, fixtureNow)
	}
}

func TestFixtureChecks(t *testing.T) {
	future := t.TempDir()
	if err := os.WriteFile(filepath.Join(future, "state.db"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	ahead := fixtureNow.Add(72 * time.Hour)
	if err := os.Chtimes(filepath.Join(future, "state.db"), ahead, ahead); err != nil {
		t.Fatal(err)
	}
	slightlyAhead := t.TempDir()
	if err := os.Chtimes(slightlyAhead, fixtureNow.Add(time.Hour), fixtureNow.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		dir, machine string
		now          time.Time
		opts         Options
		check        string
		ok           bool
		reason       string // substring of Reason ("" = must be empty)
		action       string // substring of Action
		detail       string // substring of Detail
	}{
		{dir: "good", machine: "aarch64", check: "arch", reason: "not yet supported", action: "package updates", detail: "aarch64"},
		{dir: "good", machine: "ppc64le", check: "arch", reason: "ppc64le architecture is not supported", action: "x86-64 devices only"},
		{dir: "no-cap", check: "ptrace-capability", reason: "lacks CAP_SYS_PTRACE", action: "CAP_SYS_PTRACE", detail: "CapEff=000001fffef7ffff"},
		{dir: "empty", check: "ptrace-capability", reason: "read /proc/self/status", action: "/proc is mounted"},
		{dir: "empty", check: "yama", ok: true, detail: "Yama is not built into this kernel"},
		{dir: "yama-3", check: "yama", reason: "forbids every ptrace attach", action: "reboot", detail: "ptrace_scope=3"},
		{dir: "yama-2-no-cap", check: "yama", reason: "only CAP_SYS_PTRACE holders", action: "CAP_SYS_PTRACE", detail: "ptrace_scope=2"},
		{dir: "yama-2", check: "yama", ok: true, detail: "the agent has CAP_SYS_PTRACE"},
		{dir: "selinux-deny-ptrace", check: "selinux", reason: "deny_ptrace on", action: "setsebool -P deny_ptrace 0", detail: "deny_ptrace=1 1"},
		{dir: "selinux-permissive", check: "selinux", ok: true, detail: "permissive"},
		{dir: "empty", check: "selinux", ok: true, detail: "not enabled"},
		{dir: "lockdown-confidentiality", check: "lockdown", ok: true, detail: "lockdown=confidentiality"},
		{dir: "good", check: "lockdown", ok: true, detail: "lockdown=integrity"},
		{dir: "force-override-never", check: "proc-mem", reason: "proc_mem.force_override=never", action: "reboot"},
		{dir: "kernel-3.10", check: "kernel", reason: "older than 4.4", action: "upgrade the kernel", detail: "3.10.0-1160.el7.x86_64"},
		{dir: "kernel-5.15", check: "kernel", ok: true, reason: "show in /proc/PID/maps as memfd mappings", detail: "5.15.0-91-generic"},
		{dir: "good", opts: Options{MinFreeBytes: 1 << 62}, check: "disk", reason: "needed", action: "free space", detail: "free on"},
		{dir: "good", opts: Options{StateDir: "/nonexistent/hotfleet/state"}, check: "disk", ok: true, detail: "free on /"},
		{dir: "good", now: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), check: "clock", reason: "it is not set", action: "NTP", detail: "2000-01-01"},
		{dir: "good", opts: Options{StateDir: future}, check: "clock", reason: "jumped back", action: "NTP", detail: "state.db"},
		{dir: "good", opts: Options{StateDir: slightlyAhead}, check: "clock", ok: true},
	}
	for _, tc := range tests {
		t.Run(tc.dir+"/"+tc.check, func(t *testing.T) {
			machine, now := tc.machine, tc.now
			if machine == "" {
				machine = "x86_64"
			}
			if now.IsZero() {
				now = fixtureNow
			}
			opts := tc.opts
			if opts.StateDir == "" {
				opts.StateDir = t.TempDir()
			}
			r := fixture(tc.dir, machine, now).check(context.Background(), opts)
			c := byName(t, r, tc.check)
			if c.OK != tc.ok {
				t.Fatalf("%s OK=%v, want %v: %+v", tc.check, c.OK, tc.ok, c)
			}
			if !tc.ok && r.Ready {
				t.Errorf("report ready although %s fails", tc.check)
			}
			if tc.reason == "" && c.Reason != "" || !strings.Contains(c.Reason, tc.reason) {
				t.Errorf("reason %q, want it to contain %q", c.Reason, tc.reason)
			}
			if !strings.Contains(c.Action, tc.action) || c.OK && c.Action != "" {
				t.Errorf("action %q, want it to contain %q (and none when OK)", c.Action, tc.action)
			}
			if !strings.Contains(c.Detail, tc.detail) {
				t.Errorf("detail %q, want it to contain %q", c.Detail, tc.detail)
			}
		})
	}
}

func TestEqual(t *testing.T) {
	s := fixture("good", "x86_64", fixtureNow)
	a := s.check(context.Background(), Options{StateDir: t.TempDir()})
	b := s.check(context.Background(), Options{StateDir: t.TempDir()})
	b.At = b.At.Add(time.Hour)
	b.Checks = append([]Check(nil), b.Checks...)
	for i := range b.Checks {
		if b.Checks[i].Name == "disk" {
			b.Checks[i].Detail = "1.0 GiB free on /elsewhere"
		}
	}
	if !a.Equal(b) {
		t.Fatalf("reports differing in time and free space of a sufficient disk are not equal:\n%+v\n%+v", a, b)
	}
	c := s.check(context.Background(), Options{StateDir: t.TempDir(), MinFreeBytes: 1 << 62})
	if a.Equal(c) || c.Equal(a) {
		t.Fatal("a report whose disk check fails equals one where it passes")
	}
	d := fixture("yama-3", "x86_64", fixtureNow).check(context.Background(), Options{StateDir: t.TempDir()})
	e := fixture("yama-3", "x86_64", fixtureNow).check(context.Background(), Options{StateDir: t.TempDir()})
	if !d.Equal(e) {
		t.Fatal("two reports of the same failing fixture are not equal")
	}
	f := a
	f.Checks = append([]Check(nil), a.Checks...)
	f.Checks[2].Detail = "ptrace_scope=0"
	if a.Equal(f) {
		t.Fatal("a changed yama detail is not a change")
	}
}

// TestHostReady runs the real checks, with the real probe, on this machine,
// which CI sets up to be hot patchable.
func TestHostReady(t *testing.T) {
	testenv.NeedRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	r := Run(ctx, Options{StateDir: filepath.Join(t.TempDir(), "not", "yet"), Probe: true})
	took := time.Since(start)
	for _, c := range r.Checks {
		t.Logf("%-17s ok=%-5v %s %s", c.Name, c.OK, c.Detail, c.Reason)
	}
	t.Logf("Check with probe took %v", took)
	if !r.Ready {
		t.Fatalf("this machine is not ready: %+v", r.Failing())
	}
	if d := byName(t, r, "proc-mem").Detail; !strings.Contains(d, "rewrote code and writable memory") {
		t.Fatalf("proc-mem detail %q does not say the probe wrote memory", d)
	}
}

func startProbeTarget(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), ProbeEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != probeReady {
		t.Fatalf("probe target printed %q, %v", line, err)
	}
	return cmd
}

// TestWithoutCapability runs Run in a copy of the test binary started
// without CAP_SYS_PTRACE: the capability check must say so, and the probe of
// a root process holding every capability must fail with the kernel's EPERM.
func TestWithoutCapability(t *testing.T) {
	testenv.NeedRoot(t)
	var args []string
	if p, err := exec.LookPath("setpriv"); err == nil {
		args = []string{p, "--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace", "--", os.Args[0]}
	} else if p, err := exec.LookPath("capsh"); err == nil {
		args = []string{p, "--drop=cap_sys_ptrace", "--", "-c", "exec " + os.Args[0]}
	} else {
		if testenv.InCI() {
			t.Fatal("CI=true but neither setpriv (util-linux) nor capsh (libcap2-bin) is installed")
		}
		t.Skip("needs setpriv (util-linux) or capsh (libcap2-bin) to drop CAP_SYS_PTRACE")
	}
	target := startProbeTarget(t)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), noCapEnv+"="+strconv.Itoa(target.Process.Pid))
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
	var r Report
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("decode the report of the capability-less run: %v\n%s", err, out)
	}
	if r.Ready {
		t.Fatal("ready without CAP_SYS_PTRACE")
	}
	c := byName(t, r, "ptrace-capability")
	if c.OK || !strings.Contains(c.Reason, "lacks CAP_SYS_PTRACE") || !strings.Contains(c.Action, "CAP_SYS_PTRACE") {
		t.Errorf("ptrace-capability without the capability: %+v", c)
	}
	p := byName(t, r, "proc-mem")
	if p.OK || !strings.Contains(p.Reason, "PTRACE_SEIZE") || !strings.Contains(p.Reason, "operation not permitted") {
		t.Errorf("probe of root pid %d without the capability: %+v", target.Process.Pid, p)
	}
	t.Logf("ptrace-capability: %s (%s)", c.Reason, c.Detail)
	t.Logf("proc-mem: %s; action: %s", p.Reason, p.Action)
}

// TestProbeLeavesProcessRunning probes a running process named by pid and
// checks it is afterwards neither traced nor stopped, and still alive.
func TestProbeLeavesProcessRunning(t *testing.T) {
	testenv.NeedRoot(t)
	target := startProbeTarget(t)
	pid := target.Process.Pid
	r := Run(context.Background(), Options{StateDir: t.TempDir(), Probe: true, ProbePID: pid})
	p := byName(t, r, "proc-mem")
	if !p.OK || !strings.Contains(p.Detail, fmt.Sprintf("attached to pid %d", pid)) || !strings.Contains(p.Detail, "rewrote code through") {
		t.Fatalf("probe of pid %d: %+v", pid, p)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("the probed process is gone: %v", err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "TracerPid:"); ok && strings.TrimSpace(v) != "0" {
			t.Errorf("pid %d still traced after the probe: %s", pid, line)
		}
		if v, ok := strings.CutPrefix(line, "State:"); ok && !strings.HasPrefix(strings.TrimSpace(v), "S") && !strings.HasPrefix(strings.TrimSpace(v), "R") {
			t.Errorf("pid %d left %s after the probe", pid, line)
		}
	}
}
