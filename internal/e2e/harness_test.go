package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"hotfleet/internal/testenv"
)

const (
	// answerTimeout bounds one request to a target. Targets answer in
	// microseconds; the margin absorbs a loaded 2-core CI machine.
	answerTimeout = 15 * time.Second
	// cliTimeout bounds one hotfleet command. apply retries a busy function
	// until its deadline (10 s by default), so a minute is never reached by a
	// working hotfleet.
	cliTimeout = 90 * time.Second
	// eventTimeout bounds the wait for a line a target prints on its own.
	eventTimeout = 15 * time.Second
)

// patchFlags are added to every object a bundle is built from, as the
// builder requires: one section per function and per datum.
var patchFlags = []string{"-ffunction-sections", "-fdata-sections"}

// baseCFlags are the flags of an ordinary optimised build.
var baseCFlags = []string{"-O2", "-Wall", "-g0"}

var (
	// hotfleetBin is the binary under test, built once by TestMain into
	// shareDir, a directory every user can read (the unprivileged case runs
	// it as nobody).
	hotfleetBin string
	shareDir    string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "hotfleet-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: create the build directory:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: make the build directory readable by all:", err)
		return 1
	}
	shareDir = dir
	if hotfleetBin, err = testenv.BuildHotfleet(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return m.Run()
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// needs states what every e2e test needs: root for ptrace, gcc for targets.
func needs(t *testing.T) {
	t.Helper()
	testenv.NeedRoot(t)
	testenv.NeedGCC(t)
}

func testdata(name string) string {
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		panic(err) // only on a broken working directory, before any test ran
	}
	return p
}

// ---------------------------------------------------------------------------
// Building targets.

// program is a target executable (or library) linked from a driver and a
// unit: the unit is the source file a patch fixes, compiled to orig.
type program struct {
	dir    string
	src    string   // testdata file of the unit
	cflags []string // flags of the unit's objects, patchFlags included
	orig   string   // the unit's object the program was linked from
	bin    string   // the linked executable or shared library
}

