package corpus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"hotfleet/internal/build"
	"hotfleet/internal/bundle"
	"hotfleet/internal/livepatch"
	"hotfleet/internal/livepatch/lptest"
	"hotfleet/internal/testenv"
)

const (
	// maxParallel bounds the cases built and run at once: the test machines
	// have two cores shared with other work.
	maxParallel = 2
	// stepTimeout bounds one build, apply or revert; each takes well under a
	// second, the margin absorbs a loaded CI machine.
	stepTimeout = 60 * time.Second
)

// patchFlags are added to every object, as the builder requires.
var patchFlags = []string{"-ffunction-sections", "-fdata-sections"}

// spec is a case's case.json.
type spec struct {
	Kind   string `json:"kind"`   // the change kind, one line
	Proves string `json:"proves"` // what the case shows about the builder
	// Link is how the module is linked: "pie" or "nopie" executable, or
	// "shared" (a -fPIC library the executable built from Main loads).
	Link string `json:"link"`
	Lang string `json:"lang"` // "c" (default) or "c++"
	// CFlags are the build's flags for every object (default -O2).
	CFlags  []string `json:"cflags"`
	Sources []string `json:"sources"` // the module's sources
	Main    []string `json:"main"`    // the executable's sources for a shared module
	// MainLink is how that executable is linked: "pie" (default) or
	// "nopie" (then the library's exported variables it uses are copied
	// into it).
	MainLink string `json:"main_link"`
	// DLOpen: the executable does not link the shared module but loads it
	// with dlopen (from its own directory) when it starts, as a plugin.
	DLOpen bool `json:"dlopen"`
	// Strip ships the executable stripped, as distributions do; the build
	// takes its symbols from the unstripped original.
	Strip  bool     `json:"strip"`
	LDLibs []string `json:"ldlibs"` // libraries every link adds (-lm)
	// LDFlags are linker options every link adds (-Wl,-z,now).
	LDFlags []string `json:"ldflags"`
	// Deps are sources of libdep.so, a library the program links and the
	// fix does not touch.
	Deps []string `json:"deps"`
	// Before, After and Reverted are the lines the program prints for
	// successive steps: before the patch, while applied, after the revert.
	// For a refused case Reverted is what it prints after the refusal
	// (default: Before again).
	Before   []string `json:"before"`
	After    []string `json:"after"`
	Reverted []string `json:"reverted"`
	// After2, when set, is the output once level 2 of the patch replaces
	// level 1: fix2.diff is the cumulative fix (against the original
	// sources, as a patch author ships the next level). Reverting level 2
	// then gives Reverted.
	After2 []string `json:"after2"`
	// Changed are functions the build must name as changed; with Exact,
	// no other function may change. New are functions the fix adds.
	Changed []string `json:"changed"`
	Exact   bool     `json:"exact"`
	New     []string `json:"new"`
	// LineShift marks a fix that moves the __LINE__ of unchanged functions:
	// objects compiled without the --source driver's line markers differ
	// there, so Exact holds in source mode only.
	LineShift bool `json:"line_shift"`
	// Refuse, when set, is the expected outcome instead: a refusal whose
	// message contains this text (the symbol it is about).
	Refuse string `json:"refuse"`
	// Mode "source" marks a case only the --source driver can judge (a
	// change to an assembly source is refused before any object diff).
	Mode string `json:"mode"`
}

