package procwatch

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"hotfleet/internal/testenv"
)

// eventWait bounds how long a test waits for an event the kernel sends at
// once; generous because the CI machine is shared.
const eventWait = 5 * time.Second

func build(t *testing.T, name string, extra ...string) string {
	t.Helper()
	return testenv.CC(t, name, append([]string{"-O1", "-Wall", filepath.Join("testdata", name+".c")}, extra...)...)
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, nil))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func open(t *testing.T, opts Options) *Watcher {
	t.Helper()
	testenv.NeedRoot(t)
	if opts.Log == nil {
		opts.Log = testLog(t)
	}
	w, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatalf("Open(%+v): %v", opts, err)
	}
	t.Cleanup(func() { w.Close() })
	want := opts.Mode
	if want == "" {
		want = ModeNetlink
	}
	if w.Mode() != want {
		t.Fatalf("Mode() = %q, want %q", w.Mode(), want)
	}
	return w
}

// started is a process under test that waits for its stdin to close.
type started struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Reader
}

func start(t *testing.T, path string, args ...string) *started {
	t.Helper()
	cmd := exec.Command(path, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return &started{cmd: cmd, stdin: stdin, out: bufio.NewReader(stdout)}
}

func (s *started) pid() int { return s.cmd.Process.Pid }

// finish lets the process exit and reaps it.
func (s *started) finish(t *testing.T) {
	t.Helper()
	s.stdin.Close()
	s.cmd.Wait()
}

// next waits for the first event that match accepts, failing the test after
// eventWait; the events before it are returned too.
func next(t *testing.T, w *Watcher, what string, match func(Event) bool) (Event, []Event) {
	t.Helper()
	var seen []Event
	timeout := time.After(eventWait)
	for {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				t.Fatalf("waiting for %s: Events closed", what)
			}
			if match(ev) {
				return ev, seen
			}
			seen = append(seen, ev)
		case <-timeout:
			t.Fatalf("no %s within %v (%d other events, lost %d)", what, eventWait, len(seen), w.Lost())
		}
	}
}

// quiet collects the events for d.
func quiet(w *Watcher, d time.Duration) []Event {
	var seen []Event
	timeout := time.After(d)
	for {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				return seen
			}
			seen = append(seen, ev)
		case <-timeout:
			return seen
		}
	}
}

func is(kind Kind, pid int) func(Event) bool {
	return func(ev Event) bool { return ev.Kind == kind && ev.Pid == pid }
}

func TestNetlinkSeesExecWithPid(t *testing.T) {
	hold := build(t, "hold")
	w := open(t, Options{Mode: ModeNetlink})
	before := time.Now()
	p := start(t, hold)
	ev, _ := next(t, w, "exec of hold", is(Exec, p.pid()))
	if ev.Tid != p.pid() || !ev.Exact {
		t.Errorf("exec event %+v: want Tid %d and Exact", ev, p.pid())
	}
	if ev.Time.Before(before) || time.Since(ev.Time) > eventWait {
		t.Errorf("exec event Time %v is not between the start (%v) and now", ev.Time, before)
	}
	if ev.Stamp <= 0 {
		t.Errorf("exec event has no kernel timestamp: %+v", ev)
	}
	p.finish(t)
	ev, _ = next(t, w, "exit of hold", is(Exit, p.pid()))
	// The kernel leaves the parent out when the parent reaped the process
	// before the event was sent.
	if ev.ExitCode != 0 || ev.Signal != 0 || (ev.Parent != os.Getpid() && ev.Parent != 0) {
		t.Errorf("exit event %+v: want code 0, no signal, parent %d or 0", ev, os.Getpid())
	}
}

