package livepatch_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"hotfleet/internal/livepatch"
	"hotfleet/internal/livepatch/lptest"
	"hotfleet/internal/proc"
)

// hotfleetMappings returns the lines of /proc/PID/maps that hotfleet named.
func hotfleetMappings(t *testing.T, pid int) []proc.Mapping {
	t.Helper()
	maps, err := proc.ReadMaps(pid)
	if err != nil {
		t.Fatal(err)
	}
	var out []proc.Mapping
	for _, m := range maps {
		if strings.HasPrefix(m.Path, "/memfd:hotfleet:") || strings.HasPrefix(m.Path, "[anon:hotfleet:") {
			out = append(out, m)
		}
	}
	return out
}

// hotfleetFds returns the target's fds open on a memfd hotfleet created.
func hotfleetFds(t *testing.T, pid int) []string {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if link, err := os.Readlink(dir + "/" + e.Name()); err == nil && strings.HasPrefix(link, "/memfd:hotfleet") {
			out = append(out, e.Name()+" -> "+link)
		}
	}
	return out
}

// needMemfdNaming skips where prctl names regions: the memfd path is then
// never taken.
func needMemfdNaming(t *testing.T) {
	t.Helper()
	if lptest.KernelNamesMappings(t) {
		t.Skip("this kernel names anonymous mappings: regions are named by prctl, not by a memfd")
	}
}

func TestRegionNamedByMemfd(t *testing.T) {
	needMemfdNaming(t)
	bin := lptest.BuildTarget(t, "testdata/target.c", "target")
	p := lptest.Start(t, bin)
	ctx := context.Background()
	b := lptest.MakeBundle(t, bin, "hf-memfd", 1, lptest.Fn{Old: "answer", Code: lptest.Ret(42)})
	if _, err := livepatch.Apply(ctx, p.Pid, b, livepatch.Options{}); err != nil {
		t.Fatalf("apply: %v", err)
	}
	p.Expect("answer", "42")
	st := status(t, p.Pid)
	if len(st) != 1 || st[0].State != "applied" || !st[0].Consistent {
		t.Fatalf("status after apply = %+v", st)
	}
	const want = "/memfd:hotfleet:hf-memfd:L1 (deleted)"
	named := hotfleetMappings(t, p.Pid)
	if len(named) != 1 || named[0].Path != want || named[0].Start != st[0].Region || named[0].Perms[:3] != "r-x" {
		t.Fatalf("hotfleet mappings = %+v, want one r-x %q at %#x:\n%s", named, want, st[0].Region, lptest.Maps(t, p.Pid))
	}
	if st[0].Mapping != want {
		t.Errorf("status mapping = %q, want %q", st[0].Mapping, want)
	}
	if fds := hotfleetFds(t, p.Pid); len(fds) != 0 {
		t.Errorf("the target keeps the region's memfd open: %v", fds)
	}
	mods, err := proc.Modules(p.Pid)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mods {
		if strings.Contains(m.Path, "hotfleet") {
			t.Errorf("the region is listed as an ELF module: %+v", m)
		}
	}
	patched, err := livepatch.Patched(ctx)
	if err != nil || !containsPid(patched, p.Pid) {
		t.Errorf("Patched() = %v, %v; want it to list pid %d", patched, err, p.Pid)
	}
	// A second level replaces the first; the first region's memfd mapping
	// goes once unused.
	l2 := lptest.MakeBundle(t, bin, "hf-memfd", 2, lptest.Fn{Old: "answer", Code: lptest.Ret(44)})
	if _, err := livepatch.Apply(ctx, p.Pid, l2, livepatch.Options{}); err != nil {
		t.Fatalf("apply level 2: %v", err)
	}
	p.Expect("answer", "44")
	if named := hotfleetMappings(t, p.Pid); len(named) != 1 || named[0].Path != "/memfd:hotfleet:hf-memfd:L2 (deleted)" {
		t.Errorf("after level 2 hotfleet mappings = %+v, want only level 2's", named)
	}
	if _, err := livepatch.Revert(ctx, p.Pid, "hf-memfd", livepatch.Options{}); err != nil {
		t.Fatalf("revert: %v", err)
	}
	p.Expect("answer", "1")
	if named := hotfleetMappings(t, p.Pid); len(named) != 0 {
		t.Errorf("after revert hotfleet mappings remain: %+v", named)
	}
}

func containsPid(pids []int, pid int) bool {
	for _, p := range pids {
		if p == pid {
			return true
		}
	}
	return false
}