func (s *spec) validate() error {
	switch s.Link {
	case "pie", "nopie", "shared":
	default:
		return fmt.Errorf("link %q: want pie, nopie or shared", s.Link)
	}
	switch s.Lang {
	case "", "c", "c++":
	default:
		return fmt.Errorf("lang %q: want c or c++", s.Lang)
	}
	if s.Mode != "" && s.Mode != "source" {
		return fmt.Errorf("mode %q: want empty or source", s.Mode)
	}
	if s.Kind == "" || s.Proves == "" {
		return errors.New("kind and proves are required")
	}
	if len(s.Sources) == 0 {
		return errors.New("sources is empty")
	}
	if (len(s.Main) > 0) != (s.Link == "shared") {
		return errors.New("main lists the executable's sources of a shared module, and only those")
	}
	if s.MainLink != "" && (s.Link != "shared" || (s.MainLink != "pie" && s.MainLink != "nopie")) {
		return fmt.Errorf("main_link %q: want pie or nopie, and only for a shared module", s.MainLink)
	}
	if s.DLOpen && s.Link != "shared" {
		return errors.New("dlopen: only a shared module can be loaded as a plugin")
	}
	if s.Strip && s.Link == "shared" {
		return errors.New("strip: only executables are shipped stripped in the corpus")
	}
	if s.Refuse == "" && (len(s.Before) == 0 || len(s.After) == 0 || len(s.Reverted) == 0) {
		return errors.New("a case expects either a refusal or before, after and reverted output")
	}
	if s.Refuse != "" && (len(s.After) > 0 || len(s.After2) > 0 || len(s.Changed) > 0) {
		return errors.New("a refused case has no patched output or changed functions")
	}
	return nil
}

func loadSpec(dir string) (*spec, error) {
	data, err := os.ReadFile(filepath.Join(dir, "case.json"))
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var s spec
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("%s/case.json: %w", filepath.Base(dir), err)
	}
	if err := s.validate(); err != nil {
		return nil, fmt.Errorf("%s/case.json: %w", filepath.Base(dir), err)
	}
	return &s, nil
}

// cases returns the case directories in order.
func cases(t *testing.T) []string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join("testdata", "[0-9][0-9]-*"))
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(dirs)
	if len(dirs) == 0 {
		t.Fatal("no cases under testdata")
	}
	return dirs
}

// TestCaseFiles checks every case is complete without building anything:
// a case.json that decodes, a fix.diff that applies, and the sources it
// names.
func TestCaseFiles(t *testing.T) {
	_, noPatch := exec.LookPath("patch")
	for _, dir := range cases(t) {
		s, err := loadSpec(dir)
		if err != nil {
			t.Error(err)
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "fix.diff")); err != nil {
			t.Errorf("%s: %v", dir, err)
		}
		if _, err := os.Stat(filepath.Join(dir, "fix2.diff")); (err == nil) != (len(s.After2) > 0) {
			t.Errorf("%s: a fix2.diff goes with after2 and only with it (stat: %v)", dir, err)
		}
		for _, src := range slices.Concat(s.Sources, s.Main, s.Deps) {
			if _, err := os.Stat(filepath.Join(dir, src)); err != nil {
				t.Errorf("%s: %v", dir, err)
			}
		}
		if noPatch != nil {
			continue
		}
		for _, diff := range []string{"fix.diff", "fix2.diff"} {
			fix, err := filepath.Abs(filepath.Join(dir, diff))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(fix); err != nil {
				continue
			}
			tree := t.TempDir()
			if err := os.CopyFS(tree, os.DirFS(dir)); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("patch", "-p1", "--batch", "--forward", "--dry-run", "-i", fix)
			cmd.Dir = tree
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s/%s does not apply to the case's sources: %v\n%s", filepath.Base(dir), diff, err, out)
			}
		}
	}
}

// TestCorpus builds each case's bundle with build.Build, applies it to the
// running program, checks the output switches to the fixed behaviour, and
// reverts it; or checks the build refuses with the expected message.
func TestCorpus(t *testing.T) {
	sem := make(chan struct{}, maxParallel)
	for _, dir := range cases(t) {
		name := filepath.Base(dir)
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testenv.NeedRoot(t)
			testenv.NeedGCC(t)
			s, err := loadSpec(dir)
			if err != nil {
				t.Fatal(err)
			}
			needTools(t, s.tools("patch")...)
			if s.Mode == "source" {
				t.Skip("judged by the --source driver only (TestCorpusSource)")
			}
			sem <- struct{}{}
			defer func() { <-sem }()
			runCase(t, name, dir, s)
		})
	}
}

// tools are the programs besides gcc that building the case runs.
func (s *spec) tools(base ...string) []string {
	out := slices.Clone(base)
	if s.Lang == "c++" {
		out = append(out, "g++")
	}
	if s.Strip {
		out = append(out, "strip", "objcopy")
	}
	return out
}

