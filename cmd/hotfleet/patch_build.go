package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"hotfleet/internal/build"
	"hotfleet/internal/buildtree"
	"hotfleet/internal/bundle"
)

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func cmdPatchBuild(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("hotfleet patch build", flag.ContinueOnError)
	var opts build.Options
	var targets, cves, quiet, symbols stringList
	var out, source, fix, buildCmd, work string
	var keepWork, asJSON bool
	var level uint
	fs.Var(&targets, "target", "executable or shared library the processes run (repeatable with --source)")
	fs.Var(&symbols, "symbols", "unstripped build standing in for a stripped --target: the same build, or a rebuild whose code and data are identical (repeatable)")
	fs.StringVar(&opts.Orig, "orig", "", "object of the original source file")
	fs.StringVar(&opts.Patched, "patched", "", "object of the fixed source file")
	fs.StringVar(&source, "source", "", "source tree the targets were built from (builds it before and after --fix)")
	fs.StringVar(&fix, "fix", "", "unified diff to apply to --source")
	fs.StringVar(&buildCmd, "build-cmd", "", "shell command that builds --source (default: make, ./configure && make, cmake or meson, as detected)")
	fs.StringVar(&work, "work", "", "work directory for the two builds (kept); default a temporary one, removed")
	fs.BoolVar(&keepWork, "keep-work", false, "keep the temporary work directory")
	fs.BoolVar(&asJSON, "json", false, "print the summary of a --source build as JSON")
	fs.StringVar(&opts.ID, "id", "", "patch id (default: the output file name without .hfp)")
	fs.UintVar(&level, "level", 1, "patch level; a higher level replaces a lower one")
	fs.Var(&cves, "cve", "CVE id the patch fixes (repeatable)")
	fs.StringVar(&opts.Description, "description", "", "free text shown to admins")
	fs.BoolVar(&opts.Quiescent, "quiescent", false, "no thread may be inside any old function when switching")
	fs.Var(&quiet, "quiescent-func", "function that needs quiescent switching (repeatable)")
	fs.StringVar(&out, "o", "", "bundle file to write")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: patch build takes no positional arguments, got %q", errUsage, pos)
	}
	if level == 0 || level > 1<<32-1 {
		return fmt.Errorf("%w: --level %d: the level must be between 1 and %d", errUsage, level, uint32(1<<32-1))
	}
	opts.Level = uint32(level)
	if out != "" && opts.ID == "" {
		opts.ID = strings.TrimSuffix(filepath.Base(out), ".hfp")
	}
	opts.CVEs, opts.QuiescentFuncs = cves, quiet
	if source != "" || fix != "" {
		if source == "" || fix == "" || len(targets) == 0 || out == "" {
			return fmt.Errorf("%w: patch build from source needs --source DIR --fix FIX.diff --target BINARY [--target LIB ...] -o FIX.hfp", errUsage)
		}
		if opts.Orig != "" || opts.Patched != "" {
			return fmt.Errorf("%w: give either --source and --fix, or --orig and --patched, not both", errUsage)
		}
		return patchBuildFromSource(ctx, buildtree.Options{Source: source, Fix: fix, Targets: targets, Symbols: symbols, BuildCmd: buildCmd,
			Work: work, KeepWork: keepWork, Output: os.Stderr, ID: opts.ID, Level: opts.Level, CVEs: opts.CVEs,
			Description: opts.Description, Quiescent: opts.Quiescent, QuiescentFuncs: opts.QuiescentFuncs}, out, asJSON)
	}
	if len(targets) > 1 {
		return fmt.Errorf("%w: several --target need --source and --fix; --orig and --patched build for one target", errUsage)
	}
	for flagName, set := range map[string]bool{"--build-cmd": buildCmd != "", "--work": work != "", "--keep-work": keepWork, "--json": asJSON} {
		if set {
			return fmt.Errorf("%w: %s is for builds from source (--source and --fix)", errUsage, flagName)
		}
	}
	if len(targets) == 1 {
		opts.Target = targets[0]
	}
	if len(symbols) > 1 {
		return fmt.Errorf("%w: --orig and --patched build for one target, so at most one --symbols", errUsage)
	}
	if len(symbols) == 1 {
		opts.Symbols = symbols[0]
	}
	if opts.Target == "" || opts.Orig == "" || opts.Patched == "" || out == "" {
		return fmt.Errorf("%w: patch build needs --target BINARY --orig ORIG.o --patched FIXED.o -o FIX.hfp, or --source DIR --fix FIX.diff --target BINARY -o FIX.hfp", errUsage)
	}
	res, err := build.Build(ctx, opts)
	if err != nil {
		return fmt.Errorf("build patch %s for %s: %w", opts.ID, opts.Target, err)
	}
	data, err := bundle.Marshal(res.Bundle)
	if err != nil {
		return fmt.Errorf("encode patch %s: %w", opts.ID, err)
	}
	if err := writeFileAtomic(out, data); err != nil {
		return err
	}
	printSummary(os.Stdout, res, out, len(data))
	return nil
}

