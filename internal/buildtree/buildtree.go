// Package buildtree builds a patch bundle from a source tree and a fix: it
// builds a copy of the tree twice, before and after the fix, through a
// compiler wrapper that logs every compile and link and adds the flags the
// object differ needs, finds the objects the fix changed and the modules they
// are linked into, and runs the patch builder once per module.
//
// Trust: the source tree and its build system are trusted as much as running
// "make" in them is; the tree is never modified (the builds run in a copy).
// The targets are untrusted ELF files, read through elfx.
package buildtree

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"hotfleet/internal/build"
	"hotfleet/internal/bundle"
)

// Options describe one build from source.
type Options struct {
	Source  string   // the source tree the shipped binaries were built from
	Fix     string   // unified diff against Source
	Targets []string // the executables and shared libraries the processes run
	// Symbols are unstripped builds standing in for stripped targets: the
	// same build (build-id), or a rebuild whose loaded code and data are
	// identical (a distribution's package rebuilt from its source). Each
	// serves the target with its build-id, or else its file name.
	Symbols  []string
	BuildCmd string // shell command that builds the tree; empty: detected
	// Work is the working directory (created; must be empty). Empty: a
	// temporary directory, removed at the end unless KeepWork.
	Work     string
	KeepWork bool
	// Wrapper is the hotfleet binary that acts as the compiler; empty: the
	// running executable.
	Wrapper string
	// Output receives the build systems' output as it runs; nil discards it
	// (it is still kept in WORK/logs).
	Output io.Writer

	ID             string
	Level          uint32
	CVEs           []string
	Description    string
	Quiescent      bool
	QuiescentFuncs []string
}

// Unit is one changed source file of a module.
type Unit struct {
	Source  string // relative to the tree
	Orig    string // object of the original build (in WORK)
	Patched string // object of the fixed build (in WORK)
}

// Module is the part of the bundle for one target.
type Module struct {
	Target   string
	BuildID  string
	FileSize int64
	Symbols  string // unstripped stand-in for a stripped target
	Units    []Unit
	Result   *build.Result
}

// Result is what a build from source produced.
type Result struct {
	Bundle    *bundle.Bundle
	Modules   []Module
	Untouched []string // targets no changed object is linked into
	Notes     []string // patch's offsets and fuzz, line markers added
	Work      string   // the working directory, when kept
}

// Errors a caller may test for. Each is wrapped with the file it is about
// and what to do.
var (
	ErrBadInput     = errors.New("bad input")
	ErrBuildFailed  = errors.New("build failed")
	ErrNotPatchable = errors.New("the fix cannot be hot patched")
)

// tailLines is how much of a failing build's output an error shows.
const tailLines = 25

type driver struct {
	opts     Options
	src      string // absolute Source
	work     string
	tree     string
	fix      *fix
	changed  map[string]bool // absolute paths in the tree of files the fix changes
	compiled map[string]bool // the changed files a compile of the first build read
	// sourceDate is SOURCE_DATE_EPOCH for both builds when the caller's
	// environment has none.
	sourceDate string
	cmd1       string
	cmd2       string
	targets    []targetInfo
	notes      []string
	origObjs   map[string]string // object in the tree -> its copy from the first build
	links      []linked          // the first build's link commands
}

// linked is one link of the first build: its output and the objects in it.
type linked struct {
	out  string
	objs map[string]bool
	info elfInfo // of the output as the first build made it
}

type targetInfo struct {
	path string
	elfInfo
	size int64
}

// Build runs the whole build. On an error before the first build starts,
// nothing has been created.
func Build(ctx context.Context, opts Options) (res *Result, err error) {
	d := &driver{opts: opts}
	if err := d.validate(ctx); err != nil {
		return nil, err
	}
	keep := opts.KeepWork || opts.Work != ""
	if err := d.makeWork(); err != nil {
		return nil, err
	}
	defer func() {
		if !keep {
			os.RemoveAll(d.work)
		} else if res != nil {
			res.Work = d.work
		}
		if err != nil && keep {
			err = fmt.Errorf("%w (work directory kept: %s)", err, d.work)
		}
	}()
	return d.run(ctx)
}

