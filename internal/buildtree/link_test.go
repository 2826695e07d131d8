package buildtree

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"testing"

	"hotfleet/internal/testenv"
)

// TestArchiveMembers reads regular and thin archives made by ar and finds
// the objects of a link through -L/-l and through a path on the command line.
func TestArchiveMembers(t *testing.T) {
	testenv.NeedGCC(t)
	dir := t.TempDir()
	var objs []string
	byHash := map[[32]byte][]string{}
	for i, src := range []string{"int a(void) { return 1; }\n", "int b(void) { return 2; }\n"} {
		c := filepath.Join(dir, string(rune('a'+i))+".c")
		os.WriteFile(c, []byte(src), 0o644)
		o := testenv.CC(t, c[:len(c)-2]+".o", "-c", c)
		objs = append(objs, o)
		data, _ := os.ReadFile(o)
		byHash[sha256.Sum256(data)] = append(byHash[sha256.Sum256(data)], o)
	}
	for _, flags := range []string{"rcs", "rcsT"} {
		lib := filepath.Join(dir, "lib"+flags+".a")
		if out, err := exec.Command("ar", append([]string{flags, lib}, objs...)...).CombinedOutput(); err != nil {
			t.Fatalf("ar %s: %v\n%s", flags, err, out)
		}
		for _, inv := range []Invocation{
			{Cwd: dir, Link: true, Libs: []string{flags}, LibDirs: []string{"."}},
			{Cwd: "/", Link: true, Inputs: []string{lib}},
		} {
			got := linkedObjects(&inv, byHash)
			sort.Strings(got)
			if !reflect.DeepEqual(got, objs) {
				t.Errorf("ar %s, link %+v: objects %v, want %v", flags, inv, got, objs)
			}
		}
	}
}

func TestReadDeps(t *testing.T) {
	dir := t.TempDir()
	d := filepath.Join(dir, "x.d")
	os.WriteFile(d, []byte("obj/x.o: src/x.c /usr/include/stdio.h \\\n  inc/my\\ file.h ../up.h\ninc/my\\ file.h:\n"), 0o644)
	got := readDeps(d, "/w/b")
	want := []string{"/w/b/src/x.c", "/usr/include/stdio.h", "/w/b/inc/my file.h", "/w/up.h"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("deps %q, want %q", got, want)
	}
}

// TestDebugFileForStrippedTarget finds the separate debug file of a
// stripped target by its build-id, as the -dbgsym packages install it.
func TestDebugFileForStrippedTarget(t *testing.T) {
	testenv.NeedGCC(t)
	dir := t.TempDir()
	c := filepath.Join(dir, "p.c")
	os.WriteFile(c, []byte("int main(void) { return 0; }\n"), 0o644)
	full := testenv.CC(t, filepath.Join(dir, "full"), "-g", c)
	stripped := filepath.Join(dir, "stripped")
	if out, err := exec.Command("strip", "-o", stripped, full).CombinedOutput(); err != nil {
		t.Fatalf("strip: %v\n%s", err, out)
	}
	info, err := readELFInfo(stripped)
	if err != nil || info.symtab {
		t.Fatalf("stripped file: %v, symtab %v", err, info.symtab)
	}
	id := hex.EncodeToString(info.buildID)
	saved := debugRoot
	debugRoot = filepath.Join(dir, "debug", ".build-id")
	defer func() { debugRoot = saved }()
	d := &driver{work: dir}
	tgt := &targetInfo{path: stripped, elfInfo: info}
	if got := d.symbolsFor(tgt); got != "" {
		t.Fatalf("symbols %s found before any debug file is installed", got)
	}
	dbg := filepath.Join(debugRoot, id[:2], id[2:]+".debug")
	os.MkdirAll(filepath.Dir(dbg), 0o755)
	if out, err := exec.Command("objcopy", "--only-keep-debug", full, dbg).CombinedOutput(); err != nil {
		t.Fatalf("objcopy: %v\n%s", err, out)
	}
	if got := d.symbolsFor(tgt); got != dbg {
		t.Fatalf("symbols from %q, want the debug file %s", got, dbg)
	}
}
