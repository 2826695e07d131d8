package inventory

import (
	"bufio"
	"debug/elf"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"hotfleet/internal/testenv"
)

// buildTarget compiles testdata/name.c into dir.
func buildTarget(t testing.TB, dir, name string) string {
	t.Helper()
	return testenv.CC(t, filepath.Join(dir, name), "-O1", "-pthread", "-Wl,--build-id=sha1", filepath.Join("testdata", name+".c"))
}

type target struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	pid   int
	ready []string // fields of the ready line
}

// start runs cmd, waits for its "ready" line and stops it when the test ends.
func start(t testing.TB, cmd *exec.Cmd) *target {
	t.Helper()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	tg := &target{cmd: cmd, stdin: stdin, pid: cmd.Process.Pid}
	t.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(out).ReadString('\n')
		line <- l
	}()
	select {
	case l := <-line:
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != "ready" {
			t.Fatalf("%v said %q, want ready", cmd.Args, l)
		}
		tg.ready = f
	case <-time.After(60 * time.Second):
		t.Fatalf("%v did not get ready", cmd.Args)
	}
	return tg
}

// fileBuildID reads a file's GNU build-id with debug/elf, independently of
// the package's own reader.
func fileBuildID(t testing.TB, path string) string {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := f.Section(".note.gnu.build-id")
	if s == nil {
		t.Fatalf("%s has no .note.gnu.build-id", path)
	}
	data, err := s.Data()
	if err != nil {
		t.Fatal(err)
	}
	// namesz, descsz, type, "GNU\0", desc
	if len(data) < 16 {
		t.Fatalf("%s: short build-id note", path)
	}
	descsz := f.ByteOrder.Uint32(data[4:])
	return hex.EncodeToString(data[16 : 16+descsz])
}

// libcPath finds the C library the process maps, from its maps file.
func libcPath(t testing.TB, pid int) string {
	t.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/maps")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		if len(f) == 6 && strings.HasPrefix(filepath.Base(f[5]), "libc.so") {
			return f[5]
		}
	}
	t.Fatalf("pid %d maps no libc:\n%s", pid, data)
	return ""
}

func findModule(p Process, path string) (Module, bool) {
	for _, m := range p.Modules {
		if m.Path == path {
			return m, true
		}
	}
	return Module{}, false
}

func findProcess(ps []Process, pid int) (Process, bool) {
	for _, p := range ps {
		if p.Pid == pid {
			return p, true
		}
	}
	return Process{}, false
}