func (d *driver) validate(ctx context.Context) error {
	o := d.opts
	if o.Source == "" || o.Fix == "" || len(o.Targets) == 0 {
		return fmt.Errorf("%w: a build from source needs the source tree, the fix and at least one target", ErrBadInput)
	}
	// The bundle's own fields are checked now, not after two builds. A
	// bundle without modules fails only for lacking them.
	meta := bundle.Bundle{ID: o.ID, Level: o.Level, CVEs: o.CVEs, Description: o.Description}
	if err := meta.Validate(); err != nil && !strings.HasSuffix(err.Error(), ": no modules") {
		return fmt.Errorf("%w: %v", ErrBadInput, err)
	}
	src, err := filepath.Abs(o.Source)
	if err != nil {
		return fmt.Errorf("%w: source %s: %v", ErrBadInput, o.Source, err)
	}
	st, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("%w: source tree %s: %v; give the directory the shipped binaries were built from", ErrBadInput, o.Source, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("%w: source tree %s is not a directory; give the directory the shipped binaries were built from", ErrBadInput, o.Source)
	}
	d.src = src
	if _, err := exec.LookPath("patch"); err != nil {
		return fmt.Errorf("%w: the patch program is needed to apply the fix: install it (apt-get install patch)", ErrBadInput)
	}
	if d.fix, err = checkFix(ctx, src, o.Fix); err != nil {
		return fmt.Errorf("%w: %w", ErrBadInput, err)
	}
	onlyBuild := true
	for _, f := range d.fix.files {
		if !isBuildFile(f) {
			onlyBuild = false
		}
	}
	if onlyBuild {
		return fmt.Errorf("%w: the fix %s changes only build files (%s): a hot patch replaces functions, not build settings; ship a restart update", ErrNotPatchable, o.Fix, strings.Join(d.fix.files, ", "))
	}
	seen := map[string]string{}
	for _, t := range o.Targets {
		info, err := readELFInfo(t)
		if err != nil {
			return fmt.Errorf("%w: target %s: %v; give the executable or shared library the processes run", ErrBadInput, t, err)
		}
		if len(info.buildID) == 0 {
			return fmt.Errorf("%w: target %s has no GNU build-id: hotfleet identifies modules by build-id; link it with -Wl,--build-id (the default of Debian's gcc)", ErrBadInput, t)
		}
		id := hex.EncodeToString(info.buildID)
		if prev, ok := seen[id]; ok {
			return fmt.Errorf("%w: targets %s and %s are the same module (build-id %s): give it once", ErrBadInput, prev, t, id)
		}
		seen[id] = t
		st, _ := os.Stat(t)
		abs, _ := filepath.Abs(t)
		d.targets = append(d.targets, targetInfo{path: abs, elfInfo: info, size: st.Size()})
	}
	if d.cmd1, d.cmd2, err = buildCommands(src, o.BuildCmd); err != nil {
		return err
	}
	if o.Work != "" {
		w, err := filepath.Abs(o.Work)
		if err != nil {
			return fmt.Errorf("%w: work directory %s: %v", ErrBadInput, o.Work, err)
		}
		if w == src || strings.HasPrefix(w, src+string(filepath.Separator)) {
			return fmt.Errorf("%w: work directory %s is inside the source tree %s: choose a directory outside it", ErrBadInput, o.Work, o.Source)
		}
		if ents, err := os.ReadDir(w); err == nil && len(ents) > 0 {
			return fmt.Errorf("%w: work directory %s is not empty: give a new or empty directory", ErrBadInput, o.Work)
		} else if err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("%w: work directory %s: %v", ErrBadInput, o.Work, err)
		}
		d.work = w
	}
	if d.opts.Wrapper == "" {
		if d.opts.Wrapper, err = os.Executable(); err != nil {
			return fmt.Errorf("find the hotfleet executable to use as the compiler wrapper: %w", err)
		}
	}
	return nil
}

