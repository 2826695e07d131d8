package procwatch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"hotfleet/internal/testenv"
)

// helperEnv makes the test binary act as a small program that opens a
// Watcher in the mode given and prints the mode it got or the error.
const helperEnv = "PROCWATCH_TEST_OPEN_MODE"

func TestMain(m *testing.M) {
	if mode, ok := os.LookupEnv(helperEnv); ok {
		os.Exit(openAndReport(mode))
	}
	os.Exit(m.Run())
}

// openAndReport opens a Watcher in mode and prints the mode it got and
// whether it saw the exec of a child, or the error.
func openAndReport(mode string) int {
	w, err := Open(context.Background(), Options{Mode: mode, PollInterval: 10 * time.Millisecond})
	if err != nil {
		fmt.Printf("error unavailable=%v: %v\n", errors.Is(err, ErrUnavailable), err)
		return 0
	}
	defer w.Close()
	// A child that lives until its stdin closes, so that polling sees it.
	child := exec.Command("/bin/sh", "-c", "read x")
	stdin, _ := child.StdinPipe()
	if err := child.Start(); err != nil {
		fmt.Println("start child:", err)
		return 1
	}
	defer child.Wait()
	defer stdin.Close()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev := <-w.Events():
			if ev.Kind == Exec && ev.Pid == child.Process.Pid {
				fmt.Printf("%s saw-exec\n", w.Mode())
				return 0
			}
		case <-timeout:
			fmt.Printf("%s no-exec\n", w.Mode())
			return 0
		}
	}
}

// TestRestrictedOpen runs Open where the connector is restricted: as user
// nobody (before Linux 6.6 only CAP_NET_ADMIN may listen; since, anyone) and
// in a new user namespace (the kernel ignores subscriptions from outside the
// initial user namespace, whatever the version).
func TestRestrictedOpen(t *testing.T) {
	testenv.NeedRoot(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// A copy nobody can execute: the test binary's directory is private.
	dir, err := os.MkdirTemp("", "procwatch-restricted-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	bin := filepath.Join(dir, "procwatch.test")
	if err := copyFile(self, bin); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	const nobody = 65534
	asNobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	userNS := &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
	}
	tests := []struct {
		name, mode string
		attr       *syscall.SysProcAttr
		want       []string // any of these
	}{
		{"nobody, any mode", "", asNobody, []string{"netlink saw-exec", "poll saw-exec"}},
		{"nobody, netlink", ModeNetlink, asNobody, []string{"netlink saw-exec", "error unavailable=true"}},
		{"user namespace, any mode", "", userNS, []string{"poll saw-exec"}},
		{"user namespace, netlink", ModeNetlink, userNS, []string{"error unavailable=true"}},
		{"user namespace, poll", ModePoll, userNS, []string{"poll saw-exec"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(bin)
			cmd.Env = append(os.Environ(), helperEnv+"="+tc.mode)
			cmd.SysProcAttr = tc.attr
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("helper: %v\n%s", err, out)
			}
			got := strings.TrimSpace(string(out))
			t.Logf("Open(mode %q): %s", tc.mode, got)
			for _, w := range tc.want {
				if strings.HasPrefix(got, w) {
					return
				}
			}
			t.Errorf("Open(mode %q): %q, want one of %q", tc.mode, got, tc.want)
		})
	}
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// TestExecFromThread: when a thread other than the main one executes a
// program, the kernel ends every other thread, the main one included, and the
// exec'ing thread takes over the process id. The main thread's end must not
// be reported as the process's.
func TestExecFromThread(t *testing.T) {
	threadexec := build(t, "threadexec", "-pthread")
	hold := build(t, "hold")
	w := open(t, Options{Mode: ModeNetlink})
	p := start(t, threadexec, hold, "4")
	next(t, w, "exec of threadexec", is(Exec, p.pid()))
	exec, before := next(t, w, "exec of hold from the thread", is(Exec, p.pid()))
	if exec.Tid != p.pid() {
		t.Errorf("exec from a thread: Tid %d, want the process id %d it took over", exec.Tid, p.pid())
	}
	for _, ev := range before {
		if ev.Pid == p.pid() {
			t.Errorf("event of the process between its two execs: %+v", ev)
		}
	}
	for _, ev := range quiet(w, 200*time.Millisecond) {
		if ev.Pid == p.pid() {
			t.Errorf("event while hold runs: %+v", ev)
		}
	}
	p.finish(t)
	ev, _ := next(t, w, "exit of hold", is(Exit, p.pid()))
	if ev.ExitCode != 4 {
		t.Errorf("exit of hold: %+v, want code 4", ev)
	}
}
