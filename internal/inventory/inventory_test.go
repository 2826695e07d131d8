package inventory

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"hotfleet/internal/testenv"
)

// statStartTime reads field 22 of /proc/PID/stat with a plain split.
func statStartTime(t *testing.T, pid int) uint64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	v, err := strconv.ParseUint(f[22-3], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func selfMountNS(t *testing.T) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/mnt", &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// TestScan runs a program as an unprivileged user and checks that Scan and
// Process describe it as the kernel does: identity, user, namespace and the
// build-ids of its executable and libc as their files carry them.
func TestScan(t *testing.T) {
	testenv.NeedRoot(t)
	dir := t.TempDir()
	// The unprivileged target must be able to reach its executable.
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	bin := buildTarget(t, dir, "target")
	const nobody = 65534
	cmd := exec.Command(bin)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	tg := start(t, cmd)
	libc := libcPath(t, tg.pid)

	s := NewScanner(Options{})
	ctx := context.Background()
	ps, err := s.Scan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := findProcess(ps, tg.pid)
	if !ok {
		t.Fatalf("pid %d missing from a scan of %d processes", tg.pid, len(ps))
	}
	if p.Comm != "target" || p.Exe != bin || p.UID != nobody {
		t.Errorf("got comm %q exe %q uid %d, want target %q %d", p.Comm, p.Exe, p.UID, bin, nobody)
	}
	if want := statStartTime(t, tg.pid); p.StartTime != want || want == 0 {
		t.Errorf("start time %d, want %d", p.StartTime, want)
	}
	if p.MountNS != selfMountNS(t) || p.Container {
		t.Errorf("mount ns %d container %v, want the test's own %d, not a container", p.MountNS, p.Container, selfMountNS(t))
	}
	for path, want := range map[string]string{bin: fileBuildID(t, bin), libc: fileBuildID(t, libc)} {
		m, ok := findModule(p, path)
		if !ok {
			t.Errorf("no module %s in %+v", path, p.Modules)
		} else if m.BuildID != want {
			t.Errorf("module %s has build-id %q, want %q", path, m.BuildID, want)
		}
	}
	seen := map[string]bool{}
	for _, m := range p.Modules {
		if seen[m.Path] || !strings.HasPrefix(m.Path, "/") && m.Path != "[vdso]" {
			t.Errorf("module %q listed twice or not a file", m.Path)
		}
		seen[m.Path] = true
	}

	// Nothing else: not the scanner itself, no kernel threads, no zombies.
	for _, q := range ps {
		if q.Pid == os.Getpid() {
			t.Errorf("the scanning process %d is listed", q.Pid)
		}
		if q.Exe == "" || len(q.Modules) == 0 {
			t.Errorf("pid %d (%s) listed without executable or modules: a kernel thread?", q.Pid, q.Comm)
		}
	}
	if _, ok := findProcess(ps, 2); ok {
		t.Errorf("kthreadd (pid 2) is listed")
	}
	if _, err := s.Process(ctx, 2); !errors.Is(err, ErrKernelThread) {
		t.Errorf("Process(2) = %v, want ErrKernelThread", err)
	}

	// Process sees the same, and now answers every module from the cache.
	before := s.Stats()
	one, err := s.Process(ctx, tg.pid)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(one, p) {
		t.Errorf("Process = %+v\nScan had %+v", one, p)
	}
	after := s.Stats()
	if after.Misses != before.Misses || after.Hits-before.Hits != len(p.Modules) {
		t.Errorf("a warm Process read files: stats %+v -> %+v for %d modules", before, after, len(p.Modules))
	}
}

// TestGone checks that a zombie and a reaped process are reported gone and
// left out of scans.
func TestGone(t *testing.T) {
	testenv.NeedRoot(t)
	bin := buildTarget(t, t.TempDir(), "target")
	cmd := exec.Command(bin)
	tg := start(t, cmd)
	s := NewScanner(Options{})
	ctx := context.Background()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	// Not reaped yet: a zombie.
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", tg.pid))
		if s := string(data); strings.Contains(s, ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d did not become a zombie", tg.pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := s.Process(ctx, tg.pid); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Process(zombie) = %v, want os.ErrNotExist", err)
	}
	ps, err := s.Scan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := findProcess(ps, tg.pid); ok {
		t.Errorf("zombie %d listed", tg.pid)
	}
	cmd.Wait()
	if _, err := s.Process(ctx, tg.pid); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Process(reaped) = %v, want os.ErrNotExist", err)
	}
}

// TestThread checks that a thread id is not taken for a process.
func TestThread(t *testing.T) {
	testenv.NeedRoot(t)
	bin := buildTarget(t, t.TempDir(), "target")
	tg := start(t, exec.Command(bin, "thread"))
	tid, _ := strconv.Atoi(tg.ready[2])
	_, err := NewScanner(Options{}).Process(context.Background(), tid)
	if err == nil || errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), fmt.Sprintf("thread of process %d", tg.pid)) {
		t.Errorf("Process(thread %d of %d) = %v, want an error naming the process", tid, tg.pid, err)
	}
}