// buildCommands returns the first (full) and second (incremental) build
// commands.
func buildCommands(src, given string) (first, second string, err error) {
	if given != "" {
		return given, given, nil
	}
	has := func(n string) bool { return fileExists(filepath.Join(src, n)) }
	switch {
	case has("CMakeLists.txt") && has("CMakeCache.txt"):
		// Configured in place: its Makefiles name DIR by absolute path and
		// would build there. The copy drops the cache and configures anew.
		return "cmake -S . -B _hfbuild && cmake --build _hfbuild", "cmake --build _hfbuild", nil
	case has("Makefile") || has("GNUmakefile") || has("makefile"):
		return "make", "make", nil
	case has("configure"):
		return "./configure && make", "make", nil
	case has("CMakeLists.txt"):
		return "cmake -S . -B _hfbuild && cmake --build _hfbuild", "cmake --build _hfbuild", nil
	case has("meson.build"):
		return "meson setup _hfbuild && ninja -C _hfbuild", "ninja -C _hfbuild", nil
	}
	return "", "", fmt.Errorf("%w: %s has no Makefile, configure, CMakeLists.txt or meson.build: give the command that builds it with --build-cmd", ErrBadInput, src)
}

func (d *driver) makeWork() error {
	var err error
	if d.work == "" {
		if d.work, err = os.MkdirTemp("", "hotfleet-build-"); err != nil {
			return fmt.Errorf("create a work directory: %w", err)
		}
	}
	for _, sub := range []string{"bin", "deps", "logs", "orig-objs", "pre-fix", "orig-links"} {
		if err := os.MkdirAll(filepath.Join(d.work, sub), 0o755); err != nil {
			return fmt.Errorf("create the work directory %s: %w", d.work, err)
		}
	}
	d.tree = filepath.Join(d.work, "tree")
	return nil
}

func (d *driver) run(ctx context.Context) (*Result, error) {
	d.sourceDate = sourceDateEpoch(ctx, d.src)
	if err := d.copyTree(ctx); err != nil {
		return nil, err
	}
	if err := d.linkWrappers(); err != nil {
		return nil, err
	}
	log1 := filepath.Join(d.work, "logs", "compile1.jsonl")
	if err := d.runBuild(ctx, "original", d.cmd1, log1); err != nil {
		return nil, err
	}
	invs1, err := readLog(log1)
	if err != nil {
		return nil, fmt.Errorf("read the compiler log %s: %w", log1, err)
	}
	if !anyCompile(invs1) {
		return nil, fmt.Errorf("%w: the original build (%s) compiled nothing through the compiler wrapper: it calls the compiler by an absolute path or found everything up to date; make it use cc/gcc from PATH or $CC, or give --build-cmd (log: %s)", ErrBuildFailed, d.cmd1, log1)
	}
	if err := d.keepOriginal(invs1); err != nil {
		return nil, err
	}
	if err := d.applyFix(ctx, invs1); err != nil {
		return nil, err
	}
	log2 := filepath.Join(d.work, "logs", "compile2.jsonl")
	if err := d.runBuild(ctx, "fixed", d.cmd2, log2); err != nil {
		return nil, err
	}
	invs2, err := readLog(log2)
	if err != nil {
		return nil, fmt.Errorf("read the compiler log %s: %w", log2, err)
	}
	units, err := d.changedUnits(invs2)
	if err != nil {
		return nil, err
	}
	mods, untouched, err := d.mapUnits(units)
	if err != nil {
		return nil, err
	}
	return d.buildBundle(ctx, mods, untouched)
}

// copyTree copies the source tree, keeping modification times so make sees
// the same state, and removes the objects a previous build left (ELF
// relocatable files, and libtool's .lo notes), so the first build compiles
// every file through the wrapper. Archives and linked files stay: the build
// remakes them from the newer objects.
func (d *driver) copyTree(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, "cp", "-a", d.src, d.tree)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("copy %s to %s: %v\n%s", d.src, d.tree, err, out)
	}
	if fileExists(filepath.Join(d.tree, "CMakeCache.txt")) && fileExists(filepath.Join(d.tree, "CMakeLists.txt")) {
		os.Remove(filepath.Join(d.tree, "CMakeCache.txt"))
		os.RemoveAll(filepath.Join(d.tree, "CMakeFiles"))
	}
	return filepath.WalkDir(d.tree, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() || !e.Type().IsRegular() {
			return nil
		}
		switch filepath.Ext(p) {
		case ".lo":
			os.Remove(p)
		case ".o", ".obj":
			if isRelocatable(p) {
				os.Remove(p)
			}
		}
		return nil
	})
}

// isRelocatable reports whether p is an ELF relocatable object.
func isRelocatable(p string) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	var h [18]byte
	if _, err := io.ReadFull(f, h[:]); err != nil {
		return false
	}
	// e_type (little-endian) at offset 16: ET_REL is 1.
	return string(h[:4]) == "\x7fELF" && h[16] == 1 && h[17] == 0
}