// needTools is testenv's policy for more build tools: outside CI a missing
// one skips the test, in CI it fails it.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if testenv.InCI() {
				t.Fatalf("CI=true but the test needs %s: %v", tool, err)
			}
			t.Skipf("the test needs %s: %v", tool, err)
		}
	}
}

// caseBuild is a case compiled twice and linked from the original objects.
type caseBuild struct {
	dir     string
	modules []caseModule // the modules the fix changes
	level2  []caseModule // the modules fix2.diff changes, if the case has one
	prog    string       // the executable to run
}

// caseModule is one target module and the objects of it the fix changed.
type caseModule struct {
	target  string // the executable or shared library
	symbols string // its unstripped original, when the target is stripped
	units   []build.Unit
}

func runCase(t *testing.T, name, dir string, s *spec) {
	cb := compileCase(t, dir, s)
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()

	if s.Refuse != "" {
		p := lptest.Start(t, cb.prog)
		expectLines(t, p, "before the build", s.Before)
		var err error
		for _, m := range cb.modules {
			var res *build.Result
			res, err = build.Build(ctx, m.options(name))
			if err != nil {
				if res != nil {
					t.Errorf("refused build still returned a result: %+v", res)
				}
				break
			}
		}
		if err == nil {
			t.Fatalf("build succeeded, want a refusal naming %q", s.Refuse)
		}
		if !errors.Is(err, build.ErrRefused) {
			t.Errorf("build error does not wrap build.ErrRefused: %v", err)
		}
		if !strings.Contains(err.Error(), s.Refuse) {
			t.Errorf("refusal does not name %q: %v", s.Refuse, err)
		}
		t.Logf("refused as expected: %v", err)
		// The refusal touched nothing: the program behaves as before.
		after := s.Reverted
		if len(after) == 0 {
			after = s.Before
		}
		expectLines(t, p, "after the refusal", after)
		return
	}

	// One bundle for every module the fix changes, as the --source driver
	// makes it: one build per module.
	b, changed, added := buildLevel(ctx, t, name, 1, cb.modules)
	checkChanges(t, s, changed, added, false)

	p := lptest.StartGrandchild(t, cb.prog)
	expectLines(t, p, "before the patch", s.Before)
	if _, err := livepatch.Apply(ctx, p.Pid, b, livepatch.Options{}); err != nil {
		t.Fatalf("apply: %v", err)
	}
	expectLines(t, p, "with the patch applied", s.After)
	if len(s.After2) > 0 {
		b2, _, _ := buildLevel(ctx, t, name, 2, cb.level2)
		if _, err := livepatch.Apply(ctx, p.Pid, b2, livepatch.Options{}); err != nil {
			t.Fatalf("apply level 2 over level 1: %v", err)
		}
		expectLines(t, p, "with level 2 applied", s.After2)
	}
	if _, err := livepatch.Revert(ctx, p.Pid, name, livepatch.Options{}); err != nil {
		t.Fatalf("revert: %v", err)
	}
	expectLines(t, p, "after the revert", s.Reverted)
	p.Kill()
}

func (m caseModule) options(id string) build.Options {
	return build.Options{Target: m.target, Symbols: m.symbols, Units: m.units, ID: id, Level: 1}
}

// buildLevel builds one bundle at level for the modules a fix changes.
func buildLevel(ctx context.Context, t *testing.T, name string, level uint32, mods []caseModule) (*bundle.Bundle, []string, []string) {
	t.Helper()
	full := &bundle.Bundle{ID: name, Level: level}
	var changed, added []string
	for _, m := range mods {
		opts := m.options(name)
		opts.Level = level
		res, err := build.Build(ctx, opts)
		if err != nil {
			t.Fatalf("build level %d for %s: %v", level, filepath.Base(m.target), err)
		}
		changed = append(changed, changedNames(res)...)
		added = append(added, res.New...)
		full.Modules = append(full.Modules, res.Bundle.Modules...)
		t.Logf("level %d, %s: changed %v, new %v, cold %v, stubs %v", level, filepath.Base(m.target), changedNames(res), res.New, res.Cold, res.Stubs)
	}
	data, err := bundle.Marshal(full)
	if err != nil {
		t.Fatalf("encode the bundle: %v", err)
	}
	b, err := bundle.Decode(data)
	if err != nil {
		t.Fatalf("decode the bundle: %v", err)
	}
	t.Logf("level %d: bundle %d bytes, %d modules", level, len(data), len(b.Modules))
	return b, changed, added
}