// TestDeleted replaces a running program's file, as a package upgrade does:
// the module keeps the build-id of the code that runs, under its
// "(deleted)" path, through map_files and through the fallback alike.
func TestDeleted(t *testing.T) {
	testenv.NeedRoot(t)
	dir := t.TempDir()
	bin := buildTarget(t, dir, "target")
	want := fileBuildID(t, bin)
	tg := start(t, exec.Command(bin))
	if err := os.WriteFile(bin+".new", []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(bin+".new", bin); err != nil {
		t.Fatal(err)
	}
	p, err := NewScanner(Options{Packages: true}).Process(context.Background(), tg.pid)
	if err != nil {
		t.Fatal(err)
	}
	if p.Exe != bin+" (deleted)" {
		t.Errorf("exe %q, want %q", p.Exe, bin+" (deleted)")
	}
	if m, ok := findModule(p, bin+" (deleted)"); !ok || m.BuildID != want || m.Package != "" {
		t.Errorf("deleted executable: got %+v (found %v), want build-id %s and no package", m, ok, want)
	}
}

// TestNoMapFiles forces the /proc/PID/root fallback and checks that it
// finds the same modules for a live file, and none for a deleted one,
// which cannot be reached by path.
func TestNoMapFiles(t *testing.T) {
	testenv.NeedRoot(t)
	bin := buildTarget(t, t.TempDir(), "target")
	tg := start(t, exec.Command(bin))
	ctx := context.Background()
	want, err := NewScanner(Options{}).Process(ctx, tg.pid)
	if err != nil {
		t.Fatal(err)
	}
	s := NewScanner(Options{})
	s.noMapFiles = true
	got, err := s.Process(ctx, tg.pid)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("without map_files: %+v\nwith: %+v", got.Modules, want.Modules)
	}
}

// TestContainer runs a program from a tmpfs mounted only in a private mount
// namespace: its path does not exist on the host, yet its module is found
// with the right build-id, it is marked a container, and the host's package
// database is not applied to it.
func TestContainer(t *testing.T) {
	testenv.NeedRoot(t)
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		if testenv.InCI() {
			t.Fatalf("CI=true but unshare (util-linux) is missing: %v", err)
		}
		t.Skipf("needs unshare (util-linux): %v", err)
	}
	dir := t.TempDir()
	bin := buildTarget(t, dir, "target")
	want := fileBuildID(t, bin)
	mnt := filepath.Join(dir, "private")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	script := `mount -t tmpfs hf-test "$1" && cp "$2" "$1/contained" && exec "$1/contained"`
	tg := start(t, exec.Command(unshare, "--mount", "--propagation", "private", "sh", "-c", script, "sh", mnt, bin))
	inside := filepath.Join(mnt, "contained")
	if _, err := os.Stat(inside); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s is visible on the host (%v): the test would prove nothing", inside, err)
	}

	for _, noMapFiles := range []bool{false, true} {
		s := NewScanner(Options{Packages: true})
		s.noMapFiles = noMapFiles
		ps, err := s.Scan(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		p, ok := findProcess(ps, tg.pid)
		if !ok {
			t.Fatalf("noMapFiles=%v: contained pid %d not listed", noMapFiles, tg.pid)
		}
		if !p.Container || p.MountNS == selfMountNS(t) {
			t.Errorf("noMapFiles=%v: container %v mount ns %d (ours %d)", noMapFiles, p.Container, p.MountNS, selfMountNS(t))
		}
		m, ok := findModule(p, inside)
		if !ok || m.BuildID != want {
			t.Errorf("noMapFiles=%v: module %s = %+v (found %v), want build-id %s; modules %+v", noMapFiles, inside, m, ok, want, p.Modules)
		}
		libc := 0
		for _, m := range p.Modules {
			if m.Package != "" {
				t.Errorf("noMapFiles=%v: container module %s got host package %q", noMapFiles, m.Path, m.Package)
			}
			if strings.HasPrefix(filepath.Base(m.Path), "libc.so") && m.BuildID != "" {
				libc++
			}
		}
		if libc != 1 {
			t.Errorf("noMapFiles=%v: contained process has %d libc modules with build-id, want 1: %+v", noMapFiles, libc, p.Modules)
		}
	}
}

