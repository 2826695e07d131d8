package proc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"golang.org/x/sys/unix"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"hotfleet/internal/testenv"
)

// target is a running C test program with its stdin and stdout attached.
type target struct {
	t     testing.TB
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string
	pid   int
	done  chan error
}

var (
	buildOnce sync.Map // source name -> binary path
)

// buildTarget compiles testdata/name.c once per test binary run.
func buildTarget(t testing.TB, name string, args ...string) string {
	t.Helper()
	testenv.NeedGCC(t)
	key := name + strings.Join(args, " ")
	if p, ok := buildOnce.Load(key); ok {
		return p.(string)
	}
	dir, err := os.MkdirTemp("", "hotfleet-proc-test-")
	if err != nil {
		t.Fatal(err)
	}
	src, err := filepath.Abs(filepath.Join("testdata", name+".c"))
	if err != nil {
		t.Fatal(err)
	}
	out := testenv.CC(t, filepath.Join(dir, name), append(args, src)...)
	buildOnce.Store(key, out)
	return out
}

// startTarget runs the compiled target and waits for its "ready" line.
func startTarget(t testing.TB, bin string, args ...string) *target {
	t.Helper()
	tg := startTargetRaw(t, bin, args...)
	l := tg.expect("ready", 10*time.Second)
	if l != fmt.Sprintf("ready %d", tg.pid) {
		t.Fatalf("target said %q, want ready %d", l, tg.pid)
	}
	return tg
}

// startTargetRaw runs the compiled target without waiting for any line.
func startTargetRaw(t testing.TB, bin string, args ...string) *target {
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
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	tg := &target{t: t, cmd: cmd, stdin: stdin, lines: make(chan string, 1024), pid: cmd.Process.Pid, done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			tg.lines <- sc.Text()
		}
		close(tg.lines)
		tg.done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-tg.done
	})
	return tg
}

// expect returns the next line starting with prefix; a FAIL line or the
// target's exit fails the test.
func (tg *target) expect(prefix string, timeout time.Duration) string {
	tg.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-tg.lines:
			if !ok {
				err := <-tg.done
				tg.done <- err
				tg.t.Fatalf("target exited (%v) while waiting for %q", err, prefix)
			}
			if strings.HasPrefix(l, "FAIL") {
				tg.t.Fatalf("target reported: %s", l)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-deadline:
			tg.t.Fatalf("no %q line from the target within %v", prefix, timeout)
		}
	}
}

func (tg *target) send(line string) {
	tg.t.Helper()
	if _, err := io.WriteString(tg.stdin, line+"\n"); err != nil {
		tg.t.Fatalf("write to target: %v", err)
	}
}

// status returns the slowest busy thread's progress and the sleep count.
func (tg *target) status() (busy, sleeps uint64) {
	tg.t.Helper()
	tg.send("status")
	f := strings.Fields(tg.expect("status", 10*time.Second))
	if len(f) != 4 {
		tg.t.Fatalf("bad status line %q", f)
	}
	b, _ := strconv.ParseUint(f[1], 10, 64)
	s, _ := strconv.ParseUint(f[2], 10, 64)
	return b, s
}

// signals returns how many SIGRTMIN the target handled.
func (tg *target) signals() uint64 {
	tg.t.Helper()
	tg.send("status")
	f := strings.Fields(tg.expect("status", 10*time.Second))
	n, _ := strconv.ParseUint(f[len(f)-1], 10, 64)
	return n
}

// finish closes stdin and asserts the target exits 0 having reported no
// failure.
func (tg *target) finish() {
	tg.t.Helper()
	tg.send("ping")
	tg.expect("got ping", 10*time.Second)
	tg.stdin.Close()
	tg.expect("bye", 10*time.Second)
	select {
	case err := <-tg.done:
		if err != nil {
			tg.t.Fatalf("target exit: %v", err)
		}
		tg.done <- nil
	case <-time.After(10 * time.Second):
		tg.t.Fatal("target did not exit after stdin closed")
	}
}

// waitProgress waits until every busy thread made progress and the sleeper
// finished at least minSleeps sleeps.
func (tg *target) waitProgress(minBusy, minSleeps uint64) {
	tg.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, s := tg.status()
		if b >= minBusy && s >= minSleeps {
			return
		}
		if time.Now().After(deadline) {
			tg.t.Fatalf("target made no progress: busy %d (want %d), sleeps %d (want %d)", b, minBusy, s, minSleeps)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func attach(t testing.TB, pid int) *Tracer {
	t.Helper()
	tr, err := Attach(context.Background(), pid)
	if err != nil {
		t.Fatalf("Attach(%d): %v", pid, err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// threadState letter of every thread in pid, for assertions that nothing is
// left traced or stopped.
func tracedThreads(pid int) []int {
	tids, _ := Threads(pid)
	var out []int
	for _, tid := range tids {
		if v := statusField(fmt.Sprintf("/proc/%d/task/%d/status", pid, tid), "TracerPid"); v != "0" && v != "" {
			out = append(out, tid)
		}
	}
	return out
}

func errorsIsErrno(err error, e unix.Errno) bool { return errors.Is(err, e) }

func errorsIs(err, target error) bool { return errors.Is(err, target) }

func pidSelf() int { return os.Getpid() }
