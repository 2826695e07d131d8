package buildtree_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"hotfleet/internal/buildtree"
	"hotfleet/internal/livepatch"
	"hotfleet/internal/livepatch/lptest"
	"hotfleet/internal/testenv"
)

// TestMain lets the test binary be the compiler wrapper, as the hotfleet
// binary is for a real build: started under a compiler's name it wraps.
func TestMain(m *testing.M) {
	if buildtree.IsWrapperName(filepath.Base(os.Args[0])) {
		os.Exit(buildtree.WrapMain(os.Args))
	}
	os.Exit(m.Run())
}

// project copies a test project from testdata into a temporary source tree
// and builds it there with buildCmd, as the shipped binaries were built.
func project(t *testing.T, buildCmd string, dirs ...string) string {
	t.Helper()
	testenv.NeedGCC(t)
	needTools(t, "make", "patch", "diff", "ar", "strip")
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		out, err := exec.Command("sh", "-c", `cp -a "$0"/. "$1"/`, filepath.Join("testdata", d), src).CombinedOutput()
		if err != nil {
			t.Fatalf("copy testdata/%s: %v\n%s", d, err, out)
		}
	}
	if buildCmd != "" {
		cmd := exec.Command("sh", "-c", buildCmd)
		cmd.Dir = src
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build the shipped binaries (%s): %v\n%s", buildCmd, err, out)
		}
	}
	return src
}

// needTools needs programs in PATH: the test is skipped without them,
// failed in CI.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if testenv.InCI() {
				t.Fatalf("CI=true but %s is not installed", tool)
			}
			t.Skipf("the test needs %s", tool)
		}
	}
}

