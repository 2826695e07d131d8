package crashtest

import (
	"bufio"
	"bytes"
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

	"hotfleet/internal/bundle"
	"hotfleet/internal/livepatch/lptest"
	"hotfleet/internal/testenv"
)

// patchedFuncs are the functions funcs_new.c changes, in the order the target
// reports them.
var patchedFuncs = []string{"hf_f0", "hf_f1", "hf_f2", "hf_f3", "hf_f4"}

const (
	// patchID and patchLevel name the crash test's patch.
	patchID    = "crash-fix"
	patchLevel = 1
	// answerTimeout bounds how long the target may take to answer a query: a
	// running process answers in microseconds, so a silent one is stopped.
	answerTimeout = 5 * time.Second
	// exitTimeout bounds how long the target may take to exit at end of input.
	exitTimeout = 5 * time.Second
)

// variant is one way to compile the target, so that the engine meets the
// shapes of executables users run.
type variant struct {
	name  string
	flags []string
}

var variants = []variant{
	{"pie", []string{"-fPIE", "-pie"}},
	{"nopie", []string{"-fno-pie", "-no-pie"}},
	{"cet", []string{"-fPIE", "-pie", "-fcf-protection=full"}},
	// The patched functions lie more than 64 KiB apart, so their sites
	// cannot be switched by one write.
	{"spread", []string{"-fPIE", "-pie", "-DSPREAD"}},
}

// program is a compiled target and the bundle that patches it.
type program struct {
	exe    string
	bundle string // path of the .hfp file
}

// buildProgram compiles the target and the fixed functions for v and writes
// the bundle that patches the one into the other.
func buildProgram(t *testing.T, v variant) program {
	t.Helper()
	dir := t.TempDir()
	common := append([]string{"-O2", "-g", "-Wall", "-ffunction-sections", "-fdata-sections"}, v.flags...)
	orig := testenv.CC(t, filepath.Join(dir, "orig.o"), append(common, "-c", "testdata/funcs_old.c")...)
	fixed := testenv.CC(t, filepath.Join(dir, "fixed.o"), append(common, "-c", "testdata/funcs_new.c")...)
	exe := testenv.CC(t, filepath.Join(dir, "target-"+v.name), append(common, "-pthread", "-Wl,--build-id", "testdata/target.c", orig)...)
	// Made by hand from the ELF files, so that this test depends on the
	// engine only, not on the builder.
	b := lptest.MakeBundle(t, exe, patchID, patchLevel, lptest.ObjectFns(t, fixed, patchedFuncs...)...)
	b.Description = "crash test: change five functions together"
	data, err := bundle.Marshal(b)
	if err != nil {
		t.Fatalf("encode the bundle for %s: %v", exe, err)
	}
	hfp := filepath.Join(dir, "fix-"+v.name+".hfp")
	if err := os.WriteFile(hfp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return program{exe: exe, bundle: hfp}
}

// target is a running target process.
type target struct {
	cmd    *exec.Cmd
	pid    int
	stdin  io.WriteCloser
	lines  chan string   // stdout, line by line
	done   chan struct{} // closed once the process exited
	err    error         // from Wait, valid after done
	stderr lockedBuffer
	rounds uint64 // slowest worker's rounds at the last query
	// epollEINTR counts the target's epoll_wait calls that failed with
	// EINTR, at the last query.
	epollEINTR uint64
}

// lockedBuffer collects what the target writes on stderr.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startTarget runs exe and waits until all its threads run.
func startTarget(t *testing.T, exe string) *target {
	t.Helper()
	tg := &target{cmd: exec.Command(exe), lines: make(chan string, 16), done: make(chan struct{})}
	tg.cmd.Stderr = &tg.stderr
	var err error
	if tg.stdin, err = tg.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := tg.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := tg.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", exe, err)
	}
	tg.pid = tg.cmd.Process.Pid
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			tg.lines <- sc.Text()
		}
		close(tg.lines)
		tg.err = tg.cmd.Wait()
		close(tg.done)
	}()
	t.Cleanup(func() {
		select {
		case <-tg.done:
		default:
			tg.cmd.Process.Kill()
			<-tg.done
		}
	})
	line, err := tg.readLine()
	if err != nil || line != fmt.Sprintf("ready %d", tg.pid) {
		t.Fatalf("target %s did not start: %q, %v", exe, line, err)
	}
	return tg
}

func (tg *target) readLine() (string, error) {
	select {
	case line, ok := <-tg.lines:
		if !ok {
			<-tg.done
			return "", fmt.Errorf("target %d exited (%v); its stderr: %s", tg.pid, tg.err, tg.stderr.String())
		}
		return line, nil
	case <-time.After(answerTimeout):
		return "", fmt.Errorf("target %d did not answer within %v: its main thread does not run (left stopped?)", tg.pid, answerTimeout)
	}
}

