package corpus

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"hotfleet/internal/bundle"
	"hotfleet/internal/livepatch"
	"hotfleet/internal/livepatch/lptest"
	"hotfleet/internal/testenv"
)

// cliTimeout bounds one 'hotfleet patch build --source': two make runs of a
// few files and the builder, seconds on a loaded CI machine.
const cliTimeout = 3 * 60 * time.Second

// hotfleetBuild builds the hotfleet binary once for one run of the
// source-mode cases, into a directory removed when the run ends.
type hotfleetBuild struct {
	once sync.Once
	dir  string
	bin  string
	err  error
}

func (h *hotfleetBuild) get(t *testing.T) string {
	t.Helper()
	h.once.Do(func() {
		h.bin, h.err = testenv.BuildHotfleet(h.dir)
	})
	if h.err != nil {
		t.Fatal(h.err)
	}
	return h.bin
}

// TestCorpusSource runs every case through the command a patch author uses:
// the case's sources become a make project, built once as the shipped
// program; 'hotfleet patch build --source DIR --fix fix.diff --target PROG'
// builds the bundle, which is applied to the running program and reverted.
// Refusals must exit non-zero with the expected text, write no bundle and
// leave the source tree as it was.
func TestCorpusSource(t *testing.T) {
	sem := make(chan struct{}, maxParallel)
	hf := &hotfleetBuild{dir: t.TempDir()}
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
			needTools(t, s.tools("make", "patch")...)
			sem <- struct{}{}
			defer func() { <-sem }()
			runSourceCase(t, hf.get(t), name, dir, s)
		})
	}
}