// linkWrappers makes WORK/bin/NAME -> hotfleet for every compiler name the
// build may call: the usual ones and every versioned or triplet-prefixed
// gcc in PATH.
func (d *driver) linkWrappers() error {
	names := map[string]bool{"cc": true, "gcc": true, "c++": true, "g++": true}
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if IsWrapperName(e.Name()) {
				names[e.Name()] = true
			}
		}
	}
	for n := range names {
		if err := os.Symlink(d.opts.Wrapper, filepath.Join(d.work, "bin", n)); err != nil {
			return fmt.Errorf("create the compiler wrapper %s: %w", n, err)
		}
	}
	return nil
}

func (d *driver) buildEnv(log string) []string {
	bin := filepath.Join(d.work, "bin")
	// ccache's compiler links would call the wrapper again, and the wrapper
	// them: leave them out.
	path := []string{bin}
	for _, p := range filepath.SplitList(os.Getenv("PATH")) {
		if !strings.Contains(p, "ccache") {
			path = append(path, p)
		}
	}
	env := []string{
		"PATH=" + strings.Join(path, string(filepath.ListSeparator)),
		"CC=" + filepath.Join(bin, "cc"),
		"CXX=" + filepath.Join(bin, "c++"),
		envLog + "=" + log,
		envBin + "=" + bin,
		envDeps + "=" + filepath.Join(d.work, "deps"),
		envTree + "=" + d.tree,
		envSource + "=" + d.src,
	}
	// A C compiler the user chose with CC stays the real one.
	if cc := os.Getenv("CC"); cc != "" && !strings.ContainsAny(cc, " \t") {
		if p, err := exec.LookPath(cc); err == nil {
			env = append(env, envRealCC+"="+p)
		}
	}
	if cxx := os.Getenv("CXX"); cxx != "" && !strings.ContainsAny(cxx, " \t") {
		if p, err := exec.LookPath(cxx); err == nil {
			env = append(env, envRealCXX+"="+p)
		}
	}
	// __DATE__ and __TIME__ must not differ between the two builds; a
	// Debian tree gets the date its package build uses.
	if os.Getenv("SOURCE_DATE_EPOCH") == "" {
		env = append(env, "SOURCE_DATE_EPOCH="+d.sourceDate)
	}
	skip := map[string]bool{"PATH": true, "CC": true, "CXX": true, envNested: true}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !skip[k] && !strings.HasPrefix(k, "HOTFLEET_") {
			env = append(env, kv)
		}
	}
	return env
}

// tailWriter keeps the last lines written to it.
type tailWriter struct{ buf []byte }

func (t *tailWriter) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > 64<<10 {
		t.buf = t.buf[len(t.buf)-32<<10:]
	}
	return len(p), nil
}

