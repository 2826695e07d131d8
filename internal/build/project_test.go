package build

import (
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"hotfleet/internal/livepatch"
	"hotfleet/internal/livepatch/lptest"
	"hotfleet/internal/testenv"
)

// project is a small program under testdata/DIR, built as the shipped
// binary (driver.c plus the files), with the objects of each file compiled
// again, original and fixed, as a patch author would.
type project struct {
	dir    string // testdata subdirectory
	work   string
	cc     string   // compiler driver: gcc or g++
	cflags []string // as the target was built
	target string
}

func newProject(t *testing.T, dir string, cflags []string, files ...string) *project {
	t.Helper()
	testenv.NeedGCC(t)
	p := &project{dir: dir, work: t.TempDir(), cc: "gcc", cflags: cflags}
	for _, f := range files {
		if strings.HasSuffix(f, ".cc") {
			p.cc = "g++"
		}
	}
	args := append([]string{}, cflags...)
	args = append(args, "-Wl,--build-id")
	if p.cc == "g++" {
		args = append(args, "-x", "c", abs(t, "driver.c"), "-x", "none")
	} else {
		args = append(args, abs(t, "driver.c"))
	}
	for _, f := range files {
		args = append(args, abs(t, filepath.Join(dir, f)))
	}
	if p.cc == "g++" {
		args = append(args, "-lstdc++") // g++ leaves it out when the first file is C
	}
	p.target = p.compile(t, "target", args...)
	return p
}