// patchBuildFromSource builds the tree before and after the fix and writes
// one bundle for every module the fix changes.
func patchBuildFromSource(ctx context.Context, opts buildtree.Options, out string, asJSON bool) error {
	if err := checkOutputDir(out); err != nil {
		return err
	}
	if asJSON {
		opts.Output = os.Stderr
	}
	res, err := buildtree.Build(ctx, opts)
	if err != nil {
		return fmt.Errorf("build patch %s from %s and %s: %w", opts.ID, opts.Source, opts.Fix, err)
	}
	data, err := bundle.Marshal(res.Bundle)
	if err != nil {
		return fmt.Errorf("encode patch %s: %w", opts.ID, err)
	}
	if err := writeFileAtomic(out, data); err != nil {
		return err
	}
	sum := buildtree.Summarize(res, out, len(data))
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(sum)
	}
	sum.WriteText(os.Stdout)
	return nil
}

// checkOutputDir fails early, before a long build, when the bundle could not
// be written.
func checkOutputDir(out string) error {
	dir := filepath.Dir(out)
	st, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("%w: -o %s: the directory %s: %v", errUsage, out, dir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("%w: -o %s: %s is not a directory", errUsage, out, dir)
	}
	return nil
}

func printSummary(w io.Writer, res *build.Result, out string, size int) {
	b := res.Bundle
	m := &b.Modules[0]
	fmt.Fprintf(w, "patch %s level %d for %s (build-id %s)\n", b.ID, b.Level, m.Name, m.BuildID)
	fmt.Fprintf(w, "changed functions (%d):\n", len(res.Changed))
	for _, c := range res.Changed {
		file := ""
		if c.File != "" {
			file = " (static, " + c.File + ")"
		}
		fmt.Fprintf(w, "  %s%s at %#x: %d -> %d bytes\n", c.Name, file, c.Site, c.OldSize, c.NewSize)
	}
	if len(res.New) > 0 {
		fmt.Fprintf(w, "new functions (%d): %s\n", len(res.New), strings.Join(res.New, ", "))
	}
	if len(res.Cold) > 0 {
		fmt.Fprintf(w, "cold fragments: %s\n", strings.Join(res.Cold, ", "))
	}
	fmt.Fprintf(w, "read-only data: %d bytes\n", res.RodataBytes)
	for _, d := range res.Rodata {
		fmt.Fprintf(w, "  %s: %d bytes\n", d.Name, d.Size)
	}
	if len(res.Stubs) > 0 {
		fmt.Fprintf(w, "library calls through the target's GOT (%d stubs): %s\n", len(res.Stubs), strings.Join(res.Stubs, ", "))
	}
	if len(res.GOTSlots) > 0 {
		fmt.Fprintf(w, "local GOT slots (%d): %s\n", len(res.GOTSlots), strings.Join(res.GOTSlots, ", "))
	}
	fmt.Fprintf(w, "code %d bytes, %d fixups\n", len(m.Code), len(m.Fixups))
	fmt.Fprintf(w, "wrote %s: %d bytes\n", out, size)
}

// writeFileAtomic writes data to path so that a crash leaves either the old
// file or the complete new one: temp file, fsync, rename, fsync the directory.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: flush to disk: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// inspectDoc is the stable JSON form of 'patch inspect --json'. Fields are
// only ever added.
type inspectDoc struct {
	File        string          `json:"file"`
	Size        int             `json:"size"`
	SHA256      string          `json:"sha256"`
	ID          string          `json:"id"`
	Level       uint32          `json:"level"`
	CVEs        []string        `json:"cves"`
	Description string          `json:"description"`
	Modules     []inspectModule `json:"modules"`
}

