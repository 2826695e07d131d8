package realworld

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
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"hotfleet/internal/testenv"
)

const (
	// buildTimeout bounds one build of a project, and 'patch build', which
	// builds it twice. Redis, the largest, builds in about a minute on 2
	// cores; the margin absorbs a CI machine shared with other jobs.
	buildTimeout = 15 * time.Minute
	// cliTimeout bounds apply, revert and the other quick commands. apply
	// retries a busy function until its 10 s deadline.
	cliTimeout = 90 * time.Second
	// answerTimeout bounds one request to a running program. They answer in
	// microseconds; the margin absorbs a loaded 2-core CI machine.
	answerTimeout = 30 * time.Second
	// loadBefore and loadAfter are how many requests the load must have
	// completed before apply starts and after it returned: the switch
	// happens while requests are flowing, and requests run on the new code.
	loadBefore, loadAfter = 20, 20
)

// hotfleetBin is the binary under test, built once by TestMain.
var hotfleetBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "hotfleet-realworld-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "realworld: create the build directory:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	if hotfleetBin, err = testenv.BuildHotfleet(dir); err != nil {
		fmt.Fprintln(os.Stderr, "realworld:", err)
		return 1
	}
	return m.Run()
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// missing skips the test outside CI and fails it in CI, where every
// walk-through must run.
func missing(t *testing.T, format string, args ...any) {
	t.Helper()
	if testenv.InCI() {
		t.Fatalf("CI=true but "+format, args...)
	}
	t.Skipf(format, args...)
}

// srcCache is where scripts/realworld/fetch.sh keeps the source packages.
func srcCache() string {
	if d := os.Getenv("HOTFLEET_SRC_CACHE"); d != "" {
		return d
	}
	return "/var/cache/hotfleet/src"
}

// source returns the unpacked Debian source tree of pkg and its Debian
// version, fetching it with scripts/realworld/fetch.sh when the cache lacks
// it. Without the cache and without the network the test is skipped (failed
// in CI).
func source(t *testing.T, pkg string) (tree, version string) {
	t.Helper()
	dir := filepath.Join(srcCache(), pkg)
	if !fileExists(filepath.Join(dir, ".version")) {
		script, err := filepath.Abs(filepath.Join("..", "..", "scripts", "realworld", "fetch.sh"))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, "sh", script, pkg).CombinedOutput()
		if err != nil {
			missing(t, "the source package %s is not in %s and %s could not fetch it (%v):\n%s",
				pkg, srcCache(), script, err, out)
		}
	}
	v, err := os.ReadFile(filepath.Join(dir, ".version"))
	if err != nil {
		t.Fatalf("read the version of the cached source package %s: %v", pkg, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			if tree != "" {
				t.Fatalf("%s holds two unpacked trees, %s and %s; remove it and run scripts/realworld/fetch.sh %s", dir, tree, e.Name(), pkg)
			}
			tree = filepath.Join(dir, e.Name())
		}
	}
	if tree == "" {
		t.Fatalf("%s holds no unpacked tree; remove it and run scripts/realworld/fetch.sh %s", dir, pkg)
	}
	return tree, strings.TrimSpace(string(v))
}

// sh runs script with sh -c in dir and returns its output; on failure it
// fails the test with the last lines of the output.
func sh(t *testing.T, dir, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", script)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	t0 := time.Now()
	err := cmd.Run()
	if err != nil {
		t.Fatalf("in %s: %s: %v\n%s", dir, script, err, tail(out.String(), 40))
	}
	t.Logf("in %s: %s: %v", filepath.Base(dir), firstLine(script), time.Since(t0).Round(time.Millisecond))
	return out.String()
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"..."}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}

// project describes one walk-through.
type project struct {
	pkg string // Debian source package
	fix string // the security fix, a patch in the source package (debian/patches/...)
	// revert are more Debian patches to take out of the tree, latest first:
	// Debian build-system changes the plain upstream build does not need.
	revert []string
	// prepare runs in the tree after the patches are taken out: what
	// debian/rules does before the build proper (generated headers,
	// autoreconf). Its results are part of the source tree.
	prepare string
	// build is the build command, run in the tree: the same for the
	// production build and for 'hotfleet patch build --build-cmd'.
	build   string
	target  string   // module the processes run, relative to the tree
	debPkg  string   // Debian binary package that ships the target
	cve     string   // the fix's CVE id, if it has one
	changed []string // functions the builder must name as changed
	tools   []string // programs the preparation and the build need besides make, patch and dpkg-dev
}