func changedNames(res *build.Result) []string {
	if res == nil {
		return nil
	}
	var out []string
	for _, c := range res.Changed {
		out = append(out, c.Name)
	}
	return out
}

// checkChanges compares the functions a build reports as changed and new
// with the case's expectation.
func checkChanges(t *testing.T, s *spec, got, gotNew []string, fromSource bool) {
	t.Helper()
	for _, want := range s.Changed {
		if !slices.Contains(got, want) {
			t.Errorf("build did not change %s; it changed %v", want, got)
		}
	}
	if s.Exact && (fromSource || !s.LineShift) {
		for _, g := range got {
			if !slices.Contains(s.Changed, g) {
				t.Errorf("build changed %s, which the fix does not change (want only %v)", g, s.Changed)
			}
		}
	}
	for _, want := range s.New {
		// gcc may clone the new function (sanitize.constprop.0.isra.0).
		if !slices.ContainsFunc(gotNew, func(n string) bool { return n == want || strings.HasPrefix(n, want+".") }) {
			t.Errorf("build did not add the new function %s; new: %v", want, gotNew)
		}
	}
}

func expectLines(t *testing.T, p *lptest.Target, when string, want []string) {
	t.Helper()
	for i, w := range want {
		if got := p.Call("step"); got != w {
			t.Fatalf("%s, step %d: the program printed %q, want %q", when, i+1, got, w)
		}
	}
}