// TestRegionUnnamedWhenMemfdFails: a target that cannot open another fd
// gets an unnamed anonymous region, found by its magic, and is patched all
// the same.
func TestRegionUnnamedWhenMemfdFails(t *testing.T) {
	needMemfdNaming(t)
	bin := lptest.BuildTarget(t, "testdata/target.c", "target")
	p := lptest.Start(t, bin)
	ctx := context.Background()
	// With fds 0-2 open, a limit of 3 makes memfd_create fail with EMFILE.
	lim := unix.Rlimit{Cur: 3, Max: 3}
	if err := unix.Prlimit(p.Pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		t.Fatalf("lower the target's fd limit: %v", err)
	}
	b := lptest.MakeBundle(t, bin, "hf-nofd", 1, lptest.Fn{Old: "answer", Code: lptest.Ret(42)})
	if _, err := livepatch.Apply(ctx, p.Pid, b, livepatch.Options{}); err != nil {
		t.Fatalf("apply: %v", err)
	}
	p.Expect("answer", "42")
	if named := hotfleetMappings(t, p.Pid); len(named) != 0 {
		t.Errorf("the region is named although memfd_create cannot succeed: %+v", named)
	}
	st := status(t, p.Pid)
	if len(st) != 1 || st[0].State != "applied" || st[0].Mapping != "" {
		t.Fatalf("status = %+v, want one applied unnamed region", st)
	}
	if _, err := livepatch.Revert(ctx, p.Pid, "hf-nofd", livepatch.Options{}); err != nil {
		t.Fatalf("revert: %v", err)
	}
	p.Expect("answer", "1")
	if st := status(t, p.Pid); len(st) != 0 {
		t.Errorf("after revert status = %+v", st)
	}
}

// TestRecoverMemfdLeftovers kills hotfleet while it names a region by a
// memfd: with the fd open (a prepared anonymous region and a leaked fd), and
// with the memfd mapped but the header not yet written again (a named
// mapping of zeros and a leaked fd). Recover must clean both up, and the
// target keeps working and can be patched.
func TestRecoverMemfdLeftovers(t *testing.T) {
	needMemfdNaming(t)
	bin := lptest.BuildTarget(t, "testdata/target.c", "target")
	exe := selfCopy(t)
	ctx := context.Background()
	b := lptest.MakeBundle(t, bin, "hf-left", 1, lptest.Fn{Old: "answer", Code: lptest.Ret(42)})
	cases := []struct {
		failpoint string
		regions   int      // regions status sees after the kill
		named     int      // hotfleet-named mappings after the kill
		recovered []string // what Recover must report
	}{
		{failpoint: "memfd", regions: 1, named: 0,
			recovered: []string{"interrupted before switching; removed its unused region", "closed the memfd it left open"}},
		{failpoint: "named", regions: 0, named: 1,
			recovered: []string{"interrupted before writing its header; removed it", "closed the memfd it left open"}},
	}
	for _, c := range cases {
		t.Run(c.failpoint, func(t *testing.T) {
			p := lptest.Start(t, bin, "workers")
			out, err := runHelper(t, exe, "apply", p.Pid, b, nil, livepatch.FailpointEnv+"="+c.failpoint)
			if err == nil || !strings.Contains(err.Error(), "killed") {
				t.Fatalf("hotfleet apply with failpoint %s was not killed: %v\n%s", c.failpoint, err, out)
			}
			p.Expect("answer", "1")
			if st := status(t, p.Pid); len(st) != c.regions {
				t.Errorf("status after the kill = %+v, want %d regions", st, c.regions)
			}
			if named := hotfleetMappings(t, p.Pid); len(named) != c.named {
				t.Errorf("hotfleet mappings after the kill = %+v, want %d", named, c.named)
			}
			// 'status --recover' over every process must reach it.
			if patched, err := livepatch.Patched(ctx); err != nil || !containsPid(patched, p.Pid) {
				t.Errorf("Patched() = %v, %v after the kill; want it to list pid %d", patched, err, p.Pid)
			}
			if fds := hotfleetFds(t, p.Pid); len(fds) != 1 {
				t.Errorf("leaked memfds after the kill = %v, want 1", fds)
			}
			done, err := livepatch.Recover(ctx, p.Pid, livepatch.Options{})
			if err != nil {
				t.Fatalf("recover: %v", err)
			}
			for _, w := range c.recovered {
				if !strings.Contains(strings.Join(done, "\n"), w) {
					t.Errorf("recover reported %q, want %q", done, w)
				}
			}
			if st := status(t, p.Pid); len(st) != 0 {
				t.Errorf("after recovery regions remain: %+v", st)
			}
			if named := hotfleetMappings(t, p.Pid); len(named) != 0 {
				t.Errorf("after recovery hotfleet mappings remain: %+v", named)
			}
			if fds := hotfleetFds(t, p.Pid); len(fds) != 0 {
				t.Errorf("after recovery memfds stay open: %v", fds)
			}
			if n := anonExecMappings(t, p.Pid); n != 0 {
				t.Errorf("after recovery %d anonymous executable mappings remain", n)
			}
			p.Expect("answer", "1")
			if _, err := livepatch.Apply(ctx, p.Pid, b, livepatch.Options{}); err != nil {
				t.Fatalf("apply after recovery: %v", err)
			}
			p.Expect("answer", "42")
			if named := hotfleetMappings(t, p.Pid); len(named) != 1 {
				t.Errorf("after the new apply hotfleet mappings = %+v, want 1", named)
			}
		})
	}
}

// anonExecMappings counts anonymous r-x mappings (unnamed regions and
// leftovers of them).
func anonExecMappings(t *testing.T, pid int) int {
	t.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/maps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 5 && strings.HasPrefix(fields[1], "r-x") && fields[4] == "0" {
			n++
		}
	}
	return n
}