// codeState is what the target says about the patched functions.
type codeState int

const (
	allOld codeState = iota
	allNew
	mixed
)

func (s codeState) String() string {
	return [...]string{"all old", "all new", "MIXED old and new"}[s]
}

// query asks the target which code its functions run and how far its slowest
// worker got.
func (tg *target) query() (codeState, uint64, []int, error) {
	if _, err := io.WriteString(tg.stdin, "q\n"); err != nil {
		return 0, 0, nil, fmt.Errorf("write a query to target %d: %w; its stderr: %s", tg.pid, err, tg.stderr.String())
	}
	line, err := tg.readLine()
	if err != nil {
		return 0, 0, nil, err
	}
	f := strings.Fields(line)
	if len(f) != 3+len(patchedFuncs) || f[0] != "state" {
		return 0, 0, nil, fmt.Errorf("target %d answered %q, want 'state ROUNDS K0..K4 EPOLL_EINTR'", tg.pid, line)
	}
	if tg.epollEINTR, err = strconv.ParseUint(f[len(f)-1], 10, 64); err != nil {
		return 0, 0, nil, fmt.Errorf("target %d answered %q: %w", tg.pid, line, err)
	}
	rounds, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return 0, 0, nil, fmt.Errorf("target %d answered %q: %w", tg.pid, line, err)
	}
	kinds := make([]int, len(patchedFuncs))
	news := 0
	for i := range kinds {
		if kinds[i], err = strconv.Atoi(f[2+i]); err != nil {
			return 0, 0, nil, fmt.Errorf("target %d answered %q: %w", tg.pid, line, err)
		}
		if kinds[i] == 1 {
			news++
		} else if kinds[i] != 0 {
			return mixed, rounds, kinds, nil
		}
	}
	switch news {
	case 0:
		return allOld, rounds, kinds, nil
	case len(kinds):
		return allNew, rounds, kinds, nil
	}
	return mixed, rounds, kinds, nil
}

// progressWait bounds how long every worker may take to complete one more
// round; with 12 threads on 2 cores each still runs many times a second.
const progressWait = 3 * time.Second

// check verifies the target is alive, printed no error, has no thread left
// stopped, every worker still makes progress, and its code is consistently
// old or new; it returns which.
func (tg *target) check() (codeState, error) {
	select {
	case <-tg.done:
		return 0, fmt.Errorf("target %d died (%v); its stderr: %s", tg.pid, tg.err, tg.stderr.String())
	default:
	}
	if s := tg.stderr.String(); s != "" {
		return 0, fmt.Errorf("target %d printed an error: %s", tg.pid, s)
	}
	if err := tg.noThreadStopped(); err != nil {
		return 0, err
	}
	deadline := time.Now().Add(progressWait)
	for {
		st, rounds, kinds, err := tg.query()
		if err != nil {
			return 0, err
		}
		if st == mixed {
			return st, fmt.Errorf("target %d runs half patched: old(0)/new(1) per function %v", tg.pid, kinds)
		}
		if rounds > tg.rounds {
			tg.rounds = rounds
			return st, nil
		}
		if time.Now().After(deadline) {
			return st, fmt.Errorf("target %d: its slowest worker made no progress in %v (stuck at %d rounds): a thread was left stopped", tg.pid, progressWait, rounds)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stoppedGrace is how long a thread may still show as stopped right after
// the tracer died, while the kernel detaches it.
const stoppedGrace = time.Second

// noThreadStopped fails when a thread of the target stays in a stopped or
// traced state.
func (tg *target) noThreadStopped() error {
	deadline := time.Now().Add(stoppedGrace)
	for {
		stopped, err := stoppedThreads(tg.pid)
		if err != nil || len(stopped) == 0 {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("target %d: threads %v are left stopped", tg.pid, stopped)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func stoppedThreads(pid int) ([]string, error) {
	dir := fmt.Sprintf("/proc/%d/task", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list threads of target %d: %w", pid, err)
	}
	var stopped []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "stat"))
		if err != nil {
			continue // the thread exited
		}
		// The state follows the command name, which is in parentheses.
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
			if st := s[i+2]; st == 't' || st == 'T' {
				stopped = append(stopped, e.Name()+":"+string(st))
			}
		}
	}
	return stopped, nil
}

// finish ends the target through end of input and checks it exits cleanly.
func (tg *target) finish() error {
	tg.stdin.Close()
	select {
	case <-tg.done:
	case <-time.After(exitTimeout):
		tg.cmd.Process.Signal(syscall.SIGKILL)
		<-tg.done
		return fmt.Errorf("target %d did not exit within %v of end of input", tg.pid, exitTimeout)
	}
	if tg.err != nil || tg.stderr.String() != "" {
		return fmt.Errorf("target %d ended with %v; its stderr: %s", tg.pid, tg.err, tg.stderr.String())
	}
	return nil
}