// compile runs the project's compiler driver with args into out.
func (p *project) compile(t *testing.T, out string, args ...string) string {
	t.Helper()
	if p.cc == "gcc" {
		return testenv.CC(t, filepath.Join(p.work, out), args...)
	}
	path := filepath.Join(p.work, out)
	cmd := exec.Command("g++", append(args, "-o", path)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("g++ %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return path
}

// object compiles one file of the project with the target's flags (or
// others), plus extra flags such as -DFIX.
func (p *project) object(t *testing.T, file, out string, flags []string, extra ...string) string {
	t.Helper()
	if flags == nil {
		flags = p.cflags
	}
	args := append(append([]string{}, flags...), "-ffunction-sections", "-fdata-sections")
	args = append(args, extra...)
	args = append(args, "-c", abs(t, filepath.Join(p.dir, file)))
	return p.compile(t, out, args...)
}

// unit is file compiled as shipped and with -DFIX (plus extra flags).
func (p *project) unit(t *testing.T, file string, extra ...string) Unit {
	t.Helper()
	base := strings.ReplaceAll(strings.TrimSuffix(file, filepath.Ext(file)), "/", "_")
	return Unit{
		Orig:    p.object(t, file, base+".orig.o", nil),
		Patched: p.object(t, file, base+".fixed.o", nil, append([]string{"-DFIX"}, extra...)...),
		Source:  file,
	}
}

func (p *project) build(t *testing.T, units ...Unit) (*Result, error) {
	t.Helper()
	return Build(context.Background(), Options{Target: p.target, Units: units, ID: "hf-" + strings.ReplaceAll(p.dir, "/", "-"), Level: 1})
}

// run starts bin (default: the target) as a running process.
func (p *project) run(t *testing.T, bin string) *lptest.Target {
	t.Helper()
	if bin == "" {
		bin = p.target
	}
	return lptest.Start(t, bin)
}

// applyAndCheck patches the running process proc with res's bundle and
// checks that each function returns what the fix says, then reverts and
// checks the old answers again.
func applyAndCheck(t *testing.T, proc *lptest.Target, res *Result, before, after map[string]string) {
	t.Helper()
	testenv.NeedRoot(t)
	for fn, want := range before {
		proc.Expect(fn, want)
	}
	ctx := context.Background()
	if _, err := livepatch.Apply(ctx, proc.Pid, res.Bundle, livepatch.Options{}); err != nil {
		t.Fatalf("apply %s to pid %d: %v", res.Bundle.ID, proc.Pid, err)
	}
	for fn, want := range after {
		proc.Expect(fn, want)
	}
	if _, err := livepatch.Revert(ctx, proc.Pid, res.Bundle.ID, livepatch.Options{}); err != nil {
		t.Fatalf("revert %s in pid %d: %v", res.Bundle.ID, proc.Pid, err)
	}
	for fn, want := range before {
		proc.Expect(fn, want)
	}
}

func changedSet(res *Result) string {
	var n []string
	for _, c := range res.Changed {
		n = append(n, c.Name)
	}
	return strings.Join(n, ",")
}

// TestSeveralFiles patches a fix spanning two files: both have a static
// helper of the same name, both change, and changed code in b.c calls a
// function new in a.c.
func TestSeveralFiles(t *testing.T) {
	for _, cfg := range []struct {
		name   string
		cflags []string
	}{
		{"pie", []string{"-O2", "-fPIE", "-pie"}},
		{"nopie-cet", []string{"-O2", "-fno-pie", "-no-pie", "-fcf-protection"}},
	} {
		t.Run(cfg.name, func(t *testing.T) {
			p := newProject(t, "multi", cfg.cflags, "a.c", "b.c", "entries.c")
			res, err := p.build(t, p.unit(t, "a.c"), p.unit(t, "b.c"))
			if err != nil {
				t.Fatal(err)
			}
			syms := targetSymbols(t, p.target)
			files := map[uint64]string{}
			for _, c := range res.Changed {
				if c.Name != "helper" && c.Name != "b_value" {
					t.Errorf("changed %s; want only the two helpers and b_value", c.Name)
				}
				if c.Name == "helper" {
					files[c.Site] = filepath.Base(c.File)
				}
			}
			for _, f := range []string{"a.c", "b.c"} {
				if at := symAddr(t, syms, "helper", f); files[at] != f {
					t.Errorf("%s's helper at %#x is not patched as %s's (changed: %+v)", f, at, f, res.Changed)
				}
			}
			if strings.Join(res.New, ",") != "fresh" {
				t.Errorf("new functions %v, want fresh", res.New)
			}
			applyAndCheck(t, p.run(t, ""), res,
				map[string]string{"a_value": "46", "b_value": "243"},
				map[string]string{"a_value": "47", "b_value": "8024"})
		})
	}
}

// TestStrippedTargetWithSymbols builds against a stripped target with the
// unstripped build as Symbols, and patches a process running the stripped
// binary; a symbols file of another build is refused.
func TestStrippedTargetWithSymbols(t *testing.T) {
	p := newProject(t, "multi", []string{"-O2", "-fPIE", "-pie"}, "a.c", "b.c", "entries.c")
	stripped := filepath.Join(p.work, "stripped")
	if out, err := exec.Command("strip", "-o", stripped, p.target).CombinedOutput(); err != nil {
		t.Fatalf("strip: %v\n%s", err, out)
	}
	units := []Unit{p.unit(t, "a.c"), p.unit(t, "b.c")}
	_, err := Build(context.Background(), Options{Target: stripped, Units: units, ID: "hf-strip", Level: 1})
	if err == nil || !strings.Contains(err.Error(), "is stripped") || !strings.Contains(err.Error(), "--symbols") {
		t.Fatalf("stripped target without symbols: %v; want a refusal pointing at --symbols", err)
	}
	res, err := Build(context.Background(), Options{Target: stripped, Symbols: p.target, Units: units, ID: "hf-strip", Level: 1})
	if err != nil {
		t.Fatal(err)
	}
	if got := changedSet(res); got != "helper,b_value,helper" {
		t.Errorf("changed %s; want a.c's helper, b_value and b.c's helper", got)
	}
	// A debug file (objcopy --only-keep-debug) serves as well.
	debug := filepath.Join(p.work, "target.debug")
	if out, err := exec.Command("objcopy", "--only-keep-debug", p.target, debug).CombinedOutput(); err != nil {
		t.Fatalf("objcopy: %v\n%s", err, out)
	}
	viaDebug, err := Build(context.Background(), Options{Target: stripped, Symbols: debug, Units: units, ID: "hf-strip", Level: 1})
	if err != nil {
		t.Fatalf("with the debug file as symbols: %v", err)
	}
	if changedSet(viaDebug) != changedSet(res) || viaDebug.Changed[0].Site != res.Changed[0].Site {
		t.Errorf("the debug file gives %+v, the unstripped binary %+v", viaDebug.Changed, res.Changed)
	}
	// A different build of the program: same symbols, other build-id.
	other := p.compile(t, "other", "-O2", "-fPIE", "-pie", "-Wl,--build-id", "-DOTHER_BUILD=1", abs(t, "driver.c"),
		abs(t, "multi/a.c"), abs(t, "multi/b.c"), abs(t, "multi/entries.c"), "-Wl,--build-id=0x1234567890abcdef1234")
	_, err = Build(context.Background(), Options{Target: stripped, Symbols: other, Units: units, ID: "hf-strip", Level: 1})
	if err == nil || !strings.Contains(err.Error(), "has build-id 1234567890abcdef1234") || !strings.Contains(err.Error(), "different builds") {
		t.Fatalf("symbols of another build: %v; want a refusal naming both build-ids", err)
	}
	// A rebuild of the same program whose build-id differs (as a
	// distribution's binary rebuilt from its source package differs only
	// in its debug information) stands in when every loaded byte is the
	// same: here the same sources linked with another build-id of the same
	// length.
	rebuilt := p.compile(t, "rebuilt", "-O2", "-fPIE", "-pie", abs(t, "driver.c"),
		abs(t, "multi/a.c"), abs(t, "multi/b.c"), abs(t, "multi/entries.c"), "-Wl,--build-id=0x"+strings.Repeat("ab", 20))
	viaRebuild, err := Build(context.Background(), Options{Target: stripped, Symbols: rebuilt, Units: units, ID: "hf-strip", Level: 1})
	if err != nil {
		t.Fatalf("with a rebuild of identical code and data as symbols: %v", err)
	}
	if changedSet(viaRebuild) != changedSet(res) || viaRebuild.Changed[0].Site != res.Changed[0].Site {
		t.Errorf("the rebuild gives %+v, the unstripped binary %+v", viaRebuild.Changed, res.Changed)
	}
	// The same, built at -O1: same size of build-id, other code.
	rebuiltO1 := p.compile(t, "rebuilt-o1", "-O1", "-fPIE", "-pie", abs(t, "driver.c"),
		abs(t, "multi/a.c"), abs(t, "multi/b.c"), abs(t, "multi/entries.c"), "-Wl,--build-id=0x"+strings.Repeat("cd", 20))
	_, err = Build(context.Background(), Options{Target: stripped, Symbols: rebuiltO1, Units: units, ID: "hf-strip", Level: 1})
	if err == nil || !strings.Contains(err.Error(), "different builds") {
		t.Fatalf("symbols of a rebuild with other code: %v; want a refusal saying they are different builds", err)
	}
	if _, err := os.Stat(stripped); err != nil {
		t.Fatal(err)
	}
	applyAndCheck(t, p.run(t, stripped), res,
		map[string]string{"a_value": "46", "b_value": "243"},
		map[string]string{"a_value": "47", "b_value": "8024"})
}

// TestClones patches functions gcc cloned (.isra, .constprop, .part, .cold)
// at the target's clone symbols, also when gcc numbered a clone differently
// in the fixed build.
func TestClones(t *testing.T) {
	p := newProject(t, "clones", []string{"-O2", "-fPIE", "-pie"}, "c.c", "entries.c")
	u := p.unit(t, "c.c")
	for _, renumber := range []bool{false, true} {
		name := "same numbers"
		if renumber {
			// gcc numbers clones in the order it makes them; a fix elsewhere
			// in the file can shift them.
			name = "renumbered"
			re := filepath.Join(p.work, "c.renumbered.o")
			args := []string{"--redefine-sym", "scale.constprop.0=scale.constprop.3", "--redefine-sym", "classify.part.0=classify.part.2", u.Patched, re}
			if out, err := exec.Command("objcopy", args...).CombinedOutput(); err != nil {
				t.Fatalf("objcopy: %v\n%s", err, out)
			}
			u.Patched = re
		}
		t.Run(name, func(t *testing.T) {
			res, err := p.build(t, u)
			if err != nil {
				t.Fatal(err)
			}
			syms := targetSymbols(t, p.target)
			sites := map[string]uint64{}
			for _, c := range res.Changed {
				sites[c.Name] = c.Site
			}
			for _, want := range []string{"weigh.isra.0", "scale.constprop.0", "classify.part.0", "check", "slow_path"} {
				got := want
				if renumber {
					got = strings.NewReplacer("constprop.0", "constprop.3", "part.0", "part.2").Replace(want)
				}
				site, ok := sites[got]
				if !ok {
					t.Errorf("%s is not among the changed functions %s", got, changedSet(res))
					continue
				}
				if at := symAddr(t, syms, want, "c.c"); site != at {
					t.Errorf("%s patched at %#x; the target has %s at %#x", got, site, want, at)
				}
			}
			if len(res.New) != 0 {
				t.Errorf("new functions %v: a renumbered clone is not new", res.New)
			}
			if len(res.Cold) == 0 {
				t.Errorf("check.cold was not included")
			}
			applyAndCheck(t, p.run(t, ""), res,
				nativeResults(t, p, "c.c", "entries.c"),
				nativeResults(t, p, "c.c", "entries.c", "-DFIX"))
		})
	}
}

// nativeResults runs the program built from the given files (and flags)
// and returns what each function of its table returns.
func nativeResults(t *testing.T, p *project, files ...string) map[string]string {
	t.Helper()
	args := append([]string{}, p.cflags...)
	if p.cc == "g++" {
		args = append(args, "-x", "c", abs(t, "driver.c"), "-x", "none")
	} else {
		args = append(args, abs(t, "driver.c"))
	}
	var flags []string
	for _, f := range files {
		if strings.HasPrefix(f, "-") {
			flags = append(flags, f)
			continue
		}
		args = append(args, abs(t, filepath.Join(p.dir, f)))
	}
	if p.cc == "g++" {
		args = append(args, "-lstdc++")
	}
	bin := p.compile(t, "native"+strings.Join(flags, ""), append(flags, args...)...)
	proc := lptest.Start(t, bin)
	out := map[string]string{}
	for _, fn := range entryNames(t, p) {
		out[fn] = proc.Call(fn)
	}
	proc.Kill()
	return out
}

// entryNames lists the functions in the project's entries table.
func entryNames(t *testing.T, p *project) []string {
	t.Helper()
	files, err := filepath.Glob(abs(t, filepath.Join(p.dir, "*")))
	if err != nil {
		t.Fatal(err)
	}
	var src []byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if i := bytes.Index(b, []byte("entries[] = {")); i >= 0 {
			src = b[i:]
		}
	}
	var names []string
	for _, f := range strings.Split(string(src), "{\"")[1:] {
		names = append(names, f[:strings.IndexByte(f, '"')])
	}
	return names
}

// TestCPlusPlus patches a C++ member function and template instantiations,
// and refuses changes on exception paths.
func TestCPlusPlus(t *testing.T) {
	p := newProject(t, "cpp", []string{"-O2", "-fPIE", "-pie"}, "p.cc")
	res, err := p.build(t, p.unit(t, "p.cc"))
	if err != nil {
		t.Fatal(err)
	}
	if got := changedSet(res); got != "_Z11sum_squaresl,_Z6sum_sqIiET_PKS0_i,_Z6sum_sqIlET_PKS0_i,_ZNK7Counter7advanceEl" {
		t.Errorf("changed %s; want sum_squares (calling a C++ function that cannot throw), Counter::advance and both sum_sq instantiations", got)
	}
	applyAndCheck(t, p.run(t, ""), res, nativeResults(t, p, "p.cc"), nativeResults(t, p, "p.cc", "-DFIX"))

	for _, c := range []struct{ define, want string }{
		{"-DFIX_EXC", "function _Z5parsePKc: exception-handling tables changed"},
		{"-DFIX_THROW", "function _Z13must_positivei has exception-handling code"},
		{"-DFIX_THROUGH", "function _Z14twice_positivei calls _Z13must_positivei, which may throw a C++ exception"},
	} {
		t.Run(c.define, func(t *testing.T) {
			u := p.unit(t, "p.cc")
			u.Patched = p.object(t, "p.cc", "p"+c.define+".o", nil, c.define)
			_, err := p.build(t, u)
			if err == nil || !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v; want a refusal saying %q", err, c.want)
			}
		})
	}
}