// TestEviction checks that a file no process maps any more leaves the cache
// after keepScans scans, and that a warm scan reads no file of a process it
// already knows.
func TestEviction(t *testing.T) {
	testenv.NeedRoot(t)
	bin := buildTarget(t, t.TempDir(), "target")
	cmd := exec.Command(bin)
	tg := start(t, cmd)
	var st syscall.Stat_t
	if err := syscall.Stat(bin, &st); err != nil {
		t.Fatal(err)
	}
	key := fileKey{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano()}
	cached := func(s *Scanner) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		_, ok := s.cache[key]
		return ok
	}
	s := NewScanner(Options{})
	ctx := context.Background()
	if _, err := s.Scan(ctx); err != nil {
		t.Fatal(err)
	}
	if !cached(s) {
		t.Fatalf("%s not cached after a scan of pid %d", bin, tg.pid)
	}
	tg.stdin.Close()
	cmd.Wait()
	for i := 1; i <= keepScans; i++ {
		if !cached(s) {
			t.Fatalf("evicted after %d scans, want %d", i-1, keepScans)
		}
		if _, err := s.Scan(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if cached(s) {
		t.Errorf("%s still cached %d scans after its process exited", bin, keepScans)
	}
}

// TestPackages checks that libc is attributed to the package and version
// dpkg itself reports, although dpkg lists it under /lib and the process
// maps it under /usr/lib on a merged-/usr system, and that a file no package
// owns gets no package.
func TestPackages(t *testing.T) {
	testenv.NeedRoot(t)
	if _, err := exec.LookPath("dpkg-query"); err != nil {
		if testenv.InCI() {
			t.Fatalf("CI=true but dpkg-query is missing: %v", err)
		}
		t.Skipf("needs a Debian host: %v", err)
	}
	bin := buildTarget(t, t.TempDir(), "target")
	tg := start(t, exec.Command(bin))
	libc := libcPath(t, tg.pid)
	arch, err := exec.Command("dpkg", "--print-architecture").Output()
	if err != nil {
		t.Fatal(err)
	}
	pkg := "libc6:" + strings.TrimSpace(string(arch))
	version, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", pkg).Output()
	if err != nil {
		t.Fatalf("dpkg-query %s: %v", pkg, err)
	}
	p, err := NewScanner(Options{Packages: true}).Process(context.Background(), tg.pid)
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := findModule(p, libc); m.Package != pkg+" "+string(version) {
		t.Errorf("libc %s: package %q, want %q", libc, m.Package, pkg+" "+string(version))
	}
	if m, ok := findModule(p, bin); !ok || m.Package != "" {
		t.Errorf("test executable: %+v (found %v), want no package", m, ok)
	}
	if m, _ := findModule(p, libc); !strings.HasPrefix(libc, "/usr/lib/") {
		t.Logf("libc is mapped as %s (%s): the merged-/usr case is not exercised here", libc, m.Package)
	}
}

// TestConcurrent runs scans and single-process lookups at once (run with
// -race): they share the cache, the counters and the package index.
func TestConcurrent(t *testing.T) {
	testenv.NeedRoot(t)
	bin := buildTarget(t, t.TempDir(), "target")
	tg := start(t, exec.Command(bin))
	s := NewScanner(Options{Packages: true})
	ctx := context.Background()
	errs := make(chan error, 8)
	for i := 0; i < 4; i++ {
		go func() {
			_, err := s.Scan(ctx)
			errs <- err
		}()
		go func() {
			p, err := s.Process(ctx, tg.pid)
			if err == nil && len(p.Modules) < 2 {
				err = fmt.Errorf("pid %d has modules %+v", tg.pid, p.Modules)
			}
			errs <- err
		}()
	}
	for i := 0; i < 8; i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if st := s.Stats(); st.Hits == 0 || st.Misses == 0 || st.Entries == 0 {
		t.Errorf("stats %+v after concurrent scans", st)
	}
}

// TestCanceled: a canceled context stops a scan.
func TestCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := NewScanner(Options{}).Scan(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Scan with a canceled context: %v", err)
	}
}

// TestLeaderExited: a process whose main thread exited still runs code
// through its other threads; it is listed with its modules, not skipped as
// a zombie.
func TestLeaderExited(t *testing.T) {
	testenv.NeedRoot(t)
	bin := buildTarget(t, t.TempDir(), "leaderexit")
	tg := start(t, exec.Command(bin))
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", tg.pid))
		if strings.Contains(string(data), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("leader %d did not become a zombie", tg.pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	want := fileBuildID(t, bin)
	for _, noMapFiles := range []bool{false, true} {
		s := NewScanner(Options{})
		s.noMapFiles = noMapFiles
		ps, err := s.Scan(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		p, ok := findProcess(ps, tg.pid)
		if !ok {
			t.Fatalf("noMapFiles=%v: pid %d with an exited leader not listed", noMapFiles, tg.pid)
		}
		if m, ok := findModule(p, bin); !ok || m.BuildID != want || p.Exe != bin {
			t.Errorf("noMapFiles=%v: exe %q modules %+v, want %s with build-id %s", noMapFiles, p.Exe, p.Modules, bin, want)
		}
		if len(p.Modules) < 2 {
			t.Errorf("noMapFiles=%v: modules %+v, want the executable and libc at least", noMapFiles, p.Modules)
		}
	}
}