// makeFix writes a unified diff (-p1, like git's) that applies edits to
// files of src: each edit maps a file to a function of its old text.
func makeFix(t *testing.T, src string, edits map[string]func(string) string) string {
	t.Helper()
	dir := t.TempDir()
	for name, edit := range edits {
		old, err := os.ReadFile(filepath.Join(src, name))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		for side, text := range map[string]string{"a": string(old), "b": edit(string(old))} {
			if side == "a" && os.IsNotExist(err) {
				continue
			}
			p := filepath.Join(dir, side, name)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		os.MkdirAll(filepath.Join(dir, "a"), 0o755)
	}
	cmd := exec.Command("diff", "-ruN", "a", "b")
	cmd.Dir = dir
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); err != nil && (!ok || ee.ExitCode() != 1) {
		t.Fatalf("diff: %v", err)
	}
	fix := filepath.Join(dir, "fix.diff")
	if err := os.WriteFile(fix, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return fix
}

func replace(old, new string) func(string) string {
	return func(s string) string {
		if !strings.Contains(s, old) {
			panic("test fix: no " + old)
		}
		return strings.Replace(s, old, new, 1)
	}
}

// treeSum hashes every file name, mode, mtime and content under dir, to
// prove a build left the user's tree alone.
func treeSum(t *testing.T, dir string) [32]byte {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		st, err := os.Lstat(p)
		if err != nil {
			return err
		}
		h.Write([]byte(p + st.Mode().String() + st.ModTime().String()))
		if st.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// bothFix changes the static helper of the library and the static helpers
// of the same name in two files of the executable, and a function of the
// executable that returns __FILE__.
func bothFix(t *testing.T, src string) string {
	return makeFix(t, src, map[string]func(string) string{
		"lib/foo.c": replace("r += 1;", "r += 2;"),
		"app/main.c": func(s string) string {
			return replace(`"no file"`, `"no file at all"`)(replace("r += 2;", "r += 3;")(s))
		},
		"app/util.c": replace("r += 5;", "r += 7;"),
	})
}

// bothBefore and bothAfter are the answers of prog before and after bothFix;
// "file" must not change: the new code's __FILE__ is the user's tree's.
var (
	bothBefore = map[string]string{"lib": "10", "app": "1002", "util": "505"}
	bothAfter  = map[string]string{"lib": "20", "app": "1003", "util": "507"}
)

// checkBoth checks the modules bothFix gives.
func checkBoth(t *testing.T, res *buildtree.Result) {
	t.Helper()
	if len(res.Bundle.Modules) != 2 || len(res.Modules) != 2 {
		t.Fatalf("bundle has %d modules, want 2 (prog and libfoo.so.1)", len(res.Bundle.Modules))
	}
	want := []struct{ sources, changed string }{
		{"app/main.c app/util.c", "helper(main.c) helper(util.c) where_file()"},
		{"lib/foo.c", "helper(foo.c)"},
	}
	for i, w := range want {
		m := res.Modules[i]
		var srcs, changed []string
		for _, u := range m.Units {
			srcs = append(srcs, u.Source)
		}
		for _, c := range m.Result.Changed {
			changed = append(changed, c.Name+"("+c.File+")")
		}
		sort.Strings(srcs)
		sort.Strings(changed)
		if strings.Join(srcs, " ") != w.sources || strings.Join(changed, " ") != w.changed {
			t.Errorf("module %s: built from %v changing %v, want %s changing %s", m.Target, srcs, changed, w.sources, w.changed)
		}
	}
}

// withFile adds the answer of "file", which no fix may change.
func withFile(t *testing.T, p string, m map[string]string) map[string]string {
	t.Helper()
	out := map[string]string{"file": p}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func opts(src, fix string, targets ...string) buildtree.Options {
	return buildtree.Options{Source: src, Fix: fix, Targets: targets, ID: "fix-test", Level: 1}
}

func changedNames(m buildtree.Module) []string {
	var out []string
	for _, c := range m.Result.Changed {
		out = append(out, c.Name)
	}
	return out
}

// applyAndCheck applies the bundle to a running prog, checks each command's
// answer before, after and after the revert.
func applyAndCheck(t *testing.T, prog string, res *buildtree.Result, before, after map[string]string) {
	t.Helper()
	testenv.NeedRoot(t)
	p := lptest.Start(t, prog)
	for cmd, want := range before {
		p.Expect(cmd, want)
	}
	ctx := context.Background()
	if _, err := livepatch.Apply(ctx, p.Pid, res.Bundle, livepatch.Options{}); err != nil {
		t.Fatalf("apply: %v", err)
	}
	for cmd, want := range after {
		p.Expect(cmd, want)
	}
	if _, err := livepatch.Revert(ctx, p.Pid, res.Bundle.ID, livepatch.Options{}); err != nil {
		t.Fatalf("revert: %v", err)
	}
	for cmd, want := range before {
		p.Expect(cmd, want)
	}
}

func TestLibraryAndExecutableInOneBundle(t *testing.T) {
	testenv.NeedRoot(t)
	src := project(t, "make", "src", "mk")
	fix := bothFix(t, src)
	sum := treeSum(t, src)
	prog, lib := filepath.Join(src, "prog"), filepath.Join(src, "libfoo.so.1")
	res, err := buildtree.Build(context.Background(), opts(src, fix, prog, lib))
	if err != nil {
		t.Fatal(err)
	}
	if treeSum(t, src) != sum {
		t.Fatal("the build changed the source tree")
	}
	checkBoth(t, res)
	applyAndCheck(t, prog, res, withFile(t, "app/main.c", bothBefore), withFile(t, "app/main.c", bothAfter))
}

func TestLineShiftIsNoChange(t *testing.T) {
	testenv.NeedRoot(t)
	src := project(t, "make", "src", "mk")
	fix := makeFix(t, src, map[string]func(string) string{
		"app/main.c": replace("\treturn helper(x) + 1000;", "\t/* A fix that adds lines\n\t * above other functions. */\n\tif (x < 0)\n\t\treturn 0;\n\treturn helper(x) + 2000;"),
	})
	prog := filepath.Join(src, "prog")
	res, err := buildtree.Build(context.Background(), opts(src, fix, prog))
	if err != nil {
		t.Fatal(err)
	}
	if got := changedNames(res.Modules[0]); len(got) != 1 || got[0] != "app_value" {
		t.Fatalf("changed functions %v, want only [app_value]: a __LINE__ shift counted as a change", got)
	}
	out, err := exec.Command("grep", "-n", "return __LINE__", filepath.Join(src, "app/main.c")).Output()
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(out), ":")
	applyAndCheck(t, prog, res, map[string]string{"app": "1002", "line": line}, map[string]string{"app": "2002", "line": line})
}

// TestHeaderOnlyFix changes a header the Makefile does not list: the
// wrapper's dependency tracking must still rebuild main.o.
func TestHeaderOnlyFix(t *testing.T) {
	testenv.NeedRoot(t)
	src := project(t, "make", "src", "mk")
	fix := makeFix(t, src, map[string]func(string) string{"app/config.h": replace("LIMIT 10", "LIMIT 20")})
	prog := filepath.Join(src, "prog")
	res, err := buildtree.Build(context.Background(), opts(src, fix, prog, filepath.Join(src, "libfoo.so.1")))
	if err != nil {
		t.Fatal(err)
	}
	if got := changedNames(res.Modules[0]); len(got) != 1 || got[0] != "limit" {
		t.Fatalf("changed functions %v, want [limit]", got)
	}
	if len(res.Untouched) != 1 || filepath.Base(res.Untouched[0]) != "libfoo.so.1" {
		t.Errorf("untouched targets %v, want libfoo.so.1", res.Untouched)
	}
	applyAndCheck(t, prog, res, map[string]string{"limit": "10"}, map[string]string{"limit": "20"})
}

func TestRefusals(t *testing.T) {
	src := project(t, "make", "src", "mk")
	prog, lib := filepath.Join(src, "prog"), filepath.Join(src, "libfoo.so.1")
	cases := []struct {
		name     string
		edits    map[string]func(string) string
		buildCmd string
		targets  []string
		want     string
	}{
		{"assembly", map[string]func(string) string{"app/fast.S": replace("$5", "$6")}, "", nil,
			"app/fast.S changed: assembly is not hot-patchable; make the fix in C or ship a restart update"},
		{"build files only", map[string]func(string) string{"Makefile": replace("-O2 -g", "-O2 -g -DX")}, "", nil,
			"changes only build files (Makefile)"},
		{"nothing compiled", map[string]func(string) string{"README": func(string) string { return "notes\n" }}, "", nil,
			"the fix changes nothing compiled"},
		{"file not built", map[string]func(string) string{"app/unused.c": replace("x + 1", "x + 2")}, "", nil,
			"no compile of the build read app/unused.c: check that this configuration builds it"},
		{"new source file", map[string]func(string) string{
			"app/extra.c": func(string) string { return "int extra(void) { return 1; }\n" },
			"Makefile": func(s string) string {
				s = replace("app/util.o: app/util.c", "app/extra.o: app/extra.c\n\t$(CC) $(CFLAGS) -c app/extra.c -o app/extra.o\n\napp/util.o: app/util.c")(s)
				return replace("prog: app/main.o app/fast.o", "prog: app/main.o app/extra.o app/fast.o")(replace("-o $@ app/main.o app/fast.o", "-o $@ app/main.o app/extra.o app/fast.o")(s))
			}}, "", nil,
			"the fix adds the source file app/extra.c (object app/extra.o): a hot patch cannot add a compilation unit"},
		{"comment only", map[string]func(string) string{"lib/foo.c": replace("/* foo.c: libfoo.", "/* foo.c: the libfoo.")}, "", nil,
			"the fix changes nothing compiled"},
		{"LTO", map[string]func(string) string{"lib/foo.c": replace("r += 1;", "r += 2;")}, "make CFLAGS='-O2 -flto'", nil,
			"lib/foo.o is an LTO object"},
		{"no target for a unit", map[string]func(string) string{"lib/foo.c": replace("r += 1;", "r += 2;")}, "", []string{prog},
			"lib/foo.c changed, and it is linked into libfoo.so.1, but no --target is that module; add --target"},
	}
	cases = append(cases, struct {
		name     string
		edits    map[string]func(string) string
		buildCmd string
		targets  []string
		want     string
	}{"compiler not from PATH", map[string]func(string) string{"lib/foo.c": replace("r += 1;", "r += 2;")}, "make CC=" + testenv.NeedGCC(t), nil,
		"compiled nothing through the compiler wrapper: it calls the compiler by an absolute path"})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fix := makeFix(t, src, c.edits)
			o := opts(src, fix, prog, lib)
			if c.targets != nil {
				o.Targets = c.targets
			}
			o.BuildCmd = c.buildCmd
			sum := treeSum(t, src)
			_, err := buildtree.Build(context.Background(), o)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got error %v, want one saying %q", err, c.want)
			}
			if !errors.Is(err, buildtree.ErrNotPatchable) && !errors.Is(err, buildtree.ErrBuildFailed) {
				t.Errorf("error %v is neither ErrNotPatchable nor ErrBuildFailed", err)
			}
			if treeSum(t, src) != sum {
				t.Fatal("the refused build changed the source tree")
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	src := project(t, "make", "src", "mk")
	prog := filepath.Join(src, "prog")
	good := bothFix(t, src)
	fixedTree, appliedFix := alreadyApplied(t, src)
	notApplying := makeFix(t, src, map[string]func(string) string{"lib/foo.c": replace("r += 1;", "r += 2;")})
	// Make the diff's context wrong: it no longer matches the tree.
	b, _ := os.ReadFile(notApplying)
	os.WriteFile(notApplying, []byte(strings.Replace(string(b), "for (int i = 0; i < x; i++)", "for (int j = 0; j < x; j++)", 1)), 0o644)
	cases := []struct {
		name string
		o    buildtree.Options
		want string
	}{
		{"missing source", opts(filepath.Join(src, "nope"), good, prog), "source tree " + filepath.Join(src, "nope")},
		{"fix does not apply", opts(src, notApplying, prog), "does not apply to " + src},
		{"missing fix", opts(src, filepath.Join(src, "nope.diff"), prog), "nope.diff"},
		{"fix already applied", opts(fixedTree, appliedFix, prog), "the tree seems to contain the fix already"},
		{"target without build-id", opts(src, good, noBuildID(t)), "has no GNU build-id"},
		{"bad CVE id", func() buildtree.Options { o := opts(src, good, prog); o.CVEs = []string{"CVE-12"}; return o }(), `"CVE-12" is not a CVE id`},
		{"bad patch id", func() buildtree.Options { o := opts(src, good, prog); o.ID = "fix one"; return o }(), `patch id "fix one" must be`},
		{"target not ELF", opts(src, good, filepath.Join(src, "Makefile")), "target " + filepath.Join(src, "Makefile")},
		{"no build system", buildtree.Options{Source: t.TempDir(), Fix: makeFix(t, t.TempDir(), map[string]func(string) string{"x.c": func(string) string { return "int x;\n" }}), Targets: []string{prog}, ID: "x", Level: 1},
			"give the command that builds it with --build-cmd"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			work := filepath.Join(t.TempDir(), "work")
			c.o.Work = work
			sum := treeSum(t, src)
			_, err := buildtree.Build(context.Background(), c.o)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got error %v, want one saying %q", err, c.want)
			}
			if !errors.Is(err, buildtree.ErrBadInput) {
				t.Errorf("error %v is not ErrBadInput", err)
			}
			if _, err := os.Stat(work); !os.IsNotExist(err) {
				t.Errorf("bad input created the work directory %s", work)
			}
			if treeSum(t, src) != sum {
				t.Fatal("bad input changed the source tree")
			}
		})
	}
	t.Run("failing hunk is named", func(t *testing.T) {
		_, err := buildtree.Build(context.Background(), opts(src, notApplying, prog))
		if err == nil || !strings.Contains(err.Error(), "Hunk #1 FAILED") || !strings.Contains(err.Error(), "lib/foo.c") {
			t.Fatalf("got %v, want the failing hunk of lib/foo.c named", err)
		}
	})
}