// TestInlinedChange fixes functions gcc inlined into their callers: the
// callers are replaced and reported as changed through inlining, and a
// changed function the target has no copy of ships as new code.
func TestInlinedChange(t *testing.T) {
	p := newProject(t, "inline", []string{"-O2", "-g", "-fPIE", "-pie", "-ffunction-sections", "-Wl,--gc-sections"}, "i.c")
	if _, ok := findSym(targetSymbols(t, p.target), "clamp"); ok {
		t.Fatal("the linker kept clamp; the test needs a target without it")
	}
	res, err := p.build(t, p.unit(t, "i.c"))
	if err != nil {
		t.Fatal(err)
	}
	if got := changedSet(res); got != "balance,mixed,treble,volume" {
		t.Errorf("changed %s; want balance, mixed, treble, volume", got)
	}
	if strings.Join(res.NotInTarget, ",") != "clamp" {
		t.Errorf("functions without a copy in the target %v; want clamp", res.NotInTarget)
	}
	why := map[string]string{}
	for _, c := range res.Inlined {
		why[c.Name] = strings.Join(c.Inlined, ",")
	}
	want := map[string]string{"volume": "clamp,limit", "balance": "clamp", "treble": "limit"}
	for fn, w := range want {
		if why[fn] != w {
			t.Errorf("%s changed through inlining of %q; want %q (report: %v)", fn, why[fn], w, why)
		}
	}
	// mixed inlines clamp too, but the fix also edits it.
	if _, ok := why["mixed"]; ok {
		t.Errorf("mixed is reported as changed only through inlining; the fix edits it")
	}
	for _, c := range res.Changed {
		if c.Name == "mixed" && strings.Join(c.Inlined, ",") != "clamp" {
			t.Errorf("mixed lists inlined changed callees %v; want clamp", c.Inlined)
		}
	}
	applyAndCheck(t, p.run(t, ""), res, nativeResults(t, p, "i.c"), nativeResults(t, p, "i.c", "-DFIX"))
}