// compileCase copies the case into orig/ and fixed/, applies fix.diff to
// fixed/, compiles both with the case's flags plus the patch flags, links
// the shipped program from the original built without the patch flags, and
// returns per module the units whose object the fix changed.
func compileCase(t *testing.T, dir string, s *spec) *caseBuild {
	t.Helper()
	work := t.TempDir()
	cb := &caseBuild{dir: work}
	// fixed/ has fix.diff applied, fixed2/ the cumulative fix2.diff.
	variants := map[string]string{"fixed": "fix.diff"}
	if len(s.After2) > 0 {
		variants["fixed2"] = "fix2.diff"
	}
	if err := os.CopyFS(filepath.Join(work, "orig"), os.DirFS(dir)); err != nil {
		t.Fatalf("copy %s: %v", dir, err)
	}
	for v, diff := range variants {
		if err := os.CopyFS(filepath.Join(work, v), os.DirFS(dir)); err != nil {
			t.Fatalf("copy %s: %v", dir, err)
		}
		fix, err := filepath.Abs(filepath.Join(dir, diff))
		if err != nil {
			t.Fatal(err)
		}
		run(t, filepath.Join(work, v), "patch", "-p1", "--batch", "--forward", "--no-backup-if-mismatch", "-i", fix)
	}

	cflags := s.CFlags
	if len(cflags) == 0 {
		cflags = []string{"-O2"}
	}
	var model, ldflags []string
	switch s.Link {
	case "pie":
		model, ldflags = []string{"-fPIE"}, []string{"-pie"}
	case "nopie":
		model, ldflags = []string{"-fno-pie"}, []string{"-no-pie"}
	case "shared":
		model = []string{"-fPIC"}
	}
	flags := slices.Concat(cflags, model)
	compileTo := func(variant, outDir, src string, flags []string) string {
		obj := filepath.Join(outDir, strings.TrimSuffix(src, filepath.Ext(src))+".o")
		run(t, filepath.Join(work, variant), compilerFor(s, src), slices.Concat([]string{"-c"}, flags, []string{src, "-o", obj})...)
		return obj
	}
	compile := func(variant, src string, flags []string) string {
		return compileTo(variant, filepath.Join(work, variant), src, flags)
	}
	// The shipped program is linked from objects built without the patch
	// flags, as a distribution builds it; orig.o and fixed.o have them.
	shipDir := filepath.Join(work, "ship")
	if err := os.Mkdir(shipDir, 0o755); err != nil {
		t.Fatal(err)
	}
	ship := func(srcs []string, flags []string) []string {
		var objs []string
		for _, src := range srcs {
			objs = append(objs, compileTo("orig", shipDir, src, flags))
		}
		return objs
	}
	driver, err := filepath.Abs(filepath.Join("testdata", "driver.c"))
	if err != nil {
		t.Fatal(err)
	}
	exeModel, exeLD := "-fPIE", "-pie"
	if s.Link == "nopie" || s.MainLink == "nopie" {
		exeModel, exeLD = "-fno-pie", "-no-pie"
	}
	exeFlags := slices.Concat(cflags, []string{exeModel})
	driverObj := filepath.Join(work, "driver.o")
	run(t, work, "gcc", slices.Concat([]string{"-c"}, exeFlags, []string{driver, "-o", driverObj})...)

	// compileBoth compiles srcs in the original and the fixed trees and
	// returns the shipped objects and, per fixed tree, the units its fix
	// changed.
	compileBoth := func(srcs []string, flags []string) ([]string, map[string][]build.Unit) {
		units := map[string][]build.Unit{}
		for _, src := range srcs {
			o := compile("orig", src, slices.Concat(flags, patchFlags))
			for v := range variants {
				f := compile(v, src, slices.Concat(flags, patchFlags))
				if !sameFile(t, o, f) {
					units[v] = append(units[v], build.Unit{Orig: o, Patched: f, Source: src})
				}
			}
		}
		return ship(srcs, flags), units
	}
	// addModule records target as changed by each fix that changed units of it.
	addModule := func(m caseModule, units map[string][]build.Unit) {
		if u := units["fixed"]; len(u) > 0 {
			m.units = u
			cb.modules = append(cb.modules, m)
		}
		if u := units["fixed2"]; len(u) > 0 {
			m.units = u
			cb.level2 = append(cb.level2, m)
		}
	}
	modObjs, modUnits := compileBoth(s.Sources, flags)
	linker := "gcc"
	if s.Lang == "c++" {
		linker = "g++"
	}
	origDir := filepath.Join(work, "orig")
	libs := slices.Concat(s.LDFlags, s.LDLibs)
	if len(s.Deps) > 0 {
		var depObjs []string
		for _, src := range s.Deps {
			depObjs = append(depObjs, compileTo("orig", shipDir, src, slices.Concat(cflags, []string{"-fPIC"})))
		}
		run(t, origDir, linker, slices.Concat([]string{"-shared"}, depObjs, []string{"-o", filepath.Join(origDir, "libdep.so")})...)
		libs = slices.Concat([]string{"-L", origDir, "-ldep", "-Wl,-rpath," + origDir}, libs)
	}
	switch s.Link {
	case "pie", "nopie":
		target := filepath.Join(origDir, "prog")
		run(t, origDir, linker, slices.Concat(ldflags, modObjs, []string{driverObj, "-o", target}, libs)...)
		m := caseModule{target: target}
		cb.prog = target
		if s.Strip {
			m.target, m.symbols = filepath.Join(origDir, "prog.stripped"), target
			run(t, origDir, "strip", "--strip-all", "-o", m.target, target)
			cb.prog = m.target
		}
		addModule(m, modUnits)
	case "shared":
		lib := filepath.Join(origDir, "libcase.so")
		run(t, origDir, linker, slices.Concat([]string{"-shared"}, modObjs, []string{"-o", lib}, libs)...)
		addModule(caseModule{target: lib}, modUnits)
		mainObjs, mainUnits := compileBoth(s.Main, exeFlags)
		cb.prog = filepath.Join(origDir, "prog")
		linkLib := []string{"-L", origDir, "-lcase", "-Wl,-rpath," + origDir}
		if s.DLOpen {
			linkLib = nil
		}
		run(t, origDir, linker, slices.Concat([]string{exeLD}, mainObjs, []string{driverObj}, linkLib, []string{"-o", cb.prog}, libs)...)
		addModule(caseModule{target: cb.prog}, mainUnits)
	}
	if len(cb.modules) == 0 {
		t.Fatalf("fix.diff changes none of the objects of %v", slices.Concat(s.Sources, s.Main))
	}
	if len(s.After2) > 0 && len(cb.level2) == 0 {
		t.Fatalf("fix2.diff changes none of the objects of %v", slices.Concat(s.Sources, s.Main))
	}
	return cb
}