func (t *tailWriter) last(n int) string {
	lines := strings.Split(strings.TrimRight(string(t.buf), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (d *driver) runBuild(ctx context.Context, which, command, log string) error {
	outPath := filepath.Join(d.work, "logs", "build-"+which+".out")
	f, err := os.Create(outPath)
	if err != nil {
		return fmt.Errorf("create the build log %s: %w", outPath, err)
	}
	defer f.Close()
	tail := &tailWriter{}
	w := io.MultiWriter(f, tail)
	if d.opts.Output != nil {
		w = io.MultiWriter(f, tail, d.opts.Output)
		fmt.Fprintf(d.opts.Output, "hotfleet: %s build in %s: %s\n", which, d.tree, command)
	}
	cmd := exec.CommandContext(ctx, "sh", "-c", command)
	// On cancel, stop the whole build (make's children too), not only sh.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.Dir = d.tree
	cmd.Env = d.buildEnv(log)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w: the %s build (%s, in a copy of %s) failed: %v; its last lines:\n%s\nfull output: %s; fix the build or give the right command with --build-cmd",
			ErrBuildFailed, which, command, d.src, err, indent(tail.last(tailLines)), outPath)
	}
	return nil
}

// keepOriginal copies every object the first build compiled, and every
// linked file whose build-id is a stripped target's.
func (d *driver) keepOriginal(invs []Invocation) error {
	d.origObjs = map[string]string{}
	stripped := map[string]bool{}
	for _, t := range d.targets {
		if !t.symtab {
			stripped[string(t.buildID)] = true
		}
	}
	for i := range invs {
		inv := &invs[i]
		out := inv.abs(inv.Output)
		switch {
		case inv.Compile && out != "":
			if _, done := d.origObjs[out]; done || !fileExists(out) {
				continue
			}
			rel, err := filepath.Rel(d.tree, out)
			if err != nil || strings.HasPrefix(rel, "..") {
				sum := sha256.Sum256([]byte(out))
				rel = filepath.Join("outside", hex.EncodeToString(sum[:8]), filepath.Base(out))
			}
			dst := filepath.Join(d.work, "orig-objs", rel)
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return fmt.Errorf("keep the original objects: %w", err)
			}
			if err := copyFile(out, dst); err != nil {
				return fmt.Errorf("keep the original object %s: %w", out, err)
			}
			d.origObjs[out] = dst
		}
	}
	// Archives are rebuilt by the second build: read what the links
	// contain now. Objects are recognised in archives by content.
	byHash := map[[32]byte][]string{}
	for obj, cp := range d.origObjs {
		if b, err := os.ReadFile(cp); err == nil {
			s := sha256.Sum256(b)
			byHash[s] = append(byHash[s], obj)
		}
	}
	for i := range invs {
		inv := &invs[i]
		if !inv.Link || inv.Output == "" {
			continue
		}
		l := linked{out: inv.abs(inv.Output), objs: map[string]bool{}}
		for _, o := range linkedObjects(inv, byHash) {
			l.objs[o] = true
		}
		l.info, _ = readELFInfo(l.out)
		d.links = append(d.links, l)
		if stripped[string(l.info.buildID)] {
			copyFile(l.out, filepath.Join(d.work, "orig-links", hex.EncodeToString(l.info.buildID)))
		}
	}
	return nil
}

// applyFix applies the fix in the copy, adds the line markers, and removes
// every object that depends on a changed file so the incremental build
// cannot miss one.
func (d *driver) applyFix(ctx context.Context, invs []Invocation) error {
	d.changed = map[string]bool{}
	d.compiled = map[string]bool{}
	for _, f := range d.fix.files {
		p := filepath.Join(d.tree, f)
		d.changed[p] = true
		if isAsmSource(f) {
			for i := range invs {
				for _, s := range invs[i].Sources {
					if invs[i].abs(s) == p {
						return fmt.Errorf("%w: %s changed: assembly is not hot-patchable; make the fix in C or ship a restart update", ErrNotPatchable, f)
					}
				}
			}
		}
		if fileExists(p) {
			dst := filepath.Join(d.work, "pre-fix", f)
			os.MkdirAll(filepath.Dir(dst), 0o755)
			if err := copyFile(p, dst); err != nil {
				return fmt.Errorf("keep %s before the fix: %w", f, err)
			}
		}
	}
	if out, err := runPatch(ctx, d.tree, d.fix.path, d.fix.strip, false); err != nil {
		return fmt.Errorf("apply the fix %s in %s: %v\n%s", d.fix.path, d.tree, err, indent(out))
	}
	d.notes = append(d.notes, d.fix.notes...)
	for _, f := range d.fix.files {
		pre := filepath.Join(d.work, "pre-fix", f)
		post := filepath.Join(d.tree, f)
		if !isCSource(f) || !fileExists(pre) || !fileExists(post) {
			continue
		}
		n, err := addLineMarkers(ctx, pre, post)
		if err != nil {
			return fmt.Errorf("keep line numbers of %s: %w", f, err)
		}
		if n > 0 {
			d.notes = append(d.notes, fmt.Sprintf("%s: %d #line marker(s) keep the original line numbers after the changed lines", f, n))
		}
	}
	for i := range invs {
		inv := &invs[i]
		if !inv.Compile {
			continue
		}
		hit := false
		for _, s := range inv.Sources {
			if d.changed[inv.abs(s)] {
				hit = true
				d.compiled[inv.abs(s)] = true
			}
		}
		if inv.Deps != "" {
			for _, dep := range readDeps(inv.Deps, inv.Cwd) {
				if d.changed[dep] {
					hit = true
					d.compiled[dep] = true
				}
			}
		}
		if hit {
			os.Remove(inv.abs(inv.Output))
		}
	}
	return nil
}