func TestNetlinkExitCause(t *testing.T) {
	hold := build(t, "hold")
	segv := build(t, "segv")
	w := open(t, Options{Mode: ModeNetlink})
	tests := []struct {
		name   string
		run    func(t *testing.T) int
		code   int
		signal syscall.Signal
	}{
		{"exit 3", func(t *testing.T) int {
			p := start(t, hold, "3")
			p.finish(t)
			if got := p.cmd.ProcessState.ExitCode(); got != 3 {
				t.Fatalf("hold 3 exited with %d", got)
			}
			return p.pid()
		}, 3, 0},
		{"null write", func(t *testing.T) int {
			cmd := exec.Command(segv)
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGSEGV {
				t.Fatalf("segv: want death by SIGSEGV, got %v", err)
			}
			return cmd.Process.Pid
		}, 0, syscall.SIGSEGV},
		{"killed", func(t *testing.T) int {
			p := start(t, hold)
			next(t, w, "exec of hold", is(Exec, p.pid()))
			p.cmd.Process.Signal(syscall.SIGTERM)
			p.cmd.Wait()
			return p.pid()
		}, 0, syscall.SIGTERM},
		{"exit 0", func(t *testing.T) int {
			p := start(t, hold, "0")
			p.finish(t)
			return p.pid()
		}, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pid := tc.run(t)
			ev, _ := next(t, w, "exit", is(Exit, pid))
			if ev.ExitCode != tc.code || ev.Signal != tc.signal || ev.CoreDumped || !ev.Exact || ev.Tid != pid {
				t.Errorf("exit event %+v: want code %d, signal %v, no core dump, exact, Tid %d", ev, tc.code, tc.signal, pid)
			}
		})
	}
}

func TestNetlinkThreadExitsAreNotProcessExits(t *testing.T) {
	threads := build(t, "threads", "-pthread")
	w := open(t, Options{Mode: ModeNetlink})
	// Status 0 is the case that needs care: the main thread's exit then
	// looks like one that ended alone (see connector.exit).
	for _, code := range []int{7, 0} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			p := start(t, threads, strconv.Itoa(code))
			line, err := p.out.ReadString('\n')
			if err != nil || line != "joined\n" {
				t.Fatalf("threads said %q, %v", line, err)
			}
			// Eight threads have exited; the kernel sent their exit
			// events before "joined" was written.
			for _, ev := range quiet(w, 200*time.Millisecond) {
				if ev.Pid == p.pid() && ev.Kind == Exit {
					t.Fatalf("a thread's exit was reported as the process's: %+v", ev)
				}
			}
			p.finish(t)
			ev, _ := next(t, w, "exit of threads", is(Exit, p.pid()))
			if ev.ExitCode != code || ev.Signal != 0 || !ev.Exact {
				t.Errorf("exit event %+v: want code %d, exact", ev, code)
			}
			for _, ev := range quiet(w, 200*time.Millisecond) {
				if ev.Pid == p.pid() {
					t.Errorf("event after the process's exit: %+v", ev)
				}
			}
		})
	}
}

// TestMainThreadEndsFirst: the main thread calls pthread_exit and another
// thread runs on; the process has not ended until that one ends it.
func TestMainThreadEndsFirst(t *testing.T) {
	mainexit := build(t, "mainexit", "-pthread")
	for _, mode := range []string{ModeNetlink, ModePoll} {
		t.Run(mode, func(t *testing.T) {
			w := open(t, Options{Mode: mode, PollInterval: 20 * time.Millisecond})
			p := start(t, mainexit)
			next(t, w, "exec of mainexit", is(Exec, p.pid()))
			for _, ev := range quiet(w, 200*time.Millisecond) {
				if ev.Pid == p.pid() {
					t.Fatalf("event while the process runs on without its main thread: %+v", ev)
				}
			}
			p.finish(t)
			if got := p.cmd.ProcessState.ExitCode(); got != 5 {
				t.Fatalf("mainexit exited with %d, want 5", got)
			}
			ev, _ := next(t, w, "exit of mainexit", is(Exit, p.pid()))
			if mode == ModeNetlink && (ev.ExitCode != 5 || !ev.Exact || ev.Tid == p.pid()) {
				t.Errorf("exit event %+v: want code 5, exact, from the thread that ended it", ev)
			}
		})
	}
}

func TestForksOnlyWhenAsked(t *testing.T) {
	hold := build(t, "hold")
	with := open(t, Options{Mode: ModeNetlink, Forks: true})
	without := open(t, Options{Mode: ModeNetlink})
	p := start(t, hold)
	fork, seen := next(t, with, "fork of hold", is(Fork, p.pid()))
	if fork.Parent != os.Getpid() {
		t.Errorf("fork event %+v: want parent %d", fork, os.Getpid())
	}
	for _, ev := range seen {
		if ev.Pid == p.pid() {
			t.Errorf("event before the fork: %+v", ev)
		}
	}
	next(t, with, "exec after the fork", is(Exec, p.pid()))
	_, seen = next(t, without, "exec of hold", is(Exec, p.pid()))
	for _, ev := range seen {
		if ev.Kind == Fork {
			t.Errorf("fork delivered without Options.Forks: %+v", ev)
		}
	}
	p.finish(t)
}