// alreadyApplied returns a copy of src that has the fix, and the fix.
func alreadyApplied(t *testing.T, src string) (string, string) {
	t.Helper()
	fixed := filepath.Join(t.TempDir(), "src")
	fix := makeFix(t, src, map[string]func(string) string{"lib/foo.c": replace("r += 1;", "r += 2;")})
	if out, err := exec.Command("sh", "-c", `cp -a "$0" "$1" && patch -s -d "$1" -p1 -i "$2"`, src, fixed, fix).CombinedOutput(); err != nil {
		t.Fatalf("make a fixed tree: %v\n%s", err, out)
	}
	return fixed, fix
}

func noBuildID(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	c := filepath.Join(dir, "noid.c")
	os.WriteFile(c, []byte("int main(void) { return 0; }\n"), 0o644)
	return testenv.CC(t, filepath.Join(dir, "noid"), "-Wl,--build-id=none", c)
}

// TestBuildSystems builds the same sources with cmake and with meson.
func TestBuildSystems(t *testing.T) {
	cases := []struct {
		name, dir, userBuild, out string
		tools                     []string
		file                      string // __FILE__ of app/main.c; empty: its absolute path in the user's tree
	}{
		{"cmake", "cmake", "cmake -S . -B out >/dev/null && cmake --build out >/dev/null", "out", []string{"cmake"}, ""},
		{"meson", "meson", "meson setup out >/dev/null && ninja -C out >/dev/null", "out", []string{"meson", "ninja"}, "../app/main.c"},
		// Configured in the source tree: its Makefiles name the tree by
		// absolute path, so the copy must be configured anew.
		{"cmake in place", "cmake", "cmake . >/dev/null && make >/dev/null", ".", []string{"cmake"}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			testenv.NeedRoot(t)
			needTools(t, c.tools...)
			src := project(t, c.userBuild, "src", c.dir)
			fix := bothFix(t, src)
			prog, lib := filepath.Join(src, c.out, "prog"), filepath.Join(src, c.out, "libfoo.so.1")
			sum := treeSum(t, src)
			res, err := buildtree.Build(context.Background(), opts(src, fix, prog, lib))
			if err != nil {
				t.Fatal(err)
			}
			if treeSum(t, src) != sum {
				t.Fatal("the build changed the source tree")
			}
			checkBoth(t, res)
			file := c.file
			if file == "" {
				file = filepath.Join(src, "app/main.c")
			}
			applyAndCheck(t, prog, res, withFile(t, file, bothBefore), withFile(t, file, bothAfter))
		})
	}
}