// TestIFUNC patches code calling libc's IFUNCs and the program's own, and
// a changed implementation of an IFUNC; a changed resolver is refused.
func TestIFUNC(t *testing.T) {
	for _, cfg := range []struct {
		name   string
		cflags []string
	}{
		{"pie", []string{"-O2", "-fPIE", "-pie"}},
		{"nopie", []string{"-O2", "-fno-pie", "-no-pie"}},
		{"pie-noplt", []string{"-O2", "-fPIE", "-pie", "-fno-plt"}},
	} {
		t.Run(cfg.name, func(t *testing.T) {
			p := newProject(t, "ifunc", cfg.cflags, "f.c")
			res, err := p.build(t, p.unit(t, "f.c"))
			if err != nil {
				t.Fatal(err)
			}
			if got := changedSet(res); got != "add_fast,use_ifunc,use_libc" {
				t.Errorf("changed %s; want add_fast, use_ifunc, use_libc", got)
			}
			before, after := nativeResults(t, p, "f.c"), nativeResults(t, p, "f.c", "-DFIX")
			if before["plain_add"] == after["plain_add"] {
				t.Fatalf("the fix does not change add's implementation: %v", after)
			}
			applyAndCheck(t, p.run(t, ""), res, before, after)

			u := p.unit(t, "f.c")
			u.Patched = p.object(t, "f.c", "resolver.o", nil, "-DFIX_RESOLVER")
			_, err = p.build(t, u)
			if err == nil || !strings.Contains(err.Error(), "function resolve_add is the resolver of the IFUNC add") {
				t.Fatalf("changed resolver: %v; want a refusal naming it", err)
			}
		})
	}
}