// baseTools are the programs every walk-through needs besides gcc.
var baseTools = []string{"make", "patch", "dpkg-buildflags", "dpkg-architecture"}

// walk is one project prepared in a test's directory.
type walk struct {
	p       project
	dir     string
	src     string // the vulnerable source tree, as a user has it, unbuilt
	prod    string // a copy of src, built: what runs in production
	target  string // the module in prod
	fix     string // fix.diff
	version string // Debian version of the source package
}

// setup makes the vulnerable tree from the cached source package (the fix
// reverse-applied), builds it as production does, and writes fix.diff.
func setup(t *testing.T, p project) *walk {
	t.Helper()
	testenv.NeedRoot(t)
	testenv.NeedGCC(t)
	for _, tool := range append(append([]string{}, baseTools...), p.tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			missing(t, "the %s walk-through needs %s: %v", p.pkg, tool, err)
		}
	}
	tree, version := source(t, p.pkg)
	dir := t.TempDir()
	w := &walk{p: p, dir: dir, src: filepath.Join(dir, "src"), prod: filepath.Join(dir, "prod"),
		fix: filepath.Join(dir, "fix.diff"), version: version}
	w.target = filepath.Join(w.prod, p.target)
	sh(t, dir, "cp -a "+shq(tree)+" src")
	fix, err := os.ReadFile(filepath.Join(w.src, p.fix))
	if err != nil {
		t.Fatalf("the source package %s %s has no %s: %v", p.pkg, version, p.fix, err)
	}
	if err := os.WriteFile(w.fix, fix, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, patch := range append([]string{p.fix}, p.revert...) {
		sh(t, w.src, "patch -R -p1 -s --no-backup-if-mismatch -i "+shq(patch))
	}
	if p.prepare != "" {
		sh(t, w.src, p.prepare)
	}
	sh(t, dir, "cp -a src prod")
	sh(t, w.prod, p.build)
	if !fileExists(w.target) {
		t.Fatalf("the build of %s made no %s", p.pkg, p.target)
	}
	return w
}

func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// cliResult is one run of the hotfleet binary.
type cliResult struct {
	args           []string
	stdout, stderr string
	exit           int
}