func TestIgnoreSelf(t *testing.T) {
	hold := build(t, "hold")
	detach := build(t, "detach")
	for _, mode := range []string{ModeNetlink, ModePoll} {
		t.Run(mode, func(t *testing.T) {
			// Each process executes a second hold when told, then exits.
			early := start(t, hold, "0", hold) // a helper running at Open
			// A daemon: not a descendant of the test once detach exits.
			cmd := exec.Command(detach, hold, "0", hold)
			stdin, daemonIn, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer daemonIn.Close()
			cmd.Stdin = stdin
			cmd.Stderr = os.Stderr // not a pipe: the daemon keeps it open
			out, err := cmd.Output()
			stdin.Close()
			if err != nil {
				t.Fatalf("detach: %v", err)
			}
			daemon, err := strconv.Atoi(strings.TrimSpace(string(out)))
			if err != nil {
				t.Fatalf("detach printed %q", out)
			}
			t.Cleanup(func() { syscall.Kill(daemon, syscall.SIGKILL) })

			opts := Options{Mode: mode, PollInterval: 20 * time.Millisecond}
			all := open(t, opts)
			opts.IgnoreSelf = true
			mine := open(t, opts)
			late := start(t, hold, "0", hold) // a helper forked after Open

			for _, in := range []io.Writer{early.stdin, late.stdin, daemonIn} {
				if _, err := in.Write([]byte{'x'}); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(100 * time.Millisecond) // let the poll see the second holds
			late.finish(t)
			early.finish(t)
			daemonIn.Close()

			seen := until(t, all, is(Exit, late.pid()), is(Exit, early.pid()), is(Exec, daemon), is(Exit, daemon))
			t.Logf("without IgnoreSelf: %d events", len(seen))
			for _, ev := range until(t, mine, is(Exec, daemon), is(Exit, daemon)) {
				if ev.Pid == early.pid() || ev.Pid == late.pid() || ev.Pid == os.Getpid() {
					t.Errorf("IgnoreSelf delivered an event of the agent's own: %+v", ev)
				}
			}
		})
	}
}

// until reads events until every match has accepted one, failing the test
// after eventWait, and returns all events read.
func until(t *testing.T, w *Watcher, matches ...func(Event) bool) []Event {
	t.Helper()
	var seen []Event
	found := make([]bool, len(matches))
	left := len(matches)
	timeout := time.After(eventWait)
	for left > 0 {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				t.Fatal("Events closed")
			}
			seen = append(seen, ev)
			for i, m := range matches {
				if !found[i] && m(ev) {
					found[i] = true
					left--
				}
			}
		case <-timeout:
			t.Fatalf("after %v, %d of %d awaited events missing (found %v; %d events read)", eventWait, left, len(matches), found, len(seen))
		}
	}
	return seen
}

// TestKernelDropsAreCounted: when the reader falls behind and the socket's
// buffer overflows, the loss is counted (at least every exec and exit of
// ours that did not arrive) and announced by an Overflow event.
func TestKernelDropsAreCounted(t *testing.T) {
	quick := build(t, "quick")
	held := make(chan struct{})
	socketRcvBuf, testHookRecv = 4096, func() { <-held }
	t.Cleanup(func() { socketRcvBuf, testHookRecv = rcvBuf, nil }) // after Close
	w := open(t, Options{Mode: ModeNetlink})
	const runs = 50
	pids := map[int]bool{}
	for range runs {
		cmd := exec.Command(quick)
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		pids[cmd.Process.Pid] = true
	}
	close(held)
	// The kernel numbers events per CPU, so how many were lost shows in
	// the next event from each CPU: make some.
	time.Sleep(50 * time.Millisecond)
	for range 20 {
		exec.Command(quick).Run()
	}
	ours, overflow := 0, false
	for _, ev := range quiet(w, 300*time.Millisecond) {
		if ev.Kind == Overflow {
			overflow = true
		}
		if pids[ev.Pid] && (ev.Kind == Exec || ev.Kind == Exit) {
			ours++
		}
	}
	missing := 2*runs - ours
	t.Logf("%d of %d execs and exits arrived; Lost() = %d", ours, 2*runs, w.Lost())
	if missing <= 0 {
		t.Fatalf("nothing was dropped with a %d-byte buffer; the test proves nothing", socketRcvBuf)
	}
	if !overflow {
		t.Error("no Overflow event after the kernel dropped events")
	}
	if w.Lost() < uint64(missing) {
		t.Errorf("Lost() = %d, but %d of our own execs and exits are missing", w.Lost(), missing)
	}
}