// TestStrippedTargets patches installed, stripped copies of the binaries:
// the rebuilt original, with the same build-id, stands in for their symbols.
// A build without the section flags cannot be reproduced by the wrapped
// build, and is refused with both build-ids named.
func TestStrippedTargets(t *testing.T) {
	const flags = "make CFLAGS='-O2 -g -ffunction-sections -fdata-sections'"
	for _, c := range []struct {
		name, userBuild string
		want            string // the refusal; empty: it builds
	}{
		{"reproducible", flags, ""},
		{"not reproducible", "make", "is stripped and no unstripped file has its build-id"},
	} {
		t.Run(c.name, func(t *testing.T) {
			testenv.NeedRoot(t)
			src := project(t, c.userBuild, "src", "mk")
			inst := t.TempDir()
			for _, f := range []string{"prog", "libfoo.so.1"} {
				if out, err := exec.Command("strip", "-o", filepath.Join(inst, f), filepath.Join(src, f)).CombinedOutput(); err != nil {
					t.Fatalf("strip %s: %v\n%s", f, err, out)
				}
			}
			prog, lib := filepath.Join(inst, "prog"), filepath.Join(inst, "libfoo.so.1")
			o := opts(src, bothFix(t, src), prog, lib)
			o.BuildCmd = flags
			res, err := buildtree.Build(context.Background(), o)
			if c.want != "" {
				if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, buildtree.ErrNotPatchable) {
					t.Fatalf("got %v, want a refusal saying %q", err, c.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkBoth(t, res)
			for _, m := range res.Modules {
				if m.Symbols == "" {
					t.Errorf("module %s: no symbols file recorded for the stripped target", m.Target)
				}
			}
			applyAndCheck(t, prog, res, withFile(t, "app/main.c", bothBefore), withFile(t, "app/main.c", bothAfter))
		})
	}
}

// TestConfigureProject builds a tree with a configure script and no
// Makefile (detected: ./configure && make, then make), whose Makefile
// tracks header dependencies the way automake does, renaming its .d files.
// The shipped binaries were built in another copy of the tree; the build
// runs in parallel.
func TestConfigureProject(t *testing.T) {
	testenv.NeedRoot(t)
	src := project(t, "", "src", "autoconf")
	shipped := filepath.Join(t.TempDir(), "shipped")
	if out, err := exec.Command("sh", "-c", `cp -a "$0" "$1" && cd "$1" && ./configure && make`, src, shipped).CombinedOutput(); err != nil {
		t.Fatalf("build the shipped binaries: %v\n%s", err, out)
	}
	fix := makeFix(t, src, map[string]func(string) string{
		"app/config.h": replace("LIMIT 10", "LIMIT 30"),
		"lib/foo.c":    replace("r += 1;", "r += 2;"),
	})
	prog, lib := filepath.Join(shipped, "prog"), filepath.Join(shipped, "libfoo.so.1")
	res, err := buildtree.Build(context.Background(), opts(src, fix, prog, lib))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Modules) != 2 {
		t.Fatalf("%d modules, want prog and libfoo.so.1", len(res.Modules))
	}
	if got := changedNames(res.Modules[0]); len(got) != 1 || got[0] != "limit" {
		t.Errorf("prog: changed functions %v, want [limit]", got)
	}
	if u := res.Modules[1].Units; len(u) != 1 || !strings.HasSuffix(u[0].Patched, "lib/.libs/foo.o") {
		t.Errorf("libfoo.so.1 built from %+v, want only the position-independent lib/.libs/foo.o", u)
	}
	if !strings.Contains(strings.Join(res.Notes, "\n"), "the second object lib/foo.o is in no linked module") {
		t.Errorf("notes %q do not explain the static library's copy of lib/foo.c", res.Notes)
	}
	applyAndCheck(t, prog, res, map[string]string{"limit": "10", "lib": "10"}, map[string]string{"limit": "30", "lib": "20"})
}

// TestBuildFailure shows the failing command and its last lines, and keeps
// the work directory it was given.
func TestBuildFailure(t *testing.T) {
	src := project(t, "make", "src", "mk")
	fix := makeFix(t, src, map[string]func(string) string{"app/main.c": replace("return LIMIT;", "return LIMIT +;")})
	o := opts(src, fix, filepath.Join(src, "prog"))
	o.Work = filepath.Join(t.TempDir(), "work")
	o.BuildCmd = "make -j2"
	_, err := buildtree.Build(context.Background(), o)
	for _, want := range []string{"the fixed build (make -j2, in a copy of " + src + ") failed", "app/main.c:", "expected expression", "work directory kept: " + o.Work} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("got %v, want an error saying %q", err, want)
		}
	}
	if !errors.Is(err, buildtree.ErrBuildFailed) {
		t.Errorf("%v is not ErrBuildFailed", err)
	}
	if _, err := os.Stat(filepath.Join(o.Work, "logs", "build-fixed.out")); err != nil {
		t.Errorf("the build's output is not kept: %v", err)
	}
}