// compileUnit writes src with fixes applied as DIR/VARIANT/target.c and
// compiles it to DIR/VARIANT/target.o. Every variant has the same file name,
// as the original and the fixed tree of a real project do. fixes are pairs
// of old and new text; each old text must occur exactly once in src.
func compileUnit(t *testing.T, dir, variant, src string, cflags []string, fixes ...string) string {
	t.Helper()
	data, err := os.ReadFile(testdata(src))
	if err != nil {
		t.Fatalf("read the unit %s: %v", src, err)
	}
	text := string(data)
	if len(fixes)%2 != 0 {
		t.Fatalf("fix for %s: old and new texts must come in pairs", src)
	}
	for i := 0; i < len(fixes); i += 2 {
		if n := strings.Count(text, fixes[i]); n != 1 {
			t.Fatalf("fix for %s: %q occurs %d times, want exactly once", src, fixes[i], n)
		}
		text = strings.Replace(text, fixes[i], fixes[i+1], 1)
	}
	vdir := filepath.Join(dir, variant)
	if err := os.MkdirAll(vdir, 0o755); err != nil {
		t.Fatal(err)
	}
	c := filepath.Join(vdir, "target.c")
	if err := os.WriteFile(c, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	o := filepath.Join(vdir, "target.o")
	testenv.CC(t, o, append(append([]string{"-c"}, cflags...), c)...)
	return o
}

// exeFlags are the code-model flags of an executable: PIE or not.
type exeFlags struct {
	name    string
	cflags  []string
	ldflags []string
}

var (
	pie    = exeFlags{"pie", []string{"-fPIE"}, []string{"-pie"}}
	nonPIE = exeFlags{"nopie", []string{"-fno-pie"}, []string{"-no-pie"}}
)

// buildExe compiles unit src and the driver, and links them into an
// executable. extra are more C flags for both (e.g. -fcf-protection=full).
func buildExe(t *testing.T, src, driver string, ef exeFlags, extra ...string) *program {
	t.Helper()
	return buildExeIn(t, t.TempDir(), src, driver, ef, nil, extra...)
}

// buildExeIn is buildExe into dir, with driverDefs (e.g. -DBUILD_TAG="2")
// given to the driver only.
func buildExeIn(t *testing.T, dir, src, driver string, ef exeFlags, driverDefs []string, extra ...string) *program {
	t.Helper()
	cflags := append(append(append(append([]string{}, baseCFlags...), ef.cflags...), extra...), patchFlags...)
	p := &program{dir: dir, src: src, cflags: cflags}
	p.orig = compileUnit(t, dir, "orig", src, cflags)
	dflags := append(append(append([]string{"-c", "-I", testdata("")}, cflags...), driverDefs...), testdata(driver))
	drv := testenv.CC(t, filepath.Join(dir, "driver.o"), dflags...)
	p.bin = filepath.Join(dir, "target")
	testenv.CC(t, p.bin, append(append([]string{drv, p.orig}, ef.ldflags...), "-pthread")...)
	return p
}

// fixed compiles the unit with fixes applied, with the program's flags.
func (p *program) fixed(t *testing.T, variant string, fixes ...string) string {
	t.Helper()
	return compileUnit(t, p.dir, variant, p.src, p.cflags, fixes...)
}

// bundle runs 'hotfleet patch build' for the fixed object against the
// program and returns the bundle's path. extra are more builder flags.
func (p *program) bundle(t *testing.T, id string, level int, fixed string, want []string, extra ...string) string {
	t.Helper()
	return buildBundle(t, p.bin, p.orig, fixed, id, level, want, extra...)
}

// buildBundle runs 'hotfleet patch build' and returns the bundle's path,
// next to the fixed object. It checks that the builder names every function
// in want as changed.
func buildBundle(t *testing.T, bin, orig, fixed, id string, level int, want []string, extra ...string) string {
	t.Helper()
	out := filepath.Join(filepath.Dir(fixed), id+".hfp")
	args := append([]string{"patch", "build", "--target", bin, "--orig", orig, "--patched", fixed,
		"--id", id, "--level", strconv.Itoa(level), "-o", out}, extra...)
	r := hotfleet(t, args...)
	r.mustSucceed(t)
	for _, f := range want {
		if !strings.Contains(r.stdout+r.stderr, f) {
			t.Errorf("patch build did not name the changed function %s; it printed:\n%s%s", f, r.stdout, r.stderr)
		}
	}
	if !fileExists(out) {
		t.Fatalf("patch build exited 0 but wrote no bundle at %s", out)
	}
	return out
}

// ---------------------------------------------------------------------------
// Running targets.

// target is a running program speaking the serve.h line protocol.
type target struct {
	t      *testing.T
	name   string
	pid    int
	w      io.Writer
	answer chan string
	events chan string
	done   chan struct{} // closed when its output ends

	mu     sync.Mutex
	errs   []string // "ERR" lines
	other  []string // lines outside the protocol
	status string   // how the process ended, once it did
	stderr bytes.Buffer
}

// start runs bin with args and ExtraFiles extra (fd 3, 4, ...), and kills it
// when the test ends.
func start(t *testing.T, bin string, args []string, extra ...*os.File) *target {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.ExtraFiles = extra
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	tg := &target{t: t, name: filepath.Base(bin), w: stdin}
	cmd.Stderr = &lockedWriter{mu: &tg.mu, w: &tg.stderr}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	tg.pid = cmd.Process.Pid
	tg.init(stdout)
	waited := make(chan struct{})
	go func() {
		err := cmd.Wait()
		tg.mu.Lock()
		tg.status = fmt.Sprint(err)
		if err == nil {
			tg.status = "exit status 0"
		}
		tg.mu.Unlock()
		close(waited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-waited
	})
	return tg
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (tg *target) init(r io.Reader) {
	tg.answer = make(chan string, 16)
	tg.events = make(chan string, 1024)
	tg.done = make(chan struct{})
	go func() {
		defer close(tg.done)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "= "):
				tg.answer <- strings.TrimPrefix(line, "= ")
			case strings.HasPrefix(line, "event "):
				select {
				case tg.events <- strings.TrimPrefix(line, "event "):
				default: // nobody waits for that many events
				}
			case strings.HasPrefix(line, "ERR "):
				tg.mu.Lock()
				tg.errs = append(tg.errs, line)
				tg.mu.Unlock()
			default:
				tg.mu.Lock()
				tg.other = append(tg.other, line)
				tg.mu.Unlock()
			}
		}
	}()
}

// describe says what went wrong inside the target, for failure messages.
func (tg *target) describe() string {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "%s (pid %d)", tg.name, tg.pid)
	if tg.status != "" {
		fmt.Fprintf(&b, " ended: %s", tg.status)
	}
	for _, e := range tg.errs {
		fmt.Fprintf(&b, "\n  target reported: %s", e)
	}
	for _, o := range tg.other {
		fmt.Fprintf(&b, "\n  stray output: %s", o)
	}
	if tg.stderr.Len() > 0 {
		fmt.Fprintf(&b, "\n  stderr: %s", tg.stderr.String())
	}
	return b.String()
}

// ask sends one command and returns the target's answer.
func (tg *target) ask(cmd string) string {
	tg.t.Helper()
	if _, err := io.WriteString(tg.w, cmd+"\n"); err != nil {
		tg.t.Fatalf("send %q to %s: %v", cmd, tg.describe(), err)
	}
	select {
	case a := <-tg.answer:
		return a
	case <-tg.done:
		// An answer may have arrived just before the end.
		select {
		case a := <-tg.answer:
			return a
		default:
		}
		time.Sleep(50 * time.Millisecond) // let Wait record the exit status
		tg.t.Fatalf("%q got no answer: %s", cmd, tg.describe())
	case <-time.After(answerTimeout):
		tg.t.Fatalf("%q got no answer within %v: %s", cmd, answerTimeout, tg.describe())
	}
	return ""
}

