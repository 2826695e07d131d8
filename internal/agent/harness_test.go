package agent_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"hotfleet/internal/agent"
	"hotfleet/internal/bundle"
	"hotfleet/internal/livepatch/lptest"
	"hotfleet/internal/testenv"
)

var (
	buildOnce sync.Once
	hotfleet  string
	buildErr  error
)

// hotfleetBin builds the real hotfleet binary once for all tests.
func hotfleetBin(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "hotfleet-agent-test")
		if err != nil {
			buildErr = err
			return
		}
		hotfleet, buildErr = testenv.BuildHotfleet(dir)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return hotfleet
}

// programs are the C programs under test, built once per test.
type programs struct {
	dir      string
	target   string // links libfix.so, can dlopen libdl.so
	libfix   string
	libdl    string
	short    string
	shortLib string // short, calling libfix.so
}

func buildPrograms(t testing.TB) *programs {
	t.Helper()
	testenv.NeedRoot(t)
	dir := t.TempDir()
	p := &programs{dir: dir}
	p.libfix = testenv.CC(t, filepath.Join(dir, "libfix.so"), "-O0", "-shared", "-fPIC", "testdata/libfix.c")
	p.libdl = testenv.CC(t, filepath.Join(dir, "libdl.so"), "-O0", "-shared", "-fPIC", "testdata/libdl.c")
	p.target = testenv.CC(t, filepath.Join(dir, "target"), "-O0", "testdata/target.c",
		"-L"+dir, "-lfix", "-Wl,-rpath,"+dir, "-ldl")
	p.short = testenv.CC(t, filepath.Join(dir, "short"), "-O0", "testdata/short.c")
	p.shortLib = testenv.CC(t, filepath.Join(dir, "shortlib"), "-O0", "-DLIB", "testdata/short.c", "-L"+dir, "-lfix", "-Wl,-rpath,"+dir)
	return p
}

// bundleFor makes a bundle replacing fn in bin with "return v".
func bundleFor(t testing.TB, bin, fn, id string, level, v uint32) *bundle.Bundle {
	t.Helper()
	return lptest.MakeBundle(t, bin, id, level, lptest.Fn{Old: fn, Code: lptest.Ret(v)})
}

// drop puts a bundle into the patch directory the way an admin should:
// written aside, then renamed in.
func drop(t testing.TB, dir string, b *bundle.Bundle) string {
	t.Helper()
	data, err := bundle.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, b.ID+".hfp")
	tmp := filepath.Join(dir, "."+b.ID+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// agentProc is one run of the real agent binary.
type agentProc struct {
	t        testing.TB
	cmd      *exec.Cmd
	socket   string
	logPath  string
	done     chan error
	stateDir string
}

type agentOpts struct {
	patchDir, stateDir, socket, reportURL string
	wrap                                  []string // command prefix, e.g. setpriv
	extra                                 []string
	env                                   []string
	notify                                bool
}

func startAgent(t testing.TB, o agentOpts) *agentProc {
	t.Helper()
	bin := hotfleetBin(t)
	args := []string{"agent", "--patch-dir", o.patchDir, "--state-dir", o.stateDir, "--socket", o.socket, "--log-level", "debug"}
	if !o.notify {
		args = append(args, "--no-notify")
	}
	if o.reportURL != "" {
		args = append(args, "--report-url", o.reportURL)
	}
	args = append(args, o.extra...)
	var cmd *exec.Cmd
	if len(o.wrap) > 0 {
		cmd = exec.Command(o.wrap[0], append(append(o.wrap[1:], bin), args...)...)
	} else {
		cmd = exec.Command(bin, args...)
	}
	cmd.Env = append(os.Environ(), o.env...)
	logPath := filepath.Join(o.stateDir, fmt.Sprintf("agent-%d.log", time.Now().UnixNano()))
	os.MkdirAll(o.stateDir, 0o700)
	lf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start the agent: %v", err)
	}
	a := &agentProc{t: t, cmd: cmd, socket: o.socket, logPath: logPath, done: make(chan error, 1), stateDir: o.stateDir}
	go func() { a.done <- cmd.Wait(); lf.Close() }()
	t.Cleanup(func() {
		a.stop()
		if t.Failed() {
			a.dumpLog()
		}
	})
	return a
}

func (a *agentProc) dumpLog() {
	b, _ := os.ReadFile(a.logPath)
	if len(b) > 20000 {
		b = b[len(b)-20000:]
	}
	a.t.Logf("agent log %s (tail):\n%s", a.logPath, b)
}

// stop ends the agent gracefully.
func (a *agentProc) stop() {
	if a.exited(0) {
		return
	}
	a.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-a.done:
	case <-time.After(10 * time.Second):
		a.cmd.Process.Kill()
		err = <-a.done
	}
	a.done <- err
}