func TestPollMode(t *testing.T) {
	hold := build(t, "hold")
	w := open(t, Options{Mode: ModePoll, PollInterval: 20 * time.Millisecond})
	p := start(t, hold, "5")
	ev, _ := next(t, w, "exec of hold", is(Exec, p.pid()))
	if ev.Exact || ev.Tid != p.pid() {
		t.Errorf("poll exec event %+v: want Exact false, Tid %d", ev, p.pid())
	}
	p.finish(t)
	ev, _ = next(t, w, "exit of hold", is(Exit, p.pid()))
	if ev.Exact || ev.Signal != 0 || ev.ExitCode != 0 {
		t.Errorf("poll exit event %+v: want Exact false and no cause (the poll cannot know it)", ev)
	}
	for _, ev := range quiet(w, 100*time.Millisecond) {
		if ev.Pid == p.pid() {
			t.Errorf("event after the exit: %+v", ev)
		}
	}
}

// TestPollSeesExecInKnownProcess: a process the poll already knows executes
// another program; same pid, same start time, and yet an Exec.
func TestPollSeesExecInKnownProcess(t *testing.T) {
	hold := build(t, "hold")
	w := open(t, Options{Mode: ModePoll, PollInterval: 20 * time.Millisecond})
	p := start(t, hold, "0", hold, "9")
	next(t, w, "exec of hold", is(Exec, p.pid()))
	for _, ev := range quiet(w, 100*time.Millisecond) { // several polls
		if ev.Pid == p.pid() {
			t.Fatalf("event for an unchanged process: %+v", ev)
		}
	}
	if _, err := p.stdin.Write([]byte{'x'}); err != nil {
		t.Fatal(err)
	}
	ev, _ := next(t, w, "event of hold", func(ev Event) bool { return ev.Pid == p.pid() })
	if ev.Kind != Exec {
		t.Fatalf("after hold executed a second hold: %+v, want an exec", ev)
	}
	p.finish(t)
	if got := p.cmd.ProcessState.ExitCode(); got != 9 {
		t.Fatalf("the second hold exited with %d, want 9: the exec did not happen", got)
	}
	next(t, w, "exit of the second hold", is(Exit, p.pid()))
}

func TestOpenFallsBackOrFails(t *testing.T) {
	if _, err := Open(context.Background(), Options{Mode: "bogus"}); err == nil {
		t.Error("Open with mode bogus: want an error")
	}
	if _, err := Open(context.Background(), Options{Mode: ModePoll, PollInterval: time.Microsecond}); err == nil {
		t.Error("Open with a 1µs poll interval: want an error")
	}
}

func TestContextEndClosesEvents(t *testing.T) {
	testenv.NeedRoot(t)
	for _, mode := range []string{ModeNetlink, ModePoll} {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			w, err := Open(ctx, Options{Mode: mode, PollInterval: 10 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			cancel()
			timeout := time.After(eventWait)
			for {
				select {
				case _, ok := <-w.Events():
					if !ok {
						if err := w.Close(); err != nil {
							t.Errorf("Close after the context ended: %v", err)
						}
						return
					}
				case <-timeout:
					t.Fatal("Events not closed after the context ended")
				}
			}
		})
	}
}