func runSourceCase(t *testing.T, bin, name, dir string, s *spec) {
	work := t.TempDir()
	src := filepath.Join(work, "src")
	if err := os.CopyFS(src, os.DirFS(dir)); err != nil {
		t.Fatalf("copy %s: %v", dir, err)
	}
	for _, f := range []string{"case.json", "fix.diff", "fix2.diff"} {
		if err := os.Remove(filepath.Join(src, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
	}
	driver, err := os.ReadFile(filepath.Join("testdata", "driver.c"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "corpus_driver.c"), driver, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "Makefile"), []byte(makefile(s)), 0o644); err != nil {
		t.Fatal(err)
	}
	// The shipped program: built in the tree with the real compiler.
	run(t, src, "make", "-s")
	prog := filepath.Join(src, "prog")
	targets := []string{"--target", prog}
	if s.Link == "shared" {
		// Both modules, whichever the fix changes: a target the fix does
		// not touch is allowed and reported.
		targets = append(targets, "--target", filepath.Join(src, "libcase.so"))
	}
	if s.Strip {
		shipStripped(t, prog)
	}
	fix, err := filepath.Abs(filepath.Join(dir, "fix.diff"))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(work, name+".hfp")
	before := treeHash(t, src)

	p := lptest.StartGrandchild(t, prog)
	expectLines(t, p, "before the patch", s.Before)

	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	args := slices.Concat([]string{"patch", "build", "--source", src, "--fix", fix}, targets, []string{"--id", name, "--json", "-o", out})
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	if treeHash(t, src) != before {
		t.Errorf("patch build changed the source tree %s", src)
	}

	if s.Refuse != "" {
		if runErr == nil {
			t.Fatalf("patch build succeeded, want a refusal naming %q; it printed:\n%s", s.Refuse, stdout.String())
		}
		var ee *exec.ExitError
		if !errors.As(runErr, &ee) {
			t.Fatalf("patch build did not run: %v", runErr)
		}
		// stderr also carries the build's output, which names every
		// file: only hotfleet's own error counts.
		msg := errorMessage(stderr.String())
		if !strings.Contains(msg, s.Refuse) {
			t.Errorf("refusal does not name %q; patch build printed:\n%s", s.Refuse, msg)
		}
		if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("refused build left a bundle at %s (stat: %v)", out, err)
		}
		t.Logf("refused as expected: %s", msg)
		after := s.Reverted
		if len(after) == 0 {
			after = s.Before
		}
		expectLines(t, p, "after the refusal", after)
		return
	}
	if runErr != nil {
		t.Fatalf("patch build: %v\n%s", runErr, lastLines(stderr.String(), 15))
	}
	var sum struct {
		Modules []struct {
			Changed []struct {
				Name string `json:"name"`
			} `json:"changed"`
			New []string `json:"new"`
		} `json:"modules"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &sum); err != nil {
		t.Fatalf("patch build --json printed no summary (%v):\n%s", err, stdout.String())
	}
	var changed, added []string
	for _, m := range sum.Modules {
		for _, c := range m.Changed {
			changed = append(changed, c.Name)
		}
		added = append(added, m.New...)
	}
	checkChanges(t, s, changed, added, true)
	t.Logf("changed %v, new %v", changed, added)
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("patch build exited 0 but wrote no bundle: %v", err)
	}
	b, err := bundle.Decode(data)
	if err != nil {
		t.Fatalf("decode %s: %v", out, err)
	}
	if _, err := livepatch.Apply(ctx, p.Pid, b, livepatch.Options{}); err != nil {
		t.Fatalf("apply: %v", err)
	}
	expectLines(t, p, "with the patch applied", s.After)
	if len(s.After2) > 0 {
		// Level 2: the cumulative fix, built against the same shipped
		// program, replaces level 1 in the running process.
		fix2, err := filepath.Abs(filepath.Join(dir, "fix2.diff"))
		if err != nil {
			t.Fatal(err)
		}
		out2 := filepath.Join(work, name+"-2.hfp")
		cmd := exec.CommandContext(ctx, bin, slices.Concat([]string{"patch", "build", "--source", src, "--fix", fix2}, targets,
			[]string{"--id", name, "--level", "2", "-o", out2})...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("patch build level 2: %v\n%s", err, lastLines(string(out), 15))
		}
		data, err := os.ReadFile(out2)
		if err != nil {
			t.Fatal(err)
		}
		b2, err := bundle.Decode(data)
		if err != nil {
			t.Fatalf("decode %s: %v", out2, err)
		}
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

// debugRoot is where distributions install the debug symbols of their
// binaries (the -dbgsym packages), by build-id.
const debugRoot = "/usr/lib/debug/.build-id"

// shipStripped strips prog as a distribution package ships it and installs
// its symbols the way the package's -dbgsym companion does, under
// debugRoot, until the test ends. The driver's own rebuild cannot stand in
// for the symbols: its compiler flags differ, so its build-id does.
func shipStripped(t *testing.T, prog string) {
	t.Helper()
	dir := filepath.Dir(prog)
	run(t, dir, "objcopy", "--only-keep-debug", prog, prog+".debug")
	run(t, dir, "strip", "--strip-all", prog)
	hexID := buildID(t, prog)
	sub := filepath.Join(debugRoot, hexID[:2])
	dst := filepath.Join(sub, hexID[2:]+".debug")
	if _, err := os.Stat(dst); err == nil {
		t.Fatalf("%s exists already: another build with this build-id is installed", dst)
	}
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatalf("install the debug symbols: %v", err)
	}
	data, err := os.ReadFile(prog + ".debug")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o644); err != nil {
		t.Fatalf("install the debug symbols: %v", err)
	}
	t.Cleanup(func() {
		os.Remove(dst)
		os.Remove(sub) // only when empty
	})
}

// buildID returns the GNU build-id of an ELF file in hex.
func buildID(t *testing.T, path string) string {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sec := f.Section(".note.gnu.build-id")
	if sec == nil {
		t.Fatalf("%s has no build-id", path)
	}
	data, err := sec.Data()
	if err != nil || len(data) < 16 {
		t.Fatalf("%s: read the build-id note: %v", path, err)
	}
	namesz := binary.LittleEndian.Uint32(data[0:])
	descsz := binary.LittleEndian.Uint32(data[4:])
	start := 12 + (namesz+3)&^3
	if descsz < 2 || uint64(start)+uint64(descsz) > uint64(len(data)) {
		t.Fatalf("%s: malformed build-id note", path)
	}
	return fmt.Sprintf("%x", data[start:start+descsz])
}

// makefile writes the build a project of the case's sources would have:
// the compiler from $(CC)/$(CXX), the case's flags, no patch flags (the
// --source driver adds those).
func makefile(s *spec) string {
	cflags := s.CFlags
	if len(cflags) == 0 {
		cflags = []string{"-O2"}
	}
	model, exeModel, ldflags := "-fPIE", "-fPIE", "-pie"
	switch s.Link {
	case "nopie":
		model, exeModel, ldflags = "-fno-pie", "-fno-pie", "-no-pie"
	case "shared":
		model = "-fPIC"
		if s.MainLink == "nopie" {
			exeModel, ldflags = "-fno-pie", "-no-pie"
		}
	}
	linker := "$(CC)"
	if s.Lang == "c++" {
		linker = "$(CXX)"
	}
	objs := func(srcs []string) string {
		var o []string
		for _, src := range srcs {
			o = append(o, strings.TrimSuffix(src, filepath.Ext(src))+".o")
		}
		return strings.Join(o, " ")
	}
	libs := strings.Join(slices.Concat(s.LDFlags, s.LDLibs), " ")
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by the corpus runner: the case's sources as a make project.\n")
	fmt.Fprintf(&b, "FLAGS = %s\nMODULE_FLAGS = %s\nEXE_FLAGS = %s\n\n", strings.Join(cflags, " "), model, exeModel)
	deps := ""
	if len(s.Deps) > 0 {
		deps = "libdep.so"
		libs = "-L. -ldep -Wl,-rpath,'$$ORIGIN' " + libs
	}
	switch s.Link {
	case "shared":
		linkLib := "-L. -lcase -Wl,-rpath,'$$ORIGIN'"
		if s.DLOpen {
			linkLib = ""
			fmt.Fprintf(&b, "all: prog libcase.so\n\n")
		}
		fmt.Fprintf(&b, "prog: %s corpus_driver.o libcase.so %s\n\t%s %s %s corpus_driver.o %s %s -o $@\n\n",
			objs(s.Main), deps, linker, ldflags, objs(s.Main), linkLib, libs)
		fmt.Fprintf(&b, "libcase.so: %s %s\n\t%s -shared %s %s -o $@\n\n", objs(s.Sources), deps, linker, objs(s.Sources), libs)
		for _, src := range s.Main {
			fmt.Fprintf(&b, "%s: EXTRA = $(EXE_FLAGS)\n", objs([]string{src}))
		}
	default:
		fmt.Fprintf(&b, "prog: %s corpus_driver.o %s\n\t%s %s %s corpus_driver.o %s -o $@\n\n",
			objs(s.Sources), deps, linker, ldflags, objs(s.Sources), libs)
	}
	for _, src := range s.Sources {
		fmt.Fprintf(&b, "%s: EXTRA = $(MODULE_FLAGS)\n", objs([]string{src}))
	}
	fmt.Fprintf(&b, "corpus_driver.o: EXTRA = $(EXE_FLAGS)\n")
	if len(s.Deps) > 0 {
		fmt.Fprintf(&b, "libdep.so: %s\n\t$(CC) -shared %s -o $@\n", objs(s.Deps), objs(s.Deps))
		for _, src := range s.Deps {
			fmt.Fprintf(&b, "%s: EXTRA = -fPIC\n", objs([]string{src}))
		}
	}
	b.WriteString(`
%.o: %.c
	$(CC) $(FLAGS) $(EXTRA) -c $< -o $@
%.o: %.cpp
	$(CXX) $(FLAGS) $(EXTRA) -c $< -o $@
%.o: %.S
	$(CC) $(FLAGS) $(EXTRA) -c $< -o $@
`)
	return b.String()
}

// treeHash digests every file's path and content under dir.
func treeHash(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00", p, len(data))
		h.Write(data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}

// errorMessage returns hotfleet's error: from the last line that starts
// with "hotfleet: " to the end.
func errorMessage(stderr string) string {
	i := strings.LastIndex(stderr, "\nhotfleet: ")
	if i < 0 {
		if strings.HasPrefix(stderr, "hotfleet: ") {
			return strings.TrimSpace(stderr)
		}
		return ""
	}
	return strings.TrimSpace(stderr[i+1:])
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
