package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"hotfleet/internal/buildtree"
	"hotfleet/internal/livepatch/lptest"
	"hotfleet/internal/testenv"
)

// TestMain lets the test binary act as the compiler wrapper, as the
// hotfleet binary does in a real build from source.
func TestMain(m *testing.M) {
	if wrapMode(os.Args[0]) {
		os.Exit(buildtree.WrapMain(os.Args))
	}
	os.Exit(m.Run())
}

const buildtreeTestdata = "../../internal/buildtree/testdata"

// sourceProject copies the make-based test project (a library and an
// executable using it) and builds it as the shipped binaries were built.
func sourceProject(t *testing.T) string {
	t.Helper()
	testenv.NeedGCC(t)
	for _, tool := range []string{"make", "patch", "diff"} {
		if _, err := exec.LookPath(tool); err != nil {
			if testenv.InCI() {
				t.Fatalf("CI=true but %s is not installed", tool)
			}
			t.Skipf("the test needs %s", tool)
		}
	}
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	for _, d := range []string{"src", "mk"} {
		if out, err := exec.Command("sh", "-c", `cp -a "$0"/. "$1"/`, filepath.Join(buildtreeTestdata, d), src).CombinedOutput(); err != nil {
			t.Fatalf("copy %s: %v\n%s", d, err, out)
		}
	}
	cmd := exec.Command("make")
	cmd.Dir = src
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make: %v\n%s", err, out)
	}
	return src
}

// sourceFix writes a -p1 diff changing the static helper of both the
// library and the executable.
func sourceFix(t *testing.T, src string) string {
	t.Helper()
	dir := t.TempDir()
	for _, f := range []struct{ name, old, new string }{
		{"lib/foo.c", "r += 1;", "r += 2;"},
		{"app/main.c", "r += 2;", "r += 3;"},
	} {
		b, err := os.ReadFile(filepath.Join(src, f.name))
		if err != nil {
			t.Fatal(err)
		}
		for side, text := range map[string]string{"a": string(b), "b": strings.Replace(string(b), f.old, f.new, 1)} {
			p := filepath.Join(dir, side, f.name)
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.WriteFile(p, []byte(text), 0o644)
		}
	}
	cmd := exec.Command("diff", "-ruN", "a", "b")
	cmd.Dir = dir
	out, _ := cmd.Output()
	fix := filepath.Join(dir, "fix.diff")
	os.WriteFile(fix, out, 0o644)
	return fix
}

func TestPatchBuildFromSource(t *testing.T) {
	testenv.NeedRoot(t)
	src := sourceProject(t)
	fix := sourceFix(t, src)
	prog, lib := filepath.Join(src, "prog"), filepath.Join(src, "libfoo.so.1")
	bundlePath := filepath.Join(t.TempDir(), "fix-helper.hfp")
	out, err := hotfleetRun(t, "patch", "build", "--source", src, "--fix", fix, "--target", prog, "--target", lib,
		"--cve", "CVE-2026-0001", "--json", "-o", bundlePath)
	if err != nil {
		t.Fatalf("patch build --source: %v\n%s", err, out)
	}
	var sum buildtree.Summary
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		t.Fatalf("--json printed %q: %v", out, err)
	}
	if sum.ID != "fix-helper" || len(sum.Modules) != 2 || sum.BundleBytes == 0 {
		t.Fatalf("summary %+v: want patch fix-helper with 2 modules", sum)
	}
	for _, m := range sum.Modules {
		if len(m.Changed) != 1 || m.Changed[0].Name != "helper" || m.Percent <= 0 {
			t.Errorf("module %s: changed %+v, %.3f%% of the target; want helper", m.Target, m.Changed, m.Percent)
		}
	}
	st, err := os.Stat(bundlePath)
	if err != nil || int(st.Size()) != sum.BundleBytes {
		t.Fatalf("bundle file: %v, size %v, summary says %d", err, st, sum.BundleBytes)
	}

	p := lptest.Start(t, prog)
	p.Expect("lib", "10")
	p.Expect("app", "1002")
	if out, err := hotfleetRun(t, "patch", "apply", bundlePath, "--pid", strconv.Itoa(p.Pid)); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	p.Expect("lib", "20")
	p.Expect("app", "1003")
	if out, err := hotfleetRun(t, "patch", "revert", "fix-helper", "--pid", strconv.Itoa(p.Pid)); err != nil {
		t.Fatalf("revert: %v\n%s", err, out)
	}
	p.Expect("lib", "10")
	p.Expect("app", "1002")

	// The text summary names both modules and the size against each target.
	out, err = hotfleetRun(t, "patch", "build", "--source", src, "--fix", fix, "--target", prog, "--target", lib, "-o", bundlePath)
	if err != nil {
		t.Fatalf("patch build --source: %v\n%s", err, out)
	}
	for _, want := range []string{"module " + prog, "module " + lib, "helper (static, main.c)", "helper (static, foo.c)", "% of prog", "% of libfoo.so.1", "wrote " + bundlePath} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
}