// TestStringLiteralsOnly checks that new string literals in one function,
// which renumber gcc's .LC labels and move the others within the merged
// string section, leave the functions using the others unchanged.
func TestStringLiteralsOnly(t *testing.T) {
	p := newProject(t, "strings", []string{"-O2", "-fPIE", "-pie"}, "s.c")
	res, err := p.build(t, p.unit(t, "s.c"))
	if err != nil {
		t.Fatal(err)
	}
	if got := changedSet(res); got != "first" {
		t.Errorf("changed %s; want only first", got)
	}
	applyAndCheck(t, p.run(t, ""), res, nativeResults(t, p, "s.c"), nativeResults(t, p, "s.c", "-DFIX"))
}

// TestLocalAliasInSharedLibrary patches a function of a -fPIC shared
// library that gcc gave a second, local name (depth.localalias): one
// site, reached both through the PLT and through the alias.
func TestLocalAliasInSharedLibrary(t *testing.T) {
	testenv.NeedGCC(t)
	p := &project{dir: "alias", work: t.TempDir(), cc: "gcc", cflags: []string{"-O2", "-fPIC"}}
	p.target = p.compile(t, "libalias.so", "-O2", "-fPIC", "-shared", "-Wl,--build-id", abs(t, "alias/l.c"))
	exe := p.compile(t, "prog", "-O2", "-fPIE", "-pie", abs(t, "driver.c"), abs(t, "alias/entries.c"), p.target, "-Wl,-rpath,"+p.work)
	res, err := p.build(t, p.unit(t, "l.c"))
	if err != nil {
		t.Fatal(err)
	}
	if got := changedSet(res); got != "depth" {
		t.Errorf("changed %s; want depth once", got)
	}
	// depth(5) = depth(4) + depth(3) + STEP, depth(1) = 1, depth(0) = 0.
	applyAndCheck(t, p.run(t, exe), res, map[string]string{"lib_depth": "19"}, map[string]string{"lib_depth": "26"})
}