// changedUnits compares the objects of the second build with the first.
func (d *driver) changedUnits(invs []Invocation) ([]Unit, error) {
	var units []Unit
	seen := map[string]bool{}
	var sawLink []string
	for i := range invs {
		inv := &invs[i]
		if inv.Link && !inv.Compile {
			for _, s := range inv.Sources {
				if d.changed[inv.abs(s)] {
					sawLink = append(sawLink, d.rel(inv.abs(s)))
				}
			}
		}
		if !inv.Compile {
			continue
		}
		out := inv.abs(inv.Output)
		if seen[out] {
			continue
		}
		seen[out] = true
		src := ""
		if len(inv.Sources) > 0 {
			src = d.rel(inv.abs(inv.Sources[0]))
		}
		orig, ok := d.origObjs[out]
		if !ok {
			for _, s := range inv.Sources {
				if d.changed[inv.abs(s)] {
					return nil, fmt.Errorf("%w: the fix adds the source file %s (object %s): a hot patch cannot add a compilation unit; move the new code into a file the target already has", ErrNotPatchable, src, d.rel(out))
				}
			}
			continue
		}
		a, err1 := os.ReadFile(orig)
		b, err2 := os.ReadFile(out)
		if err1 != nil || err2 != nil {
			continue
		}
		if bytes.Equal(a, b) {
			continue
		}
		if inv.Asm {
			return nil, fmt.Errorf("%w: %s changed: assembly is not hot-patchable; make the fix in C or ship a restart update", ErrNotPatchable, src)
		}
		if inv.LTO || hasLTO(out) {
			return nil, fmt.Errorf("%w: %s is an LTO object (built with -flto): its code is only generated at link time, so it cannot be compared function by function; build without -flto (e.g. --build-cmd with CFLAGS lacking -flto, if the shipped binary was built that way) or ship a restart update", ErrNotPatchable, d.rel(out))
		}
		units = append(units, Unit{Source: src, Orig: orig, Patched: out})
	}
	if len(units) == 0 {
		if len(sawLink) > 0 {
			return nil, fmt.Errorf("%w: %s is compiled and linked in one command, so there is no object to compare; build it with -c and link the object (change --build-cmd or the build files)", ErrNotPatchable, strings.Join(sawLink, ", "))
		}
		var unread []string
		for _, f := range d.fix.files {
			if isCSource(f) && !d.compiled[filepath.Join(d.tree, f)] {
				unread = append(unread, f)
			}
		}
		why := ""
		if len(unread) > 0 {
			why = fmt.Sprintf("; no compile of the build read %s: check that this configuration builds it", strings.Join(unread, ", "))
		}
		return nil, fmt.Errorf("%w: the fix changes nothing compiled: after rebuilding, no object differs from the original build (changed files: %s)%s", ErrNotPatchable, strings.Join(d.fix.files, ", "), why)
	}
	return units, nil
}

func (d *driver) rel(p string) string {
	if r, err := filepath.Rel(d.tree, p); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return p
}