type inspectModule struct {
	Name        string         `json:"name"`
	BuildID     string         `json:"build_id"`
	Consistency string         `json:"consistency"`
	CodeSize    int            `json:"code_size"`
	NeedsLow32  bool           `json:"needs_low32"`
	Functions   []inspectFunc  `json:"functions"`
	Fixups      int            `json:"fixups"`
	FixupKinds  map[string]int `json:"fixup_kinds"`
}

type inspectFunc struct {
	Name        string `json:"name"`
	New         bool   `json:"new"`
	Site        string `json:"site,omitempty"` // hex link-time address
	OldSize     uint32 `json:"old_size,omitempty"`
	OldHash     string `json:"old_hash,omitempty"`
	Offset      uint32 `json:"offset"`
	Size        uint32 `json:"size"`
	Consistency string `json:"consistency"`
}

func cmdPatchInspect(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("hotfleet patch inspect", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print a JSON document")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: patch inspect takes one bundle file, got %d arguments", errUsage, len(pos))
	}
	path := pos[0]
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("inspect %s: %w", path, err)
	}
	if st.Size() > bundle.MaxBundleSize {
		return fmt.Errorf("inspect %s: %d bytes is larger than any bundle (limit %d); is this a patch bundle?", path, st.Size(), bundle.MaxBundleSize)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("inspect %s: %w", path, err)
	}
	b, err := bundle.Decode(data)
	if err != nil {
		return fmt.Errorf("inspect %s: %w", path, err)
	}
	sum := sha256.Sum256(data)
	doc := inspectDoc{File: path, Size: len(data), SHA256: hex.EncodeToString(sum[:]), ID: b.ID, Level: b.Level,
		CVEs: append([]string{}, b.CVEs...), Description: b.Description}
	for i := range b.Modules {
		m := &b.Modules[i]
		im := inspectModule{Name: m.Name, BuildID: m.BuildID.String(), Consistency: string(m.FuncConsistency(bundle.Func{})),
			CodeSize: len(m.Code), NeedsLow32: m.NeedsLow32(), Fixups: len(m.Fixups), FixupKinds: map[string]int{}}
		for _, f := range m.Funcs {
			jf := inspectFunc{Name: f.Name, New: f.New, Offset: f.Offset, Size: f.Size, Consistency: string(m.FuncConsistency(f))}
			if !f.New {
				jf.Site = fmt.Sprintf("%#x", f.Site)
				jf.OldSize = f.OldSize
				jf.OldHash = f.OldHash.String()
			}
			im.Functions = append(im.Functions, jf)
		}
		for _, x := range m.Fixups {
			im.FixupKinds[string(x.Kind)]++
		}
		doc.Modules = append(doc.Modules, im)
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(doc)
	}
	w := os.Stdout
	fmt.Fprintf(w, "patch %s level %d (%s, %d bytes, sha256 %s)\n", doc.ID, doc.Level, path, doc.Size, doc.SHA256)
	if len(doc.CVEs) > 0 {
		fmt.Fprintf(w, "fixes: %s\n", strings.Join(doc.CVEs, ", "))
	}
	if doc.Description != "" {
		fmt.Fprintf(w, "description: %s\n", doc.Description)
	}
	for _, m := range doc.Modules {
		fmt.Fprintf(w, "module %s build-id %s, consistency %s\n", m.Name, m.BuildID, m.Consistency)
		for _, f := range m.Functions {
			if f.New {
				fmt.Fprintf(w, "  new function %s: %d bytes at code+%#x\n", f.Name, f.Size, f.Offset)
				continue
			}
			fmt.Fprintf(w, "  %s: site %s, old %d bytes (sha256 %s), new %d bytes at code+%#x, %s\n", f.Name, f.Site, f.OldSize, f.OldHash, f.Size, f.Offset, f.Consistency)
		}
		kinds := make([]string, 0, len(m.FixupKinds))
		for k, n := range m.FixupKinds {
			kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
		}
		sort.Strings(kinds)
		fmt.Fprintf(w, "  fixups: %d", m.Fixups)
		if len(kinds) > 0 {
			fmt.Fprintf(w, " (%s)", strings.Join(kinds, ", "))
		}
		fmt.Fprintln(w)
		low := ""
		if m.NeedsLow32 {
			low = " (must be mapped in the low 2 GB: absolute 32-bit references)"
		}
		fmt.Fprintf(w, "  code: %d bytes%s\n", m.CodeSize, low)
	}
	return nil
}