// TestInlinedCallee changes a static inline function: the caller it is
// inlined into is what the bundle replaces, and the summary says why.
func TestInlinedCallee(t *testing.T) {
	testenv.NeedRoot(t)
	src := project(t, "make", "src", "mk")
	fix := makeFix(t, src, map[string]func(string) string{"app/main.c": replace("r += 4;", "r += 5;")})
	prog := filepath.Join(src, "prog")
	res, err := buildtree.Build(context.Background(), opts(src, fix, prog))
	if err != nil {
		t.Fatal(err)
	}
	if got := changedNames(res.Modules[0]); len(got) != 1 || got[0] != "scaled" {
		t.Fatalf("changed functions %v, want [scaled]", got)
	}
	var text strings.Builder
	buildtree.Summarize(res, "fix.hfp", 1).WriteText(&text)
	// The builder names the changed callee inlined into scaled. (Whether it
	// also counts scaled as changed *only* through inlining depends on the
	// line rows gcc gives the folded loop, so that is not asserted.)
	if !strings.Contains(text.String(), "scaled at ") || !strings.Contains(text.String(), "holds inlined scale") {
		t.Errorf("the summary does not name the inlined callee:\n%s", text.String())
	}
	applyAndCheck(t, prog, res, map[string]string{"scaled": "11"}, map[string]string{"scaled": "12"})
}