// TestSameFileNameInTwoDirectories patches a static function of one of two
// files named util.c: the target's STT_FILE symbols say only "util.c", so
// the file is picked by the statics it defines.
func TestSameFileNameInTwoDirectories(t *testing.T) {
	p := newProject(t, "samename", []string{"-O2", "-fPIE", "-pie"}, "d1/util.c", "d2/util.c", "entries.c")
	res, err := p.build(t, p.unit(t, "d2/util.c"))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changed) != 1 || res.Changed[0].Name != "scale" {
		t.Fatalf("changed %s; want scale", changedSet(res))
	}
	// The site must be d2's scale: the second "util.c" in the table.
	var sites []uint64
	for _, s := range targetSymbols(t, p.target) {
		if s.Name == "scale" {
			sites = append(sites, s.Value)
		}
	}
	if len(sites) != 2 || res.Changed[0].Site != sites[1] {
		t.Fatalf("patched scale at %#x; the target's two are at %#x (d1, d2)", res.Changed[0].Site, sites)
	}
	applyAndCheck(t, p.run(t, ""), res, map[string]string{"one": "135", "two": "225"}, map[string]string{"one": "135", "two": "315"})
}

// TestConstantTablesWithAddresses patches functions using constant tables
// of addresses (.data.rel.ro): a string table the fix extends, and a
// computed-goto table whose labels must point into the new code even
// though its bytes did not change.
func TestConstantTablesWithAddresses(t *testing.T) {
	for _, cfg := range []struct {
		name   string
		cflags []string
	}{
		{"pie", []string{"-O2", "-fPIE", "-pie"}},
		{"nopie", []string{"-O2", "-fno-pie", "-no-pie"}},
	} {
		t.Run(cfg.name, func(t *testing.T) {
			p := newProject(t, "relro", cfg.cflags, "r.c")
			res, err := p.build(t, p.unit(t, "r.c"))
			if err != nil {
				t.Fatal(err)
			}
			if got := changedSet(res); got != "level_name,run,same_ops,score" {
				t.Errorf("changed %s; want level_name, run, same_ops and score", got)
			}
			for _, d := range res.Rodata {
				if strings.Contains(d.Name, "weights") || strings.Contains(d.Name, "score_ops") {
					t.Errorf("the unchanged table %s was copied; new code must use the target's", d.Name)
				}
			}
			// level 3: "?" before the fix, "error" after; interp: ((1+3)*2+3)-1 = 10 -> ((1+4)*2+4)-1 = 13;
			// score: weights[5] = 9, plus 1 when the address compares equal.
			// same_ops: the table's address compares equal to the one old code stored.
			applyAndCheck(t, p.run(t, ""), res, map[string]string{"level": "63", "interp": "10", "score": "10", "same_ops": "11"},
				map[string]string{"level": "101", "interp": "13", "score": "91", "same_ops": "12"})
		})
	}
}

// TestRelaxedJumpInTarget builds a patch for a target linked from objects
// without -ffunction-sections, where the assembler shortened a tail call to
// a neighbouring function: the function is shorter in the target than in
// orig.o, and still proved equal.
func TestRelaxedJumpInTarget(t *testing.T) {
	p := newProject(t, "relax", []string{"-O2", "-fPIE", "-pie"}, "t.c")
	res, err := p.build(t, p.unit(t, "t.c"))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Changed) != 1 || res.Changed[0].Name != "check_token" || res.Verified != 1 {
		t.Fatalf("changed %s, verified %d; want check_token, verified", changedSet(res), res.Verified)
	}
	orig := p.unit(t, "t.c").Orig
	f, err := elf.Open(orig)
	if err != nil {
		t.Fatal(err)
	}
	syms, _ := f.Symbols()
	f.Close()
	for _, s := range syms {
		if s.Name == "check_token" && s.Size <= res.Changed[0].OldSize {
			t.Fatalf("check_token is %d bytes in orig.o and %d in the target; the test needs the target's relaxed, shorter form", s.Size, res.Changed[0].OldSize)
		}
	}
	applyAndCheck(t, p.run(t, ""), res, map[string]string{"check": "1"}, map[string]string{"check": "0"})
}