func compilerFor(s *spec, src string) string {
	if s.Lang == "c++" && (strings.HasSuffix(src, ".cpp") || strings.HasSuffix(src, ".cc")) {
		return "g++"
	}
	return "gcc"
}

func sameFile(t *testing.T, a, b string) bool {
	t.Helper()
	da, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	db, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(da, db)
}

// run runs a build tool in dir and fails the test with its output.
func run(t *testing.T, dir, tool string, args ...string) {
	t.Helper()
	cmd := exec.Command(tool, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s (in %s): %v\n%s", tool, strings.Join(args, " "), dir, err, out)
	}
}

// TestDocsListEveryCase keeps docs/corpus.md in step with testdata.
func TestDocsListEveryCase(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "corpus.md"))
	if err != nil {
		t.Fatalf("read the corpus documentation: %v", err)
	}
	for _, dir := range cases(t) {
		name := filepath.Base(dir)
		if !strings.Contains(string(doc), fmt.Sprintf("| %s `%s` |", name[:2], name[3:])) {
			t.Errorf("docs/corpus.md has no row for %s", name)
		}
	}
}

// TestBadCaseFiles checks a broken case.json is rejected with a message
// naming what is wrong, before anything is built.
func TestBadCaseFiles(t *testing.T) {
	const base = `"kind": "k", "proves": "p", "sources": ["a.c"]`
	for _, c := range []struct{ json, want string }{
		{`{` + base + `, "link": "pie", "before": ["x"], "after": ["y"], "reverted": ["x"], "colour": 1}`, `unknown field "colour"`},
		{`{` + base + `, "link": "static", "before": ["x"], "after": ["y"], "reverted": ["x"]}`, `link "static"`},
		{`{` + base + `, "link": "pie", "before": ["x"]}`, "either a refusal or before, after and reverted"},
		{`{` + base + `, "link": "pie", "before": ["x"], "after": ["y"], "refuse": "f"}`, "a refused case has no patched output"},
		{`{` + base + `, "link": "pie", "main": ["m.c"], "before": ["x"], "after": ["y"], "reverted": ["x"]}`, "main lists the executable's sources of a shared module"},
		{`{` + base + `, "link": "pie", "main_link": "nopie", "before": ["x"], "after": ["y"], "reverted": ["x"]}`, `main_link "nopie"`},
		{`{` + base + `, "link": "shared", "main": ["m.c"], "strip": true, "before": ["x"], "after": ["y"], "reverted": ["x"]}`, "strip: only executables"},
		{`{` + base + `, "link": "pie", "dlopen": true, "before": ["x"], "after": ["y"], "reverted": ["x"]}`, "dlopen: only a shared module"},
		{`{"kind": "k", "proves": "p", "link": "pie", "sources": [], "before": ["x"], "after": ["y"], "reverted": ["x"]}`, "sources is empty"},
		{`{"kind": "k", "link": "pie", "sources": ["a.c"], "refuse": "f"}`, "kind and proves are required"},
		{`{` + base + `, "link": "pie", "mode": "cli", "refuse": "f"}`, `mode "cli"`},
	} {
		dir := filepath.Join(t.TempDir(), "99-bad")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "case.json"), []byte(c.json), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := loadSpec(dir)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "99-bad/case.json") {
			t.Errorf("case.json %s: got error %v, want one naming 99-bad/case.json and %q", c.json, err, c.want)
		}
	}
}