func (r cliResult) String() string {
	// stderr carries the output of both builds: its end says what failed.
	return fmt.Sprintf("hotfleet %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.exit, r.stdout, tail(r.stderr, 40))
}

func hotfleet(t *testing.T, timeout time.Duration, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, hotfleetBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	err := cmd.Run()
	r := cliResult{args: args, stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case ctx.Err() != nil:
		t.Fatalf("did not finish within %v (killed): %s", timeout, r)
	case errors.As(err, &ee):
		r.exit = ee.ExitCode()
	default:
		t.Fatalf("run hotfleet %s: %v", strings.Join(args, " "), err)
	}
	t.Logf("hotfleet %s: exit %d in %v", strings.Join(args, " "), r.exit, time.Since(t0).Round(time.Millisecond))
	if r.exit != 0 {
		t.Fatalf("%s", r)
	}
	return r
}

var wroteRE = regexp.MustCompile(`(?m)^wrote \S+: (\d+) bytes`)

// patchBuild runs 'hotfleet patch build' from the vulnerable source tree
// and the fix against the production module, and returns the bundle's path
// and size. It checks the summary names every function the fix changes.
func (w *walk) patchBuild(t *testing.T, id string) (string, int64) {
	t.Helper()
	out := filepath.Join(w.dir, id+".hfp")
	args := []string{"patch", "build", "--source", w.src, "--fix", w.fix,
		"--target", w.target, "--build-cmd", w.p.build,
		"--id", id, "--description", w.p.fix + " of " + w.p.pkg + " " + w.version, "-o", out}
	if w.p.cve != "" {
		args = append(args, "--cve", w.p.cve)
	}
	r := hotfleet(t, buildTimeout, args...)
	t.Logf("patch build printed:\n%s", r.stdout)
	for _, f := range w.p.changed {
		if !regexp.MustCompile(`\b` + regexp.QuoteMeta(f) + `\b`).MatchString(r.stdout) {
			t.Errorf("patch build did not name the changed function %s:\n%s", f, r.stdout)
		}
	}
	st, err := os.Stat(out)
	if err != nil {
		t.Fatalf("patch build exited 0 but wrote no bundle: %v\n%s", err, r)
	}
	if m := wroteRE.FindStringSubmatch(r.stdout); m == nil || m[1] != strconv.FormatInt(st.Size(), 10) {
		t.Errorf("patch build's summary does not give the bundle's size, %d bytes:\n%s", st.Size(), r.stdout)
	}
	return out, st.Size()
}

var pauseRE = regexp.MustCompile(`^pid (\d+) \(.*\): (applied|reverted) (\S+) level \d+: (\d+) functions (switched|restored), pause (\d+) µs`)

// apply applies the bundle to pid and returns the pause it reports.
// applyWhileAsked applies bundle to p's process while one client keeps
// sending it the (request, answer) pairs in normal, failing the test if one
// request fails or is answered wrongly; it returns the pause.
func applyWhileAsked(t *testing.T, p *lineProgram, bundle string, normal [][2]string) time.Duration {
	t.Helper()
	l := startLoad(1, func(int) error {
		for _, r := range normal {
			got, err := p.ask(r[0])
			if err != nil {
				return err
			}
			if got != r[1] {
				return fmt.Errorf("%q answered %q, want %q", r[0], got, r[1])
			}
		}
		return nil
	})
	l.waitFor(t, loadBefore)
	pause := apply(t, bundle, p.pid)
	l.waitFor(t, loadAfter)
	n := l.finish(t)
	t.Logf("%d requests during the patch, none failed", n)
	return pause
}

func apply(t *testing.T, bundle string, pid int) time.Duration {
	t.Helper()
	r := hotfleet(t, cliTimeout, "patch", "apply", bundle, "--pid", strconv.Itoa(pid))
	return pauseOf(t, r, pid, "applied")
}

// revert takes patch id out of pid and returns the pause it reports.
func revert(t *testing.T, id string, pid int) time.Duration {
	t.Helper()
	r := hotfleet(t, cliTimeout, "patch", "revert", id, "--pid", strconv.Itoa(pid))
	return pauseOf(t, r, pid, "reverted")
}

func pauseOf(t *testing.T, r cliResult, pid int, verb string) time.Duration {
	t.Helper()
	line := strings.SplitN(strings.TrimSpace(r.stdout), "\n", 2)[0]
	m := pauseRE.FindStringSubmatch(line)
	if m == nil || m[1] != strconv.Itoa(pid) || m[2] != verb {
		t.Fatalf("want \"pid %d (...): %s ...\", got:\n%s", pid, verb, r)
	}
	us, _ := strconv.Atoi(m[6])
	t.Logf("%s", line)
	return time.Duration(us) * time.Microsecond
}

// lineProgram is a running program that answers one line per request line,
// "= ANSWER" (the Lua server, the expat driver).
type lineProgram struct {
	t    *testing.T
	name string
	pid  int

	mu     sync.Mutex // one request at a time
	w      io.Writer
	lines  chan string
	done   chan struct{}
	stderr lockedBuffer
	status atomic.Value // string: how it ended
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startLine runs bin with args and kills it when the test ends.
func startLine(t *testing.T, bin string, args ...string) *lineProgram {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &lineProgram{t: t, name: filepath.Base(bin), w: stdin, lines: make(chan string, 1), done: make(chan struct{})}
	cmd.Stderr = &p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	p.pid = cmd.Process.Pid
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			case <-p.done: // nobody asks any more
				return
			}
		}
	}()
	go func() {
		err := cmd.Wait()
		p.status.Store(fmt.Sprint(err))
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	return p
}

func (p *lineProgram) describe() string {
	s := fmt.Sprintf("%s (pid %d)", p.name, p.pid)
	if st, ok := p.status.Load().(string); ok {
		s += " ended: " + st
	}
	if e := p.stderr.String(); e != "" {
		s += "\nstderr: " + tail(e, 20)
	}
	return s
}

