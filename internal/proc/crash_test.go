package proc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"hotfleet/internal/testenv"
)

// helperEnv makes the test binary act as a hotfleet that dies: it attaches
// to a target, starts a remote mmap and SIGKILLs itself at a named point.
const helperEnv = "HOTFLEET_PROC_TEST_HELPER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(helperEnv); spec != "" {
		os.Exit(runHelper(spec))
	}
	os.Exit(m.Run())
}

// runHelper runs "crash <pid> <tid> <point>" or "attach <pid>".
func runHelper(spec string) int {
	f := strings.Fields(spec)
	ctx := context.Background()
	pid, _ := strconv.Atoi(f[1])
	switch f[0] {
	case "attach": // used by the permission test, as an unprivileged user
		tr, err := Attach(ctx, pid)
		if err == nil {
			err = tr.StopAll(ctx)
			tr.Close()
		}
		fmt.Println(errText(err))
		return 0
	case "hold": // a second tracer, as a debugger would be
		tr, err := Attach(ctx, pid)
		if err == nil {
			_, err = tr.StopOne(ctx)
		}
		if err != nil {
			fmt.Println(err)
			return 3
		}
		fmt.Println("held")
		// Sleep rather than block forever: with every goroutine blocked the
		// runtime would end the process, and with it the trace.
		time.Sleep(time.Hour)
		return 0
	case "crash":
		tid, _ := strconv.Atoi(f[2])
		point := f[3]
		tr, err := Attach(ctx, pid)
		if err != nil {
			fmt.Println(err)
			return 3
		}
		if err := tr.StopAll(ctx); err != nil {
			fmt.Println(err)
			return 3
		}
		tr.preferTid = tid
		testHook = func(p string) {
			if p == point {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		}
		if _, err := tr.Syscall(ctx, unix.SYS_MMAP, 0, 4096, unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uint64(0), 0); err != nil {
			fmt.Println(err)
			return 3
		}
		if point == "after-call" {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
		fmt.Println("point not reached")
		return 3
	}
	return 4
}

func errText(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errorsIs(err, ErrAlreadyTraced):
		return "already-traced " + err.Error()
	case errorsIs(err, ErrPermission):
		return "permission " + err.Error()
	}
	return "other " + err.Error()
}

// threadIn finds the thread of pid blocked in system call nr.
func threadIn(t *testing.T, pid int, nr int) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		tids, _ := Threads(pid)
		for _, tid := range tids {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/syscall", pid, tid))
			if err == nil && strings.HasPrefix(string(b), strconv.Itoa(nr)+" ") {
				return tid
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no thread of pid %d is in system call %d", pid, nr)
	return 0
}

// TestSyscallCrashSafe kills the process making a remote system call at
// every point where the target thread's registers are changed, on threads
// blocked in read, nanosleep, epoll_wait and sigwaitinfo and on a busy AVX
// thread. The
// target must go on as if nothing happened: no EINTR, no short sleep, no
// corrupted FP state, no lost input, no thread left traced.
func TestSyscallCrashSafe(t *testing.T) {
	testenv.NeedRoot(t)
	tg := startTarget(t, targetBin(t), "4")
	tg.waitProgress(1, 1)
	threads := map[string]int{
		"read":        tg.pid,
		"nanosleep":   threadIn(t, tg.pid, unix.SYS_CLOCK_NANOSLEEP),
		"epoll_wait":  threadIn(t, tg.pid, unix.SYS_EPOLL_WAIT),
		"sigwaitinfo": threadIn(t, tg.pid, unix.SYS_RT_SIGTIMEDWAIT),
	}
	tids, _ := Threads(tg.pid)
	threads["busy"] = tids[1] // created first: a busy thread
	points := []string{"after-setregs", "at-entry", "at-exit", "parked", "after-call"}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, name := range []string{"read", "nanosleep", "epoll_wait", "sigwaitinfo", "busy"} {
		for _, point := range points {
			tid := threads[name]
			t.Logf("kill at %s with the %s thread (%d) making the call", point, name, tid)
			cmd := exec.Command(self, "-test.run=^$")
			cmd.Env = append(os.Environ(), fmt.Sprintf("%s=crash %d %d %s", helperEnv, tg.pid, tid, point))
			out, err := cmd.CombinedOutput()
			ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
			if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("%s thread, kill at %s: helper did not die by SIGKILL (%v): %s", name, point, err, out)
			}
			if tt := waitUntraced(tg.pid); len(tt) != 0 {
				t.Fatalf("%s thread, kill at %s: threads %v still traced after the tracer died", name, point, tt)
			}
			b, s := tg.status()
			tg.waitProgress(b+1, s+1)
			word := fmt.Sprintf("after-%s-%s", name, point)
			tg.send(word)
			tg.expect("got "+word, 5*time.Second)
			n++
		}
	}
	t.Logf("%d kills of the tracer mid-call; the target carried on every time", n)
	tg.finish()
}

func waitUntraced(pid int) []int {
	deadline := time.Now().Add(2 * time.Second)
	for {
		tt := tracedThreads(pid)
		if len(tt) == 0 || time.Now().After(deadline) {
			return tt
		}
		time.Sleep(5 * time.Millisecond)
	}
}