// TestExistingThreadLocals patches a function using thread-local variables
// the module already has: in executables (local-exec and initial-exec
// references) and in a shared library built for initial-exec TLS. The
// running thread's values carry on. General-dynamic TLS is refused by name.
func TestExistingThreadLocals(t *testing.T) {
	for _, cfg := range []struct {
		name   string
		cflags []string
		shared bool
		refuse string
	}{
		{name: "pie", cflags: []string{"-O2", "-fPIE", "-pie"}},
		{name: "nopie", cflags: []string{"-O2", "-fno-pie", "-no-pie"}},
		{name: "shared-initial-exec", cflags: []string{"-O2", "-fPIC", "-ftls-model=initial-exec"}, shared: true},
		{name: "shared-general-dynamic", cflags: []string{"-O2", "-fPIC"}, shared: true, refuse: "function next_request reaches the thread-local variable request_id through __tls_get_addr"},
	} {
		t.Run(cfg.name, func(t *testing.T) {
			var p *project
			exe := ""
			if cfg.shared {
				testenv.NeedGCC(t)
				p = &project{dir: "tls", work: t.TempDir(), cc: "gcc", cflags: cfg.cflags}
				args := append(append([]string{}, cfg.cflags...), "-shared", "-Wl,--build-id", abs(t, "tls/t.c"), abs(t, "tls/other.c"))
				p.target = p.compile(t, "libtls.so", args...)
				exe = p.compile(t, "prog", "-O2", "-fPIE", "-pie", abs(t, "driver.c"), abs(t, "tls/entries.c"), p.target, "-Wl,-rpath,"+p.work)
			} else {
				p = newProject(t, "tls", cfg.cflags, "t.c", "other.c", "entries.c")
			}
			res, err := p.build(t, p.unit(t, "t.c"))
			if cfg.refuse != "" {
				if err == nil || !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), cfg.refuse) {
					t.Fatalf("error %v; want a refusal saying %q", err, cfg.refuse)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			testenv.NeedRoot(t)
			proc := p.run(t, exe)
			// The thread's three counters go up by 1, 1, 1 before the fix,
			// by 10, 2, 100 with it, from wherever they are.
			proc.Expect("next_request", "1001001")
			proc.Expect("next_request", "2002002")
			ctx := context.Background()
			if _, err := livepatch.Apply(ctx, proc.Pid, res.Bundle, livepatch.Options{}); err != nil {
				t.Fatal(err)
			}
			proc.Expect("next_request", "12004102")
			proc.Expect("next_request", "22006202")
			if _, err := livepatch.Revert(ctx, proc.Pid, res.Bundle.ID, livepatch.Options{}); err != nil {
				t.Fatal(err)
			}
			proc.Expect("next_request", "23007203")
		})
	}
}

// TestTemplateInTwoFiles patches a template instantiated in two changed
// files: each object has a weak copy, the target one; it is replaced once.
func TestTemplateInTwoFiles(t *testing.T) {
	p := newProject(t, "comdat", []string{"-O2", "-fPIE", "-pie"}, "a.cc", "b.cc")
	res, err := p.build(t, p.unit(t, "a.cc"), p.unit(t, "b.cc"))
	if err != nil {
		t.Fatal(err)
	}
	if got := changedSet(res); got != "_Z5weighIlET_S0_" {
		t.Errorf("changed %s; want weigh<long> once", got)
	}
	// weigh(10) = 45*3 -> 45*5, weigh(4) = 6*3 -> 6*5.
	applyAndCheck(t, p.run(t, ""), res, map[string]string{"p_a": "136", "p_b": "20"}, map[string]string{"p_a": "226", "p_b": "32"})

	// The two files disagree on the template's new code.
	_, err = p.build(t, p.unit(t, "a.cc"), p.unit(t, "b.cc", "-DFIX2"))
	if err == nil || !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "compile the inline function or template _Z5weighIlET_S0_ to different code") {
		t.Fatalf("two versions of one template: %v; want a refusal naming it", err)
	}
}