// TestCXXProject builds a C++ program through the c++ wrapper: a changed
// member function of a class template is patched by its mangled name.
func TestCXXProject(t *testing.T) {
	testenv.NeedRoot(t)
	src := project(t, "make", "cxx")
	fix := makeFix(t, src, map[string]func(string) string{"main.cc": replace("t += cents;", "t += cents + 1;")})
	prog := filepath.Join(src, "prog")
	res, err := buildtree.Build(context.Background(), opts(src, fix, prog))
	if err != nil {
		t.Fatal(err)
	}
	if got := changedNames(res.Modules[0]); len(got) != 1 || got[0] != "_ZNK4shop5PriceIlE5totalEi" {
		t.Fatalf("changed functions %v, want [_ZNK4shop5PriceIlE5totalEi] (shop::Price<long>::total)", got)
	}
	applyAndCheck(t, prog, res, map[string]string{"price": "500"}, map[string]string{"price": "502"})
}

// TestInstalledUnderAnotherName patches copies installed under other names
// (as /usr/bin/lua5.4 is built as src/lua): the executable is recognised by
// its symbols, the library by its soname.
func TestInstalledUnderAnotherName(t *testing.T) {
	testenv.NeedRoot(t)
	src := project(t, "make", "src", "mk")
	inst := t.TempDir()
	prog, lib := filepath.Join(inst, "myprog"), filepath.Join(inst, "libfoo.so.1.0.0")
	if out, err := exec.Command("sh", "-c", `cp "$0/prog" "$1" && cp "$0/libfoo.so.1" "$2" && ln -s libfoo.so.1.0.0 "$3/libfoo.so.1"`, src, prog, lib, inst).CombinedOutput(); err != nil {
		t.Fatalf("install: %v\n%s", err, out)
	}
	res, err := buildtree.Build(context.Background(), opts(src, bothFix(t, src), prog, lib))
	if err != nil {
		t.Fatal(err)
	}
	checkBoth(t, res)
	if !strings.Contains(strings.Join(res.Notes, "\n"), "placed in "+prog+" by its symbols") {
		t.Errorf("notes %q do not say how myprog was recognised", res.Notes)
	}
	applyAndCheck(t, prog, res, withFile(t, "app/main.c", bothBefore), withFile(t, "app/main.c", bothAfter))
}