// expect asks cmd and fails the test unless the answer is want.
func (tg *target) expect(cmd, want, when string) {
	tg.t.Helper()
	if got := tg.ask(cmd); got != want {
		tg.t.Fatalf("%s: %s answered %q to %q, want %q", when, tg.name, got, cmd, want)
	}
}

// waitEvent waits for an event line with the given text.
func (tg *target) waitEvent(want string) {
	tg.t.Helper()
	deadline := time.After(eventTimeout)
	for {
		select {
		case e := <-tg.events:
			if e == want {
				return
			}
			tg.t.Logf("%s: event %q while waiting for %q", tg.name, e, want)
		case <-tg.done:
			tg.t.Fatalf("waiting for event %q: %s", want, tg.describe())
		case <-deadline:
			tg.t.Fatalf("no event %q within %v: %s", want, eventTimeout, tg.describe())
		}
	}
}

// healthy fails the test if the target reported an error or ended.
func (tg *target) healthy() {
	tg.t.Helper()
	select {
	case <-tg.done:
		time.Sleep(50 * time.Millisecond)
		tg.t.Fatalf("target is gone: %s", tg.describe())
	default:
	}
	tg.mu.Lock()
	errs := len(tg.errs)
	tg.mu.Unlock()
	if errs > 0 {
		tg.t.Fatalf("target reported errors: %s", tg.describe())
	}
}

// fork asks a single-threaded target to fork a child that serves on two
// FIFOs, and returns the child; the child is killed when the test ends.
func (tg *target) fork() *target {
	t := tg.t
	t.Helper()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
	for _, p := range []string{in, out} {
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatalf("mkfifo %s: %v", p, err)
		}
	}
	// O_RDWR: opening never blocks, whichever side comes first.
	fin, err := os.OpenFile(in, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fout, err := os.OpenFile(out, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	a := tg.ask("fork " + in + " " + out)
	pid, err := strconv.Atoi(a)
	if err != nil {
		t.Fatalf("fork: %s answered %q, want a pid", tg.describe(), a)
	}
	child := &target{t: t, name: tg.name + "-child", pid: pid, w: fin}
	child.init(fout)
	t.Cleanup(func() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		fin.Close()
		fout.Close()
	})
	if got := child.ask("pid"); got != a {
		t.Fatalf("forked child says its pid is %q, the parent said %q", got, a)
	}
	return child
}

// ---------------------------------------------------------------------------
// Running hotfleet.

type cliResult struct {
	args           []string
	stdout, stderr string
	exit           int
	took           time.Duration
}

func (r cliResult) String() string {
	return fmt.Sprintf("hotfleet %s: exit %d after %v\nstdout:\n%s\nstderr:\n%s",
		strings.Join(r.args, " "), r.exit, r.took.Round(time.Millisecond), r.stdout, r.stderr)
}

func (r cliResult) mustSucceed(t *testing.T) {
	t.Helper()
	if r.exit != 0 {
		t.Fatalf("command failed: %v", r)
	}
}

// mustFail checks that the command failed and that its message contains
// every one of words (case-insensitive).
func (r cliResult) mustFail(t *testing.T, words ...string) {
	t.Helper()
	if r.exit == 0 {
		t.Fatalf("command succeeded, want an error: %v", r)
	}
	t.Logf("refused as expected: %s", strings.TrimSpace(r.stdout+r.stderr))
	msg := strings.ToLower(r.stdout + r.stderr)
	for _, w := range words {
		if !strings.Contains(msg, strings.ToLower(w)) {
			t.Errorf("error message does not say %q: %v", w, r)
		}
	}
}

// hotfleet runs the binary under test as root.
func hotfleet(t *testing.T, args ...string) cliResult {
	t.Helper()
	return hotfleetAs(t, nil, args...)
}

// hotfleetAs runs the binary under test with the given credentials (nil:
// the test's own).
func hotfleetAs(t *testing.T, cred *syscall.Credential, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, hotfleetBin, args...)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Dir = shareDir
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	err := cmd.Run()
	r := cliResult{args: args, stdout: stdout.String(), stderr: stderr.String(), took: time.Since(t0)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		t.Fatalf("hotfleet %s did not finish within %v (killed)\nstdout:\n%s\nstderr:\n%s",
			strings.Join(args, " "), cliTimeout, r.stdout, r.stderr)
	case errors.As(err, &ee):
		r.exit = ee.ExitCode()
	default:
		t.Fatalf("run hotfleet %s: %v", strings.Join(args, " "), err)
	}
	t.Logf("hotfleet %s: exit %d in %v", strings.Join(args, " "), r.exit, r.took.Round(time.Millisecond))
	return r
}