// exited waits up to d for the agent to end by itself.
func (a *agentProc) exited(d time.Duration) bool {
	select {
	case err := <-a.done:
		a.done <- err
		return true
	case <-time.After(d):
		return false
	}
}

// kill ends the agent with SIGKILL, as a crash or OOM kill would.
func (a *agentProc) kill() {
	a.cmd.Process.Kill()
	err := <-a.done
	a.done <- err
}

func (a *agentProc) status(t testing.TB) agent.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := agent.QueryStatus(ctx, a.socket)
	if err != nil {
		t.Fatalf("agent status: %v", err)
	}
	return s
}

// waitStatus polls the agent's status until ok says so.
func (a *agentProc) waitStatus(t testing.TB, what string, timeout time.Duration, ok func(agent.Status) bool) agent.Status {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last agent.Status
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := agent.QueryStatus(ctx, a.socket)
		cancel()
		if err == nil {
			last = s
			if ok(s) {
				return s
			}
		}
		select {
		case err := <-a.done:
			a.done <- err
			t.Fatalf("the agent exited while waiting for %s: %v", what, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	js, _ := json.MarshalIndent(last, "", "  ")
	t.Fatalf("timed out after %s waiting for %s; last status:\n%s", timeout, what, js)
	return last
}

// waitCall polls a target until fn returns want.
func waitCall(t testing.TB, p *lptest.Target, fn, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	got := ""
	for time.Now().Before(deadline) {
		if got = p.Call(fn); got == want {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s in pid %d still returns %s after %s, want %s", fn, p.Pid, got, timeout, want)
}

// receiver is a report endpoint that records every report it accepts and
// can be told to refuse, as an unreachable server would.
type receiver struct {
	mu      sync.Mutex
	refuse  bool
	seqs    map[uint64]bool
	reports []agent.Report
	posts   int
	srv     *httptest.Server
}

func newReceiver(t testing.TB) *receiver {
	r := &receiver{seqs: map[uint64]bool{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.posts++
		if r.refuse {
			http.Error(w, "down for the test", http.StatusServiceUnavailable)
			return
		}
		var b struct {
			Device  string `json:"device"`
			Reports []struct {
				Seq    uint64          `json:"seq"`
				Report json.RawMessage `json:"report"`
			} `json:"reports"`
		}
		if err := json.NewDecoder(io.LimitReader(req.Body, 64<<20)).Decode(&b); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, it := range b.Reports {
			if r.seqs[it.Seq] {
				continue // delivery is at least once: a repeat is dropped by seq
			}
			r.seqs[it.Seq] = true
			var rep agent.Report
			if err := json.Unmarshal(it.Report, &rep); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.reports = append(r.reports, rep)
		}
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) setRefuse(v bool) {
	r.mu.Lock()
	r.refuse = v
	r.mu.Unlock()
}

func (r *receiver) snapshot() ([]agent.Report, []uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seqs := make([]uint64, 0, len(r.seqs))
	for s := range r.seqs {
		seqs = append(seqs, s)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	return append([]agent.Report(nil), r.reports...), seqs
}

// waitReport waits until a report matching ok arrived.
func (r *receiver) waitReport(t testing.TB, what string, timeout time.Duration, ok func(agent.Report) bool) agent.Report {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		reps, _ := r.snapshot()
		for _, rep := range reps {
			if ok(rep) {
				return rep
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	reps, _ := r.snapshot()
	var kinds []string
	for _, rep := range reps {
		kinds = append(kinds, fmt.Sprintf("%s(pid %d %s)", rep.Kind, rep.Pid, rep.PatchID))
	}
	t.Fatalf("no %s report within %s; got: %s", what, timeout, strings.Join(kinds, ", "))
	return agent.Report{}
}

// env is one agent test's directories.
type env struct {
	patchDir, stateDir, socket string
}

func newEnv(t testing.TB) env {
	d := t.TempDir()
	e := env{patchDir: filepath.Join(d, "patches"), stateDir: filepath.Join(d, "state"), socket: filepath.Join(d, "agent.sock")}
	os.MkdirAll(e.patchDir, 0o755)
	return e
}

func (e env) opts() agentOpts {
	return agentOpts{patchDir: e.patchDir, stateDir: e.stateDir, socket: e.socket}
}

func procState(s agent.Status, pid int) string {
	for _, p := range s.Processes {
		if p.Pid == pid {
			return p.State
		}
	}
	return ""
}

// allIn tells whether every pid is in state st.
func allIn(s agent.Status, st string, pids ...int) bool {
	for _, pid := range pids {
		if procState(s, pid) != st {
			return false
		}
	}
	return true
}

func readLines(r io.Reader) []string {
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}