func TestPatchBuildFromSourceUsage(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--source", dir, "--target", "x", "-o", "x.hfp"}, "needs --source DIR --fix FIX.diff"},
		{[]string{"--source", dir, "--fix", "f.diff", "-o", "x.hfp"}, "needs --source DIR --fix FIX.diff"},
		{[]string{"--source", dir, "--fix", "f.diff", "--target", "x", "--orig", "a.o", "-o", "x.hfp"}, "not both"},
		{[]string{"--target", "a", "--target", "b", "--orig", "a.o", "--patched", "b.o", "-o", "x.hfp"}, "several --target need --source"},
		{[]string{"--target", "a", "--orig", "a.o", "--patched", "b.o", "--json", "-o", "x.hfp"}, "--json is for builds from source"},
		{[]string{"--source", dir, "--fix", "f.diff", "--target", "x", "-o", filepath.Join(dir, "no", "x.hfp")}, "-o " + filepath.Join(dir, "no", "x.hfp")},
	}
	for _, c := range cases {
		_, err := hotfleetRun(t, append([]string{"patch", "build"}, c.args...)...)
		if err == nil || !errors.Is(err, errUsage) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("patch build %q: got %v, want a usage error saying %q", c.args, err, c.want)
		}
	}
}

// TestHotfleetBinaryIsTheWrapper builds the real hotfleet binary: run as
// itself it builds from source, and under a compiler's name (a link called
// cc) it is a compiler that passes through when no build is logging.
func TestHotfleetBinaryIsTheWrapper(t *testing.T) {
	testenv.NeedGCC(t)
	dir := t.TempDir()
	bin, err := testenv.BuildHotfleet(dir)
	if err != nil {
		t.Fatal(err)
	}

	cc := filepath.Join(dir, "cc")
	if err := os.Symlink(bin, cc); err != nil {
		t.Fatal(err)
	}
	c := filepath.Join(dir, "x.c")
	os.WriteFile(c, []byte("int main(void) { return 7; }\n"), 0o644)
	run := exec.Command(cc, "-o", filepath.Join(dir, "x"), c)
	run.Env = append(os.Environ(), "HOTFLEET_WRAP_LOG=")
	if out, err := run.CombinedOutput(); err != nil {
		t.Fatalf("hotfleet as cc: %v\n%s", err, out)
	}
	if err := exec.Command(filepath.Join(dir, "x")).Run(); err == nil || err.(*exec.ExitError).ExitCode() != 7 {
		t.Fatalf("the program compiled through hotfleet as cc exits %v, want status 7", err)
	}

	src := sourceProject(t)
	fix := sourceFix(t, src)
	out := filepath.Join(dir, "fix.hfp")
	cmd := exec.Command(bin, "patch", "build", "--source", src, "--fix", fix, "--target", filepath.Join(src, "prog"),
		"--target", filepath.Join(src, "libfoo.so.1"), "-o", out)
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("hotfleet patch build --source: %v\n%s", err, stdout)
	}
	if !strings.Contains(string(stdout), "patch fix level 1: 2 module(s)") || !strings.Contains(string(stdout), "wrote "+out) {
		t.Fatalf("hotfleet patch build --source printed:\n%s", stdout)
	}
}

// TestPatchBuildObjectForm keeps the form with two objects working next to
// the source form.
func TestPatchBuildObjectForm(t *testing.T) {
	testenv.NeedGCC(t)
	bin := testenv.CC(t, "target", "-O0", "-pthread", targetSrc)
	orig := testenv.CC(t, "orig.o", "-O0", "-ffunction-sections", "-fdata-sections", "-c", targetSrc)
	fixed := testenv.CC(t, "fixed.o", "-O0", "-ffunction-sections", "-fdata-sections", "-DVARIANT=2", "-c", targetSrc)
	out := filepath.Join(t.TempDir(), "answer.hfp")
	stdout, err := hotfleetRun(t, "patch", "build", "--target", bin, "--orig", orig, "--patched", fixed, "-o", out)
	if err != nil {
		t.Fatalf("patch build --orig --patched: %v\n%s", err, stdout)
	}
	if !strings.Contains(stdout, "changed functions (1):\n  answer at") || !strings.Contains(stdout, "wrote "+out) {
		t.Fatalf("patch build --orig --patched printed:\n%s", stdout)
	}
}