func TestFileOpensSeesDlopen(t *testing.T) {
	dir := t.TempDir()
	lib := testenv.CC(t, filepath.Join(dir, "libanswer.so"), "-shared", "-fPIC", filepath.Join("testdata", "answer.c"))
	dlopener := build(t, "dlopener", "-ldl")
	plain := filepath.Join(dir, "plain.txt")
	untouched := filepath.Join(dir, "untouched.txt")
	for _, p := range []string{plain, untouched} {
		if err := os.WriteFile(p, []byte("hello\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f, err := NewFileOpens()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range []string{lib, lib, untouched} { // twice: idempotent
		if err := f.Watch(p); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(dlopener, lib, plain).CombinedOutput()
	if err != nil || string(out) != "42\n" {
		t.Fatalf("dlopener: %v: %s", err, out)
	}
	got := collect(f, 300*time.Millisecond)
	if len(got) != 1 || got[0] != lib {
		t.Fatalf("opens seen %q, want exactly [%s] (the library once; the plain file is not watched, the untouched one not opened)", got, lib)
	}

	// Unwatched, the library's open is no longer reported.
	if err := f.Unwatch(lib); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(dlopener, lib, untouched).CombinedOutput(); err != nil {
		t.Fatalf("dlopener: %v: %s", err, out)
	}
	if got := collect(f, 300*time.Millisecond); len(got) != 1 || got[0] != untouched {
		t.Fatalf("after Unwatch(lib) opens seen %q, want only [%s]", got, untouched)
	}
}

// TestFileOpensFollowsReplacement: a package upgrade renames a new file over
// the watched one; the watch must follow the name to the new file.
func TestFileOpensFollowsReplacement(t *testing.T) {
	dir := t.TempDir()
	lib := testenv.CC(t, filepath.Join(dir, "libanswer.so"), "-shared", "-fPIC", filepath.Join("testdata", "answer.c"))
	dlopener := build(t, "dlopener", "-ldl")
	f, err := NewFileOpens()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Watch(lib); err != nil {
		t.Fatal(err)
	}
	// Keep the old file alive, as a process that maps it would.
	old, err := os.Open(lib)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	collect(f, 50*time.Millisecond)
	testenv.CC(t, lib+".new", "-shared", "-fPIC", filepath.Join("testdata", "answer.c"))
	if err := os.Rename(lib+".new", lib); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let the reader see IN_ATTRIB
	if out, err := exec.Command(dlopener, lib, "/proc/self/stat").CombinedOutput(); err != nil {
		t.Fatalf("dlopener: %v: %s", err, out)
	}
	if got := collect(f, 300*time.Millisecond); len(got) != 1 || got[0] != lib {
		t.Fatalf("opens of the replaced library seen %q, want [%s]", got, lib)
	}
}

func collect(f *FileOpens, d time.Duration) []string {
	var got []string
	timeout := time.After(d)
	for {
		select {
		case p := <-f.Events():
			got = append(got, p)
		case <-timeout:
			return got
		}
	}
}

func TestFileOpensAfterClose(t *testing.T) {
	f, err := NewFileOpens()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-f.Events(); ok {
		t.Error("Events open after Close")
	}
	if err := f.Watch("/etc/hostname"); !errors.Is(err, ErrClosed) {
		t.Errorf("Watch after Close: %v, want ErrClosed", err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestFileOpensThroughProcRoot: the agent reaches a container's files through
// /proc/PID/root. Two names of one file share the kernel's watch; each is
// reported, and unwatching one keeps the other.
func TestFileOpensThroughProcRoot(t *testing.T) {
	dir := t.TempDir()
	lib := testenv.CC(t, filepath.Join(dir, "libanswer.so"), "-shared", "-fPIC", filepath.Join("testdata", "answer.c"))
	dlopener := build(t, "dlopener", "-ldl")
	hold := build(t, "hold")
	p := start(t, hold) // the "container" whose root we go through
	viaRoot := fmt.Sprintf("/proc/%d/root%s", p.pid(), lib)
	f, err := NewFileOpens()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, path := range []string{lib, viaRoot} {
		if err := f.Watch(path); err != nil {
			t.Fatal(err)
		}
	}
	run := func() {
		t.Helper()
		if out, err := exec.Command(dlopener, lib, "/proc/self/stat").CombinedOutput(); err != nil {
			t.Fatalf("dlopener: %v: %s", err, out)
		}
	}
	run()
	got := collect(f, 300*time.Millisecond)
	slices.Sort(got)
	if want := []string{viaRoot, lib}; !slices.Equal(got, want) { // sorted
		t.Fatalf("opens seen %q, want %q", got, want)
	}
	if err := f.Unwatch(lib); err != nil {
		t.Fatal(err)
	}
	run()
	if got := collect(f, 300*time.Millisecond); !slices.Equal(got, []string{viaRoot}) {
		t.Fatalf("after Unwatch(%s) opens seen %q, want [%s]", lib, got, viaRoot)
	}
	p.finish(t)
}

// A watched directory reports opens of the files in it, by name: the agent
// watches the directories libraries are loaded from, since a library that
// no process maps yet has no known path.
func TestFileOpensDirectory(t *testing.T) {
	dir := t.TempDir()
	lib := filepath.Join(dir, "libx.so")
	other := filepath.Join(dir, "other.txt")
	for _, p := range []string{lib, other} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fo, err := NewFileOpens()
	if err != nil {
		t.Fatal(err)
	}
	defer fo.Close()
	if err := fo.Watch(dir); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{lib, other} {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		select {
		case got := <-fo.Events():
			if got != p {
				t.Errorf("open of %s reported as %s", p, got)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no event for the open of %s in a watched directory", p)
		}
	}
}