// mapUnits assigns each changed unit to the targets it is linked into.
func (d *driver) mapUnits(units []Unit) ([]Module, []string, error) {
	outs := d.links
	matches := func(t *targetInfo, l *linked) bool {
		base := filepath.Base(t.path)
		return bytes.Equal(t.buildID, l.info.buildID) || filepath.Base(l.out) == base ||
			(l.info.soname != "" && (l.info.soname == base || l.info.soname == t.soname))
	}
	mods := make([]Module, len(d.targets))
	for i, t := range d.targets {
		mods[i] = Module{Target: t.path, BuildID: hex.EncodeToString(t.buildID), FileSize: t.size}
	}
	// Targets no link output matches by build-id, name or soname: installed
	// under another name (/usr/bin/lua5.4 from src/lua). Only their symbols
	// can tell which units they hold.
	var renamed []int
	for ti := range d.targets {
		found := false
		for li := range outs {
			found = found || matches(&d.targets[ti], &outs[li])
		}
		if !found {
			renamed = append(renamed, ti)
		}
	}
	// First what the link commands say; then, for units no logged link
	// used, the targets' symbols.
	var unlogged []Unit
	type placedElsewhere struct {
		u    Unit
		into []string
	}
	var elsewhere []placedElsewhere // units linked only into modules no target names
	logged := map[string]bool{}     // sources with a compile placed by the log
	for _, u := range units {
		placed := false
		var into []string
		for li := range outs {
			if !outs[li].objs[u.Patched] {
				continue
			}
			into = append(into, d.rel(outs[li].out))
			for ti := range d.targets {
				if matches(&d.targets[ti], &outs[li]) && !hasUnit(mods[ti].Units, u) {
					mods[ti].Units = append(mods[ti].Units, u)
					placed = true
				}
			}
		}
		switch {
		case placed:
			logged[u.Source] = true
		case len(into) == 0:
			unlogged = append(unlogged, u)
		case d.placeBySymbols(u, mods, renamed):
			logged[u.Source] = true
		default:
			elsewhere = append(elsewhere, placedElsewhere{u, into})
		}
	}
	for _, e := range elsewhere {
		where := strings.Join(e.into, ", ")
		if logged[e.u.Source] {
			// Another compile of the same file (libtool's PIC copy for the
			// shared library) went into a target; this one (the static
			// library's) only into modules that are not targets.
			d.notes = append(d.notes, fmt.Sprintf("%s: the object %s goes only into %s, which no --target names; its other compile is in the bundle", e.u.Source, d.rel(e.u.Patched), where))
			continue
		}
		return nil, nil, fmt.Errorf("%w: %s changed, and it is linked into %s, but no --target is that module; add --target for the installed copy of %s", ErrNotPatchable, e.u.Source, where, where)
	}
	for _, u := range unlogged {
		if logged[u.Source] {
			// Another compile of the same file (libtool's non-PIC copy for
			// the static library, archived by ar) went into a target.
			d.notes = append(d.notes, fmt.Sprintf("%s: the second object %s is in no linked module; its other compile is in the bundle", u.Source, d.rel(u.Patched)))
			continue
		}
		all := make([]int, len(d.targets))
		for i := range all {
			all[i] = i
		}
		if !d.placeBySymbols(u, mods, all) {
			return nil, nil, fmt.Errorf("%w: %s changed (object %s), but the build log shows no link of it and no --target has its symbols; add --target for the module it is built into", ErrNotPatchable, u.Source, d.rel(u.Patched))
		}
	}
	var used []Module
	var untouched []string
	for _, m := range mods {
		if len(m.Units) == 0 {
			untouched = append(untouched, m.Target)
			continue
		}
		used = append(used, m)
	}
	return used, untouched, nil
}

// sourceDateEpoch is the date of debian/changelog's latest entry, as
// Debian's package builds use it, or else now.
func sourceDateEpoch(ctx context.Context, src string) string {
	if fileExists(filepath.Join(src, "debian", "changelog")) {
		cmd := exec.CommandContext(ctx, "dpkg-parsechangelog", "-STimestamp")
		cmd.Dir = src
		if out, err := cmd.Output(); err == nil {
			if ts := strings.TrimSpace(string(out)); ts != "" {
				return ts
			}
		}
	}
	return strconv.FormatInt(time.Now().Unix(), 10)
}

// placeBySymbols adds u to each of the targets (indices) whose symbols hold
// its source file and functions, and reports whether it placed it.
func (d *driver) placeBySymbols(u Unit, mods []Module, targets []int) bool {
	if len(targets) == 0 {
		return false
	}
	file, funcs := unitSymbols(u.Orig)
	placed := false
	for _, ti := range targets {
		t := &d.targets[ti]
		syms := t.path
		if !t.symtab {
			syms = d.symbolsFor(t)
		}
		if syms != "" && targetHasUnit(syms, file, funcs) && !hasSource(mods[ti].Units, u.Source) {
			mods[ti].Units = append(mods[ti].Units, u)
			placed = true
			d.notes = append(d.notes, fmt.Sprintf("%s: placed in %s by its symbols (no linked file has its name or build-id)", u.Source, t.path))
		}
	}
	return placed
}

func anyCompile(invs []Invocation) bool {
	for _, inv := range invs {
		if inv.Compile {
			return true
		}
	}
	return false
}

func hasSource(us []Unit, src string) bool {
	for _, x := range us {
		if x.Source == src {
			return true
		}
	}
	return false
}