// ask sends one request and returns the answer without the "= ".
func (p *lineProgram) ask(req string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := io.WriteString(p.w, req+"\n"); err != nil {
		return "", fmt.Errorf("send %q to %s: %v", req, p.describe(), err)
	}
	select {
	case l := <-p.lines:
		if !strings.HasPrefix(l, "= ") {
			return "", fmt.Errorf("%s answered %q to %q, not a protocol line", p.name, l, req)
		}
		return strings.TrimPrefix(l, "= "), nil
	case <-p.done:
		time.Sleep(50 * time.Millisecond) // let the scanner deliver a last line
		select {
		case l := <-p.lines:
			return strings.TrimPrefix(l, "= "), nil
		default:
		}
		return "", fmt.Errorf("%q got no answer: %s", req, p.describe())
	case <-time.After(answerTimeout):
		return "", fmt.Errorf("%q got no answer within %v: %s", req, answerTimeout, p.describe())
	}
}

// expect fails the test unless req is answered with want.
func (p *lineProgram) expect(req, want, when string) {
	p.t.Helper()
	got, err := p.ask(req)
	if err != nil {
		p.t.Fatalf("%s: %v", when, err)
	}
	if got != want {
		p.t.Fatalf("%s: %s answered %q to %q, want %q", when, p.name, got, req, want)
	}
	p.t.Logf("%s: %q -> %q", when, req, got)
}

// load runs requests from several workers until stopped, and counts the
// ones that failed.
type load struct {
	stop   chan struct{}
	wg     sync.WaitGroup
	ok     atomic.Int64
	failed atomic.Int64
	mu     sync.Mutex
	errs   []string
}

// maxLoadErrors is how many failures a report quotes.
const maxLoadErrors = 5

// startLoad starts workers goroutines, each calling req(worker) in a loop.
func startLoad(workers int, req func(worker int) error) *load {
	l := &load{stop: make(chan struct{})}
	for i := 0; i < workers; i++ {
		l.wg.Add(1)
		go func(i int) {
			defer l.wg.Done()
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				if err := req(i); err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.errs) < maxLoadErrors {
						l.errs = append(l.errs, err.Error())
					}
					l.mu.Unlock()
					time.Sleep(10 * time.Millisecond) // a dead server must not spin the CPU
					continue
				}
				l.ok.Add(1)
			}
		}(i)
	}
	return l
}

// waitFor waits until n more requests succeeded than at the call.
func (l *load) waitFor(t *testing.T, n int64) {
	t.Helper()
	want := l.ok.Load() + n
	deadline := time.Now().Add(answerTimeout)
	for l.ok.Load() < want {
		if time.Now().After(deadline) {
			t.Fatalf("the load completed %d of %d requests in %v; failures: %d %v", l.ok.Load(), want, answerTimeout, l.failed.Load(), l.errs)
		}
		time.Sleep(time.Millisecond)
	}
}

// finish stops the load and fails the test if any request failed.
func (l *load) finish(t *testing.T) int64 {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	if f := l.failed.Load(); f > 0 {
		t.Fatalf("%d of %d requests failed during the live patch; first errors: %s", f, f+l.ok.Load(), strings.Join(l.errs, "; "))
	}
	return l.ok.Load()
}

// debSize is the size of the Debian binary package pkg at version, from the
// apt index; 0 when the index does not list that version.
func debSize(t *testing.T, pkg, version string) int64 {
	t.Helper()
	out, err := exec.Command("apt-cache", "show", pkg+"="+version).Output()
	if err != nil {
		t.Logf("apt-cache show %s=%s: %v (the package size is not reported)", pkg, version, err)
		return 0
	}
	m := regexp.MustCompile(`(?m)^Size: (\d+)$`).FindSubmatch(out)
	if m == nil {
		return 0
	}
	n, _ := strconv.ParseInt(string(m[1]), 10, 64)
	return n
}

// report logs the numbers BENCHMARKS.md quotes for one fix.
func (w *walk) report(t *testing.T, bundle int64, applyPause, revertPause time.Duration) {
	t.Helper()
	st, err := os.Stat(w.target)
	if err != nil {
		t.Fatal(err)
	}
	deb := debSize(t, w.p.debPkg, w.version)
	debPct := "n/a"
	if deb > 0 {
		debPct = fmt.Sprintf("%.2f%%", 100*float64(bundle)/float64(deb))
	}
	t.Logf("MEASURE %s %s %s: bundle %d bytes; %s %d bytes (%.3f%%); %s_%s.deb %d bytes (%s); apply pause %v; revert pause %v",
		w.p.pkg, w.version, filepath.Base(w.p.fix), bundle, filepath.Base(w.target), st.Size(), 100*float64(bundle)/float64(st.Size()),
		w.p.debPkg, w.version, deb, debPct, applyPause, revertPause)
}