// TestRenumberedClonesPaired pairs two clones of one kind whose numbers
// gcc swapped in the fixed build: the unchanged one by its identical code,
// the changed one by elimination, each at its own site.
func TestRenumberedClonesPaired(t *testing.T) {
	p := newProject(t, "clonepair", []string{"-O2", "-fPIE", "-pie"}, "s.c")
	rename := func(path string, pairs ...string) {
		t.Helper()
		var args []string
		for i := 0; i < len(pairs); i += 2 {
			args = append(args, "--redefine-sym", pairs[i]+"="+pairs[i+1])
		}
		if out, err := exec.Command("objcopy", append(args, path)...).CombinedOutput(); err != nil {
			t.Fatalf("objcopy: %v\n%s", err, out)
		}
	}
	u := p.unit(t, "s.c")
	rename(p.target, "sa", "pick.constprop.0", "sb", "pick.constprop.1")
	rename(u.Orig, "sa", "pick.constprop.0", "sb", "pick.constprop.1")
	rename(u.Patched, "sa", "pick.constprop.1", "sb", "pick.constprop.0")
	res, err := p.build(t, u)
	if err != nil {
		t.Fatal(err)
	}
	want := symAddr(t, targetSymbols(t, p.target), "pick.constprop.0", "s.c")
	if len(res.Changed) != 1 || res.Changed[0].Name != "pick.constprop.1" || res.Changed[0].Site != want {
		t.Fatalf("changed %+v; want fixed.o's pick.constprop.1 at the target's pick.constprop.0 (%#x)", res.Changed, want)
	}
	applyAndCheck(t, p.run(t, ""), res, map[string]string{"use_a": "315", "use_b": "94"}, map[string]string{"use_a": "495", "use_b": "94"})
}

// TestStaticExecutable patches a -static-pie program: calls to libc's
// IFUNCs, an existing one (strchr) and a new one (strlen), go through the
// program's own IRELATIVE slots, never to the resolvers.
func TestStaticExecutable(t *testing.T) {
	for _, cfg := range []struct {
		name   string
		cflags []string
	}{
		{"static-pie", []string{"-O2", "-fPIE", "-static-pie"}},
		{"static", []string{"-O2", "-fno-pie", "-no-pie", "-static"}},
	} {
		t.Run(cfg.name, func(t *testing.T) {
			p := newProject(t, "static", cfg.cflags, "n.c")
			res, err := p.build(t, p.unit(t, "n.c"))
			if err != nil {
				t.Fatal(err)
			}
			if changedSet(res) != "valid_name" || res.Verified != 1 {
				t.Fatalf("changed %s, verified %d; want valid_name, verified", changedSet(res), res.Verified)
			}
			if len(res.Stubs) < 2 {
				t.Errorf("stubs %v; want strchr and strlen through their IRELATIVE slots", res.Stubs)
			}
			applyAndCheck(t, p.run(t, ""), res, map[string]string{"valid_name": "1"}, map[string]string{"valid_name": "0"})
		})
	}
}

// TestStructLayoutChange refuses a fix that changes the layout of a struct
// the program keeps on the heap, read from the objects' DWARF.
func TestStructLayoutChange(t *testing.T) {
	p := newProject(t, "layout", []string{"-O2", "-g", "-fPIE", "-pie"}, "l.c")
	_, err := p.build(t, p.unit(t, "l.c"))
	if err == nil || !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "changes the layout of Agg (16 bytes {id@0 count@4 limit@6 name@8} became 24 bytes {id@0 count@4 limit@8 name@16}") {
		t.Fatalf("error %v; want a refusal naming struct Agg and its layouts", err)
	}
	// Without DWARF the change cannot be seen: the result says so.
	nodebug := newProject(t, "layout", []string{"-O2", "-fPIE", "-pie"}, "l.c")
	res, err := nodebug.build(t, nodebug.unit(t, "l.c"))
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "no DWARF") || !strings.Contains(res.Warnings[0], "layout") {
		t.Errorf("warnings %q; want one saying layouts could not be checked without DWARF", res.Warnings)
	}
}