func hasUnit(us []Unit, u Unit) bool {
	for _, x := range us {
		if x.Patched == u.Patched {
			return true
		}
	}
	return false
}

// debugRoot is where Debian's -dbgsym packages install separate debug
// files, named by build-id; they carry the .symtab stripped from the target.
var debugRoot = "/usr/lib/debug/.build-id"

// symbolsFor finds an unstripped file with the stripped target's build-id:
// its separate debug file, else the rebuilt original.
func (d *driver) symbolsFor(t *targetInfo) string {
	id := hex.EncodeToString(t.buildID)
	cands := []string{filepath.Join(d.work, "orig-links", id)}
	if len(id) > 2 {
		cands = append([]string{filepath.Join(debugRoot, id[:2], id[2:]+".debug")}, cands...)
	}
	for _, c := range cands {
		if info, err := readELFInfo(c); err == nil && info.symtab && bytes.Equal(info.buildID, t.buildID) {
			return c
		}
	}
	// The user's stand-ins: by build-id, then by name; the builder proves
	// that a stand-in with another build-id loads the very same bytes.
	var byName []string
	for _, c := range d.opts.Symbols {
		info, err := readELFInfo(c)
		if err != nil || !info.symtab {
			continue
		}
		if bytes.Equal(info.buildID, t.buildID) {
			return c
		}
		if filepath.Base(c) == filepath.Base(t.path) {
			byName = append(byName, c)
		}
	}
	if len(byName) == 1 {
		return byName[0]
	}
	if len(d.opts.Symbols) == 1 && len(d.targets) == 1 {
		return d.opts.Symbols[0]
	}
	return ""
}

// rebuiltIDs lists the build-ids of the first build's link outputs named like
// the target, for the error about an unreproducible build.
func (d *driver) rebuiltIDs(t *targetInfo) string {
	var ids []string
	for _, l := range d.links {
		base := filepath.Base(t.path)
		if filepath.Base(l.out) == base || (l.info.soname != "" && l.info.soname == base) {
			ids = append(ids, fmt.Sprintf("%s has build-id %s", d.rel(l.out), hex.EncodeToString(l.info.buildID)))
		}
	}
	if len(ids) == 0 {
		return "no file of that name was linked"
	}
	return strings.Join(ids, "; ")
}

func (d *driver) buildBundle(ctx context.Context, mods []Module, untouched []string) (*Result, error) {
	o := d.opts
	b := &bundle.Bundle{ID: o.ID, Level: o.Level, CVEs: o.CVEs, Description: o.Description}
	for i := range mods {
		m := &mods[i]
		var t *targetInfo
		for ti := range d.targets {
			if d.targets[ti].path == m.Target {
				t = &d.targets[ti]
			}
		}
		if !t.symtab {
			m.Symbols = d.symbolsFor(t)
			if m.Symbols == "" {
				return nil, fmt.Errorf("%w: the target %s is stripped and no unstripped file has its build-id %s (none in %s; of the rebuilt original, %s): the build is not reproducible with these flags/compiler (the wrapper adds -ffunction-sections -fdata-sections, so a binary built without them never comes out the same); give the unstripped build as --target, or install its debug symbols (the -dbgsym package)",
					ErrNotPatchable, m.Target, m.BuildID, debugRoot, d.rebuiltIDs(t))
			}
		}
		bo := build.Options{Target: m.Target, Symbols: m.Symbols, ID: o.ID, Level: o.Level, CVEs: o.CVEs,
			Description: o.Description, Quiescent: o.Quiescent, QuiescentFuncs: o.QuiescentFuncs}
		for _, u := range m.Units {
			bo.Units = append(bo.Units, build.Unit{Orig: u.Orig, Patched: u.Patched, Source: u.Source})
		}
		res, err := build.Build(ctx, bo)
		if err != nil {
			return nil, fmt.Errorf("build the patch for %s from %s: %w", m.Target, unitList(m.Units), err)
		}
		m.Result = res
		b.Modules = append(b.Modules, res.Bundle.Modules...)
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("the combined bundle is invalid: %w", err)
	}
	sort.Strings(untouched)
	return &Result{Bundle: b, Modules: mods, Untouched: untouched, Notes: d.notes}, nil
}

func unitList(us []Unit) string {
	var s []string
	for _, u := range us {
		s = append(s, u.Source)
	}
	return strings.Join(s, ", ")
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
