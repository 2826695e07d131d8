// Package build is the hotfleet patch builder. It compares two builds of one
// source file (orig.o and fixed.o, compiled with -ffunction-sections
// -fdata-sections), finds the functions that changed, and links their new code
// against the exact target binary, producing a bundle.Module whose only
// unresolved references are base-relative fixups the agent applies.
//
// Trust: the inputs are the patch author's own files. They are still parsed
// through internal/elfx, so a corrupt file gives an error, not a crash. The
// builder refuses, naming the symbol, everything it cannot patch safely; it
// never leaves a reference unresolved or a change out.
package build

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"

	"hotfleet/internal/bundle"
	"hotfleet/internal/elfx"
)

// ErrRefused is wrapped by every error about a change the builder cannot
// turn into a hot patch; the message says which symbol and what to do.
var ErrRefused = errors.New("cannot build a hot patch")

// Layout constants.
const (
	funcAlign = 16 // keeps the new code's alignment at least what gcc gave it
	stubSize  = 8  // jmp *rel32(%rip) is 6 bytes; padded with int3
	slotSize  = 8  // one GOT slot holds one address
)

// Unit is one source file compiled twice: before and after the fix.
type Unit struct {
	Orig    string // original source file's object
	Patched string // fixed source file's object
	Source  string // the source file as compiled, for messages (optional)
}

// Options describe one build: the units of one target module.
type Options struct {
	Target string // executable or shared library the processes run
	// Symbols, when set, is an unstripped ELF file with the same build-id
	// as Target (the rebuilt original); its symbols stand in for a
	// stripped Target's.
	Symbols string
	// Units are the changed source files of this module. Orig and Patched
	// are the shorthand for a single unit.
	Units       []Unit
	Orig        string
	Patched     string
	ID          string
	Level       uint32
	CVEs        []string
	Description string
	// Quiescent asks for quiescent consistency for the whole module;
	// QuiescentFuncs for the named changed functions only.
	Quiescent      bool
	QuiescentFuncs []string
}

// Change is one function the bundle replaces.
type Change struct {
	Name    string
	File    string // source file, for static functions
	Site    uint64
	OldSize uint64
	NewSize uint64
	// Inlined names the changed functions inlined into this one, from the
	// objects' DWARF (empty without -g): its code changed (at least) because
	// theirs did.
	Inlined []string

	sym *elfx.Symbol
}

// Data is one piece of read-only data copied into the bundle.
type Data struct {
	Name string // section name, or the string literal for strings
	Size int
}

// Result is what a build produced, for the author to check.
type Result struct {
	Bundle      *bundle.Bundle
	Changed     []Change
	New         []string
	Cold        []string
	Rodata      []Data
	RodataBytes int
	Stubs       []string // imported functions called through a new PLT stub
	GOTSlots    []string // local GOT slots created for GOTPCREL references
	// Inlined lists the callers changed only because of inlining: they
	// hold an inlined copy of a changed function (Change.Inlined) and the
	// source lines of their own code are the same in both objects. They
	// are also in Changed. Needs DWARF (-g) in the objects.
	Inlined []Change
	// NotInTarget lists changed functions the target has no copy of (gcc
	// inlined them everywhere, or the linker dropped them): every caller
	// of theirs is replaced, so they ship as new code without a site.
	NotInTarget []string
	// Warnings are checks the builder could not make, for the summary
	// (objects without DWARF: struct layouts and the inlining report).
	Warnings []string
	// Verified counts the replaced functions whose original object code,
	// linked as the linker linked it, was proved equal to the target's
	// bytes. Every replaced function is verified or the build fails.
	Verified int
}

// Build builds the patch described by opts.
func Build(ctx context.Context, opts Options) (res *Result, err error) {
	// The objects are parsed defensively; this is the last line of defence
	// so a corrupt object can never crash the CLI.
	defer func() {
		if r := recover(); r != nil {
			res, err = nil, fmt.Errorf("build patch from %s and %s: %w: the builder failed on unexpected input (%v); check that both are gcc objects for x86-64", opts.Orig, opts.Patched, elfx.ErrMalformed, r)
		}
	}()
	if len(opts.Units) == 0 && opts.Orig != "" {
		opts.Units = []Unit{{Orig: opts.Orig, Patched: opts.Patched}}
	}
	if len(opts.Units) == 1 {
		opts.Orig, opts.Patched = opts.Units[0].Orig, opts.Units[0].Patched
	}
	if opts.Target == "" || len(opts.Units) == 0 {
		return nil, errors.New("build: a target and at least one pair of orig and patched objects are required")
	}
	seen := map[string]int{}
	for i, u := range opts.Units {
		if u.Orig == "" || u.Patched == "" {
			return nil, fmt.Errorf("build: unit %d (%s) needs both an orig and a patched object", i+1, u.Source)
		}
		if j, dup := seen[u.Patched]; dup {
			return nil, fmt.Errorf("build: units %d and %d both name the patched object %s; give each changed source file once", j+1, i+1, u.Patched)
		}
		seen[u.Patched] = i
	}
	tgt, err := openTarget(opts.Target, opts.Symbols)
	if err != nil {
		return nil, err
	}
	defer tgt.close()
	b := &builder{opts: opts, tgt: tgt, res: &Result{}, stubIdx: map[string]int{}, slotIdx: map[string]int{}, fixedGlobals: map[string]unitSym{}}
	for i, uo := range opts.Units {
		orig, err := openObject(uo.Orig, "orig")
		if err != nil {
			return nil, err
		}
		defer orig.close()
		fixed, err := openObject(uo.Patched, "patched")
		if err != nil {
			return nil, err
		}
		defer fixed.close()
		u := &unit{n: i, name: uo.Source, orig: orig, fixed: fixed, placed: map[int]uint64{}, bound: map[int]elfx.Symbol{}, dataMap: map[*elfx.Symbol]*elfx.Symbol{}}
		if u.name == "" {
			u.name = fixed.file
		}
		u.src = tgt.fileOf(orig)
		b.units = append(b.units, u)
		if err := b.indexGlobals(u); err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, u := range b.units {
		if err := b.checkData(u); err != nil {
			return nil, err
		}
		if err := b.checkConstAndInit(u); err != nil {
			return nil, err
		}
		if err := b.diff(u); err != nil {
			return nil, err
		}
		if err := b.checkLayouts(u); err != nil {
			return nil, err
		}
	}
	if err := b.checkAnyChange(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := b.link(); err != nil {
		return nil, err
	}
	return b.res, nil
}

// unit is one changed source file: its two objects and what the builder
// decided about them.
type unit struct {
	n       int     // position in Options.Units
	name    string  // source file, for messages
	src     fileRef // the target's source file this unit is
	orig    *object
	fixed   *object
	changed []*elfx.Symbol // in fixed
	newFns  []*elfx.Symbol
	placed  map[int]uint64                // fixed section index -> offset in code
	bound   map[int]elfx.Symbol           // fixed constant section -> the target's copy
	dataMap map[*elfx.Symbol]*elfx.Symbol // fixed variable -> orig variable
	// clonePairs caches origFunc's pairing of several clones of one kind.
	clonePairs map[string]map[*elfx.Symbol]*elfx.Symbol
}

// origFunc finds the orig function (or cold fragment) that fixed function fs
// is, matching clones by base name and kind (cloneKey): the target has the
// orig build's clone names. It returns nil for a function new in the fix.
func (u *unit) origFunc(fs *elfx.Symbol) (*elfx.Symbol, error) {
	key := cloneKey(fs.Name)
	os, fx := u.orig.byKey[key], u.fixed.byKey[key]
	if len(os) <= 1 && len(fx) <= 1 {
		if len(os) == 1 {
			return os[0], nil
		}
		return nil, nil
	}
	if u.clonePairs == nil {
		u.clonePairs = map[string]map[*elfx.Symbol]*elfx.Symbol{}
	}
	pairs, ok := u.clonePairs[key]
	if !ok {
		var err error
		if pairs, err = u.pairClones(os, fx); err != nil {
			return nil, fmt.Errorf("%w: gcc made several %s clones (%s in %s, %s in %s), numbered differently, and the builder cannot tell which is which; change the fix so gcc clones the same way (for example mark the function noclone), or ship a restart update", ErrRefused, key, symNames(os), u.orig.path, symNames(fx), u.fixed.path)
		}
		u.clonePairs[key] = pairs
	}
	return pairs[fs], nil
}

// pairClones pairs several clones of one kind of one function across the
// two builds: an unchanged clone with its identical twin, then the rest by
// elimination (one left on each side), or by gcc's numbers when both
// builds have the same ones left. A fixed clone without a pair is new.
func (u *unit) pairClones(os, fx []*elfx.Symbol) (map[*elfx.Symbol]*elfx.Symbol, error) {
	sig := func(o *object, s *elfx.Symbol) string {
		code, rels, err := o.funcSignature(s)
		if err != nil {
			return "?" + s.Name
		}
		return string(code) + "\x00" + strings.Join(rels, "\n")
	}
	pairs := map[*elfx.Symbol]*elfx.Symbol{}
	used := map[*elfx.Symbol]bool{}
	osig := map[*elfx.Symbol]string{}
	for _, o := range os {
		osig[o] = sig(u.orig, o)
	}
	for _, f := range fx {
		fsig := sig(u.fixed, f)
		var twins []*elfx.Symbol
		for _, o := range os {
			if !used[o] && osig[o] == fsig {
				twins = append(twins, o)
			}
		}
		if len(twins) == 1 {
			pairs[f] = twins[0]
			used[twins[0]] = true
		}
	}
	var lf, lo []*elfx.Symbol
	for _, f := range fx {
		if pairs[f] == nil {
			lf = append(lf, f)
		}
	}
	for _, o := range os {
		if !used[o] {
			lo = append(lo, o)
		}
	}
	switch {
	case len(lf) == 0:
	case len(lo) == 0:
		// Only new clones left.
	case len(lf) == 1 && len(lo) == 1:
		pairs[lf[0]] = lo[0]
	default:
		byName := map[string]*elfx.Symbol{}
		for _, o := range lo {
			byName[o.Name] = o
		}
		if len(lf) != len(lo) {
			return nil, errors.New("unpaired clones")
		}
		for _, f := range lf {
			o := byName[f.Name]
			if o == nil {
				return nil, errors.New("unpaired clones")
			}
			pairs[f] = o
		}
	}
	return pairs, nil
}

func symNames(ss []*elfx.Symbol) string {
	var n []string
	for _, s := range ss {
		n = append(n, s.Name)
	}
	return strings.Join(n, ", ")
}

// unitSym is a symbol of one unit's fixed object.
type unitSym struct {
	u   *unit
	sym *elfx.Symbol
}

// indexGlobals records the global functions and constants the unit's fixed
// object defines, so another unit's reference to one (a new function in
// a.c called from b.c) links to the bundle's copy.
func (b *builder) indexGlobals(u *unit) error {
	for i := range u.fixed.syms {
		s := &u.fixed.syms[i]
		if s.Bind == elf.STB_LOCAL || !s.Defined() || s.Section >= elf.SHN_LORESERVE || s.Type != elf.STT_FUNC && s.Type != elf.STT_OBJECT {
			continue
		}
		if prev, dup := b.fixedGlobals[s.Name]; dup {
			if prev.sym.Bind == elf.STB_WEAK || s.Bind == elf.STB_WEAK {
				continue // C++ inline functions and templates: one copy wins, as in the linker
			}
			return fmt.Errorf("%w: both %s and %s define the global %s; the linker would refuse this program too", ErrRefused, prev.u.fixed.path, u.fixed.path, s.Name)
		}
		b.fixedGlobals[s.Name] = unitSym{u, s}
	}
	return nil
}

// changedElsewhere finds a unit before u that already replaces the
// function called name.
func (b *builder) changedElsewhere(u *unit, name string) (*unit, *elfx.Symbol) {
	for _, o := range b.units {
		if o == u {
			break
		}
		for _, c := range o.changed {
			if c.Name == name {
				return o, c
			}
		}
	}
	return nil, nil
}

// checkAnyChange refuses a build that would patch nothing.
func (b *builder) checkAnyChange() error {
	changed := 0
	var newNames []string
	for _, u := range b.units {
		changed += len(u.changed)
		for _, f := range u.newFns {
			newNames = append(newNames, f.Name)
		}
	}
	if changed > 0 {
		return nil
	}
	if len(newNames) > 0 {
		return fmt.Errorf("%w: the fixed objects only add functions (%s) and change none, so nothing would ever call them", ErrRefused, strings.Join(newNames, ", "))
	}
	return fmt.Errorf("%w: nothing to patch: orig.o and fixed.o compile to the same code", ErrRefused)
}

type builder struct {
	opts  Options
	tgt   *target
	units []*unit
	res   *Result

	fixedGlobals map[string]unitSym

	code    []byte
	order   []place // included sections in layout order
	fixups  []bundle.Fixup
	pending []pendingRef

	stubs   []stub
	stubIdx map[string]int
	slots   []slot
	slotIdx map[string]int
}

// stub is a PLT-like jump through the target's GOT slot for an import.
type stub struct {
	name string
	slot uint64
}

// slot is a GOT slot in the bundle holding the address of a module symbol
// (module=true, addr = link-time vaddr) or of bundle code (addr = offset).
type slot struct {
	name   string
	module bool
	addr   uint64
	ref    ref // bundle code, when !module
	// constant slots hold addr itself, with no fixup.
	constant bool
}

// place is one section of one unit's fixed object.
type place struct {
	u   *unit
	sec int
}

// ref names a place in the bundle whose offset is only known after layout.
type ref struct {
	kind int // refSection, refStub, refSlot
	u    *unit
	idx  int
	add  int64
}

const (
	refSection = iota
	refStub
	refSlot
)

// pendingRef is a relocation against bundle code, resolved after layout:
// PC-relative ones are written now-relative, absolute ones become region fixups.
type pendingRef struct {
	at     uint64
	typ    elf.R_X86_64
	addend int64
	to     ref
	where  string
}

// checkData refuses changes to writable data and TLS that a hot patch cannot
// carry: the running process already has its own copy of that data.
func (b *builder) checkData(u *unit) error {
	vars := append([]*elfx.Symbol{}, u.fixed.dataSyms...)
	sort.Slice(vars, func(i, j int) bool { return vars[i].Name < vars[j].Name })
	for _, fs := range vars {
		os, err := b.origData(u, fs)
		if err != nil {
			return err
		}
		if os == nil {
			if fs.Type == elf.STT_TLS || u.fixed.kind(int(fs.Section)) == secTLS {
				return fmt.Errorf("%w: the fix of %s adds the thread-local variable %s; a hot patch cannot add TLS to running threads; keep the state elsewhere (a shadow variable keyed by thread)", ErrRefused, u.name, fs.Name)
			}
			if _, err := b.tgt.lookup(fs.Name, fs.Bind == elf.STB_LOCAL, u.src); err == nil {
				continue
			}
			return fmt.Errorf("%w: the fix of %s adds %s, which the running processes do not have; a hot patch cannot add writable data: keep the new state in a shadow variable (allocated on first use by the new code)", ErrRefused, u.name, writableVar(u.fixed, fs))
		}
		if os.Size != fs.Size {
			return fmt.Errorf("%w: %s changes size from %d to %d bytes; running processes keep the old layout; keep the old variable and put new fields in a shadow variable", ErrRefused, describeVar(u.fixed, fs), os.Size, fs.Size)
		}
		same, err := b.sameObject(u, os, fs)
		if err != nil {
			return err
		}
		if !same {
			return fmt.Errorf("%w: the initial value of %s changed; running processes already hold (and may have modified) its current value, so a hot patch cannot change it: set the new value from the new code, or ship the change as a restart update", ErrRefused, strings.TrimPrefix(describeVar(u.fixed, fs), "variable "))
		}
	}
	return nil
}

// describeVar names a variable for messages: a function-scope static
// ("left.0") by its source name and the functions that use it.
func describeVar(o *object, v *elfx.Symbol) string {
	base := staticLocalBase(v.Name)
	if v.Bind != elf.STB_LOCAL || base == v.Name {
		return "variable " + v.Name
	}
	var users []string
	for f := range o.referrers(v) {
		users = append(users, f+"()")
	}
	sort.Strings(users)
	if len(users) == 0 {
		return fmt.Sprintf("the static variable %s (%s)", base, v.Name)
	}
	return fmt.Sprintf("the static variable %s in %s (%s)", base, strings.Join(users, ", "), v.Name)
}

// writableVar is describeVar with "writable": "the writable variable x",
// "the writable static variable seen in allow() (seen.0)".
func writableVar(o *object, v *elfx.Symbol) string {
	d := describeVar(o, v)
	if strings.HasPrefix(d, "variable ") {
		return "the writable " + d
	}
	return strings.Replace(d, "the static variable", "the writable static variable", 1)
}

// sameObject reports whether a data symbol of orig.o and its namesake in
// fixed.o hold the same bytes and the same relocations.
func (b *builder) sameObject(u *unit, os, fs *elfx.Symbol) (bool, error) {
	ob, err := u.orig.symBytes(os)
	if err != nil {
		return false, err
	}
	fb, err := u.fixed.symBytes(fs)
	if err != nil {
		return false, err
	}
	if !bytes.Equal(ob, fb) {
		return false, nil
	}
	return b.sameRelocs(u, os, fs)
}

// checkConstAndInit refuses two changes a patch of one file cannot carry:
// a changed global constant (code in other files keeps reading the old
// copy) and changed constructors or destructors (a running process has
// already run them, or will never run new ones).
func (b *builder) checkConstAndInit(u *unit) error {
	origByName := map[string]*elfx.Symbol{}
	for i := range u.orig.syms {
		s := &u.orig.syms[i]
		if s.Type == elf.STT_OBJECT && s.Bind != elf.STB_LOCAL && s.Defined() && u.orig.kind(int(s.Section)) == secRodata {
			origByName[s.Name] = s
		}
	}
	for i := range u.fixed.syms {
		fs := &u.fixed.syms[i]
		if fs.Type != elf.STT_OBJECT || fs.Bind == elf.STB_LOCAL || !fs.Defined() || u.fixed.kind(int(fs.Section)) != secRodata {
			continue
		}
		os := origByName[fs.Name]
		if os == nil {
			continue // new: no other file can use it yet
		}
		same, err := b.sameObject(u, os, fs)
		if err != nil {
			return err
		}
		if os.Size != fs.Size || !same {
			return fmt.Errorf("%w: the global constant %s changed; code in other files of %s keeps reading the old copy: make it static if only this file uses it, or ship the change as a restart update", ErrRefused, fs.Name, b.tgt.name)
		}
	}
	initKey := func(o *object) (string, error) {
		var parts []string
		for i, sec := range o.f.Sections {
			if sec.Type != elf.SHT_INIT_ARRAY && sec.Type != elf.SHT_FINI_ARRAY && sec.Type != elf.SHT_PREINIT_ARRAY &&
				!strings.HasPrefix(sec.Name, ".ctors") && !strings.HasPrefix(sec.Name, ".dtors") {
				continue
			}
			for _, r := range o.relocsIn(i, 0, ^uint64(0)) {
				k, a, err := o.targetKey(r, 0)
				if err != nil {
					return "", err
				}
				parts = append(parts, fmt.Sprintf("%s:%s%+d", sec.Name, k, a))
			}
		}
		sort.Strings(parts)
		return strings.Join(parts, " "), nil
	}
	ok, err := initKey(u.orig)
	if err != nil {
		return err
	}
	fk, err := initKey(u.fixed)
	if err != nil {
		return err
	}
	if ok != fk {
		return fmt.Errorf("%w: the fix changes the file's constructors or destructors (%q became %q); running processes have already run their constructors and would never run new ones: do the work lazily from the new code instead", ErrRefused, ok, fk)
	}
	return nil
}

// origData finds the orig.o variable that a fixed.o variable is. Globals
// match by name. Function-scope statics ("calls.1") are renumbered by gcc
// whenever the file changes, so they match by base name, and when several
// functions have a static of that name, by which function uses it. It
// returns nil for a variable that orig.o does not have.
func (b *builder) origData(u *unit, fs *elfx.Symbol) (*elfx.Symbol, error) {
	if os, ok := u.dataMap[fs]; ok {
		return os, nil
	}
	var cands []*elfx.Symbol
	for _, os := range u.orig.dataSyms {
		if fs.Bind != elf.STB_LOCAL {
			if os.Bind != elf.STB_LOCAL && os.Name == fs.Name {
				cands = append(cands, os)
			}
		} else if os.Bind == elf.STB_LOCAL && staticLocalBase(os.Name) == staticLocalBase(fs.Name) {
			cands = append(cands, os)
		}
	}
	if len(cands) > 1 {
		users := u.fixed.referrers(fs)
		var picked []*elfx.Symbol
		for _, os := range cands {
			for u := range u.orig.referrers(os) {
				if users[u] {
					picked = append(picked, os)
					break
				}
			}
		}
		if len(picked) != 1 {
			return nil, fmt.Errorf("%w: cannot tell which of the %d static variables named %s in orig.o is %s of fixed.o (they are used by the same functions); rename one of them in the fix", ErrRefused, len(cands), staticLocalBase(fs.Name), fs.Name)
		}
		cands = picked
	}
	var os *elfx.Symbol
	if len(cands) == 1 {
		os = cands[0]
	}
	u.dataMap[fs] = os
	return os, nil
}

func (b *builder) sameRelocs(u *unit, os, fs *elfx.Symbol) (bool, error) {
	a := u.orig.relocsIn(int(os.Section), os.Value, os.Value+os.Size)
	c := u.fixed.relocsIn(int(fs.Section), fs.Value, fs.Value+fs.Size)
	if len(a) != len(c) {
		return false, nil
	}
	for i := range a {
		ka, aa, err := u.orig.targetKey(a[i], 0)
		if err != nil {
			return false, err
		}
		kc, ac, err := u.fixed.targetKey(c[i], 0)
		if err != nil {
			return false, err
		}
		if ka != kc || aa != ac || a[i].Type != c[i].Type || a[i].Offset-os.Value != c[i].Offset-fs.Value {
			return false, nil
		}
	}
	return true, nil
}

// diff finds the changed and new functions and checks each changed one
// against the target.
func (b *builder) diff(u *unit) error {
	names := make([]string, 0, len(u.fixed.funcs))
	for n := range u.fixed.funcs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fs := u.fixed.funcs[n]
		os, err := u.origFunc(fs)
		if err != nil {
			return err
		}
		if os == nil {
			u.newFns = append(u.newFns, fs)
			b.res.New = append(b.res.New, n)
			continue
		}
		oc, orels, err := u.orig.funcSignature(os)
		if err != nil {
			return err
		}
		fc, frels, err := u.fixed.funcSignature(fs)
		if err != nil {
			return err
		}
		if bytes.Equal(oc, fc) && strings.Join(orels, "\n") == strings.Join(frels, "\n") {
			continue
		}
		if fs.Bind == elf.STB_WEAK {
			if o, of := b.changedElsewhere(u, fs.Name); of != nil {
				// An inline function or template instantiation several
				// files emit: the linker kept one copy, which one site
				// replaces. The files must agree on its new code.
				oc, orels, err := o.fixed.funcSignature(of)
				if err != nil {
					return err
				}
				if !bytes.Equal(oc, fc) || strings.Join(orels, "\n") != strings.Join(frels, "\n") {
					return fmt.Errorf("%w: %s and %s compile the inline function or template %s to different code; the program can only have one: make the files agree (same definition, same flags)", ErrRefused, o.fixed.path, u.fixed.path, fs.Name)
				}
				continue
			}
		}
		if err := b.checkEH(u, os, fs); err != nil {
			return err
		}
		if err := b.checkConstructor(u, os, fs); err != nil {
			return err
		}
		for i := range u.orig.syms {
			is := &u.orig.syms[i]
			if is.Type == elf.STT_GNU_IFUNC && is.Section == os.Section && is.Value == os.Value {
				return fmt.Errorf("%w: function %s is the resolver of the IFUNC %s; resolvers run once, when the module is loaded, so a new one would never run in the running processes: change the implementations it chooses between instead, or ship a restart update", ErrRefused, fs.Name, is.Name)
			}
		}
		u.changed = append(u.changed, fs)
	}
	return nil
}

// unchangedConst reports whether constant section sec of the fixed object
// is a named constant the target already has, unchanged: then new code
// uses the target's copy, keeping its address (code may compare it, or
// store it where old code compares it). A constant that changed, has no
// name, or holds addresses of changed code (a computed-goto table) is
// copied into the bundle instead.
func (b *builder) unchangedConst(u *unit, sec int) (elfx.Symbol, bool) {
	fs := u.fixed.secDef[sec]
	if fs == nil || fs.Type != elf.STT_OBJECT || fs.Value != 0 {
		return elfx.Symbol{}, false
	}
	h := u.fixed.sec(sec)
	if h == nil || h.Flags&elf.SHF_MERGE != 0 || fs.Size != h.Size {
		return elfx.Symbol{}, false
	}
	var os *elfx.Symbol
	for i := range u.orig.syms {
		c := &u.orig.syms[i]
		if c.Type != elf.STT_OBJECT || !c.Defined() || c.Section >= elf.SHN_LORESERVE || u.orig.kind(int(c.Section)) != secRodata || (c.Bind == elf.STB_LOCAL) != (fs.Bind == elf.STB_LOCAL) {
			continue
		}
		if c.Name == fs.Name || fs.Bind == elf.STB_LOCAL && staticLocalBase(c.Name) == staticLocalBase(fs.Name) {
			if os != nil {
				return elfx.Symbol{}, false // two candidates: copy rather than guess
			}
			os = c
		}
	}
	if os == nil || os.Size != fs.Size {
		return elfx.Symbol{}, false
	}
	if same, err := b.sameObject(u, os, fs); err != nil || !same {
		return elfx.Symbol{}, false
	}
	for _, r := range u.fixed.relocs[sec] {
		t, err := u.fixed.symbol(r.Sym)
		if err != nil {
			return elfx.Symbol{}, false
		}
		if t.Defined() && t.Section < elf.SHN_LORESERVE {
			switch u.fixed.kind(int(t.Section)) {
			case secCold:
				return elfx.Symbol{}, false
			case secText:
				// A pointer to a changed function's entry is fine: the old
				// entry jumps to the new code. A label inside it (a
				// computed-goto table) must point into the new code.
				if _, changed := u.placed[int(t.Section)]; changed {
					entry := u.fixed.secDef[int(t.Section)]
					if entry == nil || int64(t.Value)+r.Addend != int64(entry.Value) || t.Type == elf.STT_SECTION && r.Addend != int64(entry.Value) {
						return elfx.Symbol{}, false
					}
				}
			}
		}
	}
	ts, err := b.tgt.lookup(os.Name, os.Bind == elf.STB_LOCAL, u.src)
	if err != nil || ts.Size != os.Size {
		return elfx.Symbol{}, false
	}
	return ts, true
}

// checkConstructor refuses a changed function that only a constructor
// table (.init_array, .preinit_array, .ctors) calls: running processes ran
// it at startup and never will again, so patching it would change nothing.
// Destructors (.fini_array) still run at exit and may be patched.
func (b *builder) checkConstructor(u *unit, os, fs *elfx.Symbol) error {
	ctor := false
	for i, sec := range u.orig.f.Sections {
		if sec.Type != elf.SHT_INIT_ARRAY && sec.Type != elf.SHT_PREINIT_ARRAY && !strings.HasPrefix(sec.Name, ".ctors") {
			continue
		}
		for _, r := range u.orig.relocs[i] {
			t, err := u.orig.symbol(r.Sym)
			if err != nil {
				return err
			}
			if t == os || t.Type == elf.STT_SECTION && t.Section == os.Section && r.Addend == int64(os.Value) {
				ctor = true
			}
		}
	}
	if !ctor {
		return nil
	}
	for caller := range u.orig.referrers(os) {
		if caller != os.Name {
			return nil // also called from code: patching it matters
		}
	}
	return fmt.Errorf("%w: function %s is a constructor (.init_array): running processes ran it at startup and will not again, so the patch would change nothing; do the work lazily from the new code, or ship a restart update", ErrRefused, fs.Name)
}

// checkEH refuses changed functions on an exception path. The new code
// has no unwind tables in the running process: an exception thrown from
// it, or reaching its landing pads, would terminate the program.
func (b *builder) checkEH(u *unit, os, fs *elfx.Symbol) error {
	tables := func(o *object, f *elfx.Symbol) (string, bool, error) {
		var parts []string
		secs := []int{int(f.Section)}
		for _, c := range o.byKey[cloneKey(f.Name)+".cold"] {
			secs = append(secs, int(c.Section))
		}
		has := false
		for _, sec := range secs {
			tab, ok := o.lsda[sec]
			if !ok {
				continue
			}
			has = true
			d, err := o.contentDigest(tab)
			if err != nil {
				return "", false, err
			}
			parts = append(parts, d)
		}
		return strings.Join(parts, ","), has, nil
	}
	ot, ohas, err := tables(u.orig, os)
	if err != nil {
		return err
	}
	ft, fhas, err := tables(u.fixed, fs)
	if err != nil {
		return err
	}
	if ohas || fhas {
		if ot != ft {
			return fmt.Errorf("%w: function %s: exception-handling tables changed (its landing pads or the exceptions it catches, in .gcc_except_table); a hot patch cannot give running processes new unwind tables: ship the fix as a restart update", ErrRefused, fs.Name)
		}
		return fmt.Errorf("%w: function %s has exception-handling code (try/catch or destructors run during unwinding); its patched copy would have no unwind tables in the running processes, so an exception reaching it would terminate the program: move the change into a function without them, or ship a restart update", ErrRefused, fs.Name)
	}
	for _, r := range u.fixed.relocsIn(int(fs.Section), fs.Value, fs.Value+fs.Size) {
		s, err := u.fixed.symbol(r.Sym)
		if err != nil {
			return err
		}
		switch s.Name {
		case "__cxa_throw", "__cxa_rethrow", "_Unwind_Resume", "_Unwind_RaiseException":
			return fmt.Errorf("%w: function %s throws an exception (it calls %s); its patched copy would have no unwind tables in the running processes, so the exception could not leave it and the program would terminate: throw from a helper the fix does not change, or ship a restart update", ErrRefused, fs.Name, s.Name)
		}
	}
	if u.fixed.cxx {
		if callee, err := u.fixed.mayThrowCall(fs); err != nil {
			return err
		} else if callee != "" {
			return fmt.Errorf("%w: function %s calls %s, which may throw a C++ exception; the patched copy of %s would have no unwind tables in the running processes, so an exception passing through it would terminate the program: ship the fix as a restart update, or make the change where no exception can pass (code that calls only C functions or noexcept code the builder can see)", ErrRefused, fs.Name, callee, fs.Name)
		}
	}
	return nil
}

// link lays out the code, resolves every relocation and fills the bundle.
func (b *builder) link() error {
	// Sections to copy: changed and new functions first, then what they
	// pull in (cold fragments, read-only data), transitively, across units.
	var work []place
	include := func(u *unit, sec int) {
		if _, ok := u.placed[sec]; ok {
			return
		}
		u.placed[sec] = 0
		b.order = append(b.order, place{u, sec})
		work = append(work, place{u, sec})
	}
	for _, u := range b.units {
		for _, f := range u.changed {
			include(u, int(f.Section))
		}
		for _, f := range u.newFns {
			include(u, int(f.Section))
		}
	}
	for len(work) > 0 {
		p := work[0]
		work = work[1:]
		u := p.u
		for _, r := range u.fixed.relocs[p.sec] {
			s, err := u.fixed.symbol(r.Sym)
			if err != nil {
				return err
			}
			if !s.Defined() {
				// Defined by another changed file and not by the target: a
				// new function or constant that file's fix adds.
				if d, ok := b.fixedGlobals[s.Name]; ok && d.u != u {
					if _, err := b.tgt.lookup(s.Name, false, fileRef{}); errors.Is(err, errNotInTarget) {
						switch d.u.fixed.kind(int(d.sym.Section)) {
						case secText, secCold, secRodata, secStrings:
							include(d.u, int(d.sym.Section))
						}
					}
				}
				continue
			}
			if s.Section >= elf.SHN_LORESERVE {
				continue
			}
			switch u.fixed.kind(int(s.Section)) {
			case secCold, secStrings:
				include(u, int(s.Section))
			case secRodata:
				if ts, ok := b.unchangedConst(u, int(s.Section)); ok {
					u.bound[int(s.Section)] = ts
					continue
				}
				include(u, int(s.Section))
			}
		}
	}
	// Functions first, then cold fragments, then data, as the docs describe.
	rank := func(p place) int {
		switch p.u.fixed.kind(p.sec) {
		case secText:
			return 0
		case secCold:
			return 1
		}
		return 2
	}
	sort.SliceStable(b.order, func(i, j int) bool { return rank(b.order[i]) < rank(b.order[j]) })
	for _, p := range b.order {
		u, sec := p.u, p.sec
		s := u.fixed.sec(sec)
		if s == nil {
			return fmt.Errorf("%w: %s refers to section %d, which does not exist", elfx.ErrMalformed, u.fixed.path, sec)
		}
		align := s.Addralign
		if rank(p) < 2 && align < funcAlign {
			align = funcAlign
		}
		if align == 0 {
			align = 1
		}
		if align > 4096 {
			return fmt.Errorf("%w: section %s asks for %d-byte alignment; the bundle supports up to a page", ErrRefused, s.Name, align)
		}
		b.pad(align, rank(p) < 2)
		d, err := u.fixed.sectionData(sec)
		if err != nil {
			return err
		}
		u.placed[sec] = uint64(len(b.code))
		b.code = append(b.code, d...)
		switch rank(p) {
		case 1:
			b.res.Cold = append(b.res.Cold, b.secName(u, sec))
		case 2:
			name := s.Name
			if u.fixed.kind(sec) == secStrings {
				name = s.Name + " (string literals)"
			}
			b.res.Rodata = append(b.res.Rodata, Data{Name: name, Size: len(d)})
			b.res.RodataBytes += len(d)
		}
	}
	for _, p := range b.order {
		for _, r := range p.u.fixed.relocsIn(p.sec, 0, ^uint64(0)) {
			if err := b.relocate(p.u, p.sec, r); err != nil {
				return err
			}
		}
	}
	// Stubs and GOT slots go last; now their offsets are known.
	b.pad(funcAlign, true)
	stubBase := uint64(len(b.code))
	for _, s := range b.stubs {
		at := uint64(len(b.code))
		b.code = append(b.code, 0xff, 0x25, 0, 0, 0, 0, 0xcc, 0xcc)
		// jmp *disp(%rip): disp is relative to the end of the 6-byte
		// instruction, 4 bytes after the field the agent fills with
		// B + A - P; so A = slot - 4.
		b.fixups = append(b.fixups, bundle.Fixup{Offset: uint32(at + 2), Kind: bundle.ModulePC32, Addend: int64(s.slot) - 4})
		b.res.Stubs = append(b.res.Stubs, s.name)
	}
	b.pad(slotSize, false)
	slotBase := uint64(len(b.code))
	for _, s := range b.slots {
		at := uint64(len(b.code))
		b.code = append(b.code, make([]byte, slotSize)...)
		if s.constant {
			binary.LittleEndian.PutUint64(b.code[at:], s.addr)
			b.res.GOTSlots = append(b.res.GOTSlots, s.name)
			continue
		}
		kind := bundle.RegionAbs64
		if s.module {
			kind = bundle.ModuleAbs64
		} else {
			s.addr = s.ref.u.placed[s.ref.idx] + uint64(s.ref.add)
		}
		b.fixups = append(b.fixups, bundle.Fixup{Offset: uint32(at), Kind: kind, Addend: int64(s.addr)})
		b.res.GOTSlots = append(b.res.GOTSlots, s.name)
	}
	for _, p := range b.pending {
		var to uint64
		switch p.to.kind {
		case refSection:
			to = p.to.u.placed[p.to.idx]
		case refStub:
			to = stubBase + uint64(p.to.idx)*stubSize
		case refSlot:
			to = slotBase + uint64(p.to.idx)*slotSize
		}
		to += uint64(p.to.add)
		if err := b.writeLocal(p, to); err != nil {
			return err
		}
	}
	if len(b.code) > bundle.MaxCodeSize {
		return fmt.Errorf("%w: the patch code is %d bytes, over the bundle limit of %d; split the fix", ErrRefused, len(b.code), bundle.MaxCodeSize)
	}
	return b.emit()
}

func (b *builder) secName(u *unit, sec int) string {
	if d := u.fixed.secDef[sec]; d != nil {
		return d.Name
	}
	return u.fixed.secName(sec)
}

func (b *builder) pad(align uint64, code bool) {
	fill := byte(0)
	if code {
		fill = 0xcc // int3: a stray jump into padding traps instead of sliding
	}
	for uint64(len(b.code))%align != 0 {
		b.code = append(b.code, fill)
	}
}

// owner names the function a relocation belongs to, for messages.
func (b *builder) owner(u *unit, sec int) string {
	if d := u.fixed.secDef[sec]; d != nil {
		return "function " + d.Name
	}
	return "section " + u.fixed.secName(sec)
}

// where it is: the module's symbol (vaddr), bundle code, or an import.
type resolved struct {
	inBundle bool
	to       ref    // when inBundle
	vaddr    uint64 // when in the module
	imported bool
	name     string
	isFunc   bool
	global   bool
	// ifuncSlot is the GOT slot the module's own IFUNC is resolved into
	// (an IRELATIVE relocation): calls go through it, never to the resolver.
	ifuncSlot uint64
}

func (b *builder) resolve(u *unit, sec int, r elfx.Reloc) (resolved, error) {
	s, err := u.fixed.symbol(r.Sym)
	if err != nil {
		return resolved{}, err
	}
	if s.Type == elf.STT_GNU_IFUNC && s.Defined() {
		// The symbol's address is its resolver's; the process calls the
		// implementation the resolver chose, through an IRELATIVE slot.
		ts, err := b.tgt.lookup(s.Name, s.Bind == elf.STB_LOCAL, u.src)
		if err != nil {
			if errors.Is(err, errNotInTarget) {
				return resolved{}, fmt.Errorf("%w: %s calls the IFUNC %s, which %s does not have; a hot patch cannot add an IFUNC (its resolver runs only at load time): call one implementation directly, or ship a restart update", ErrRefused, b.owner(u, sec), s.Name, b.tgt.name)
			}
			return resolved{}, err
		}
		return b.resolveIFunc(u, sec, s.Name, ts)
	}
	if s.Section == elf.SHN_ABS {
		return resolved{vaddr: s.Value, name: s.Name}, nil
	}
	if s.Section == elf.SHN_COMMON {
		return resolved{}, fmt.Errorf("%w: %s refers to %s, a common symbol; compile with -fno-common (the default since gcc 10)", ErrRefused, b.owner(u, sec), s.Name)
	}
	if !s.Defined() {
		// Another changed file's new or changed code: the bundle's copy.
		if d, ok := b.fixedGlobals[s.Name]; ok && d.u != u {
			if _, in := d.u.placed[int(d.sym.Section)]; in {
				return resolved{inBundle: true, to: ref{kind: refSection, u: d.u, idx: int(d.sym.Section), add: int64(d.sym.Value)}, name: s.Name, isFunc: d.sym.Type == elf.STT_FUNC, global: true}, nil
			}
		}
		isFunc := s.Type == elf.STT_FUNC || r.Type == elf.R_X86_64_PLT32
		ts, err := b.tgt.lookup(s.Name, false, fileRef{})
		if err == nil && ts.Type == elf.STT_GNU_IFUNC {
			// Another file's IFUNC, or libc's inside a static executable.
			return b.resolveIFunc(u, sec, s.Name, ts)
		}
		if err == nil {
			return resolved{vaddr: ts.Value, name: s.Name, isFunc: ts.Type == elf.STT_FUNC, global: true}, nil
		}
		if _, ok := b.tgt.jmpSlot[s.Name]; ok {
			isFunc = true
		}
		return resolved{imported: true, name: s.Name, isFunc: isFunc, global: true}, nil
	}
	tsec := int(s.Section)
	def := s
	if s.Type == elf.STT_SECTION {
		def = u.fixed.secDef[tsec]
	}
	switch u.fixed.kind(tsec) {
	case secText, secCold:
		if _, ok := u.placed[tsec]; ok {
			return resolved{inBundle: true, to: ref{kind: refSection, u: u, idx: tsec, add: int64(s.Value)}}, nil
		}
		if def == nil {
			return resolved{}, fmt.Errorf("%w: %s refers into section %s, which has no function symbol", ErrRefused, b.owner(u, sec), u.fixed.secName(tsec))
		}
		// The target has the orig build's names for clones.
		name := def.Name
		if os, err := u.origFunc(def); err != nil {
			return resolved{}, err
		} else if os != nil {
			name = os.Name
		}
		ts, err := b.tgt.lookup(name, def.Bind == elf.STB_LOCAL, u.src)
		if err != nil {
			return resolved{}, b.notFound(u, sec, def, err)
		}
		return resolved{vaddr: ts.Value - def.Value + s.Value, name: def.Name, isFunc: true, global: def.Bind != elf.STB_LOCAL}, nil
	case secRodata, secStrings:
		if ts, ok := u.bound[tsec]; ok {
			// An unchanged named constant: the target's own copy, so its
			// address is the one the rest of the program uses.
			return resolved{vaddr: ts.Value - u.fixed.secDef[tsec].Value + s.Value, name: ts.Name, global: ts.Bind != elf.STB_LOCAL}, nil
		}
		return resolved{inBundle: true, to: ref{kind: refSection, u: u, idx: tsec, add: int64(s.Value)}}, nil
	case secWritable:
		if def == nil || s.Type == elf.STT_SECTION && def.Value != 0 {
			def = b.objectAt(u, tsec, s.Value, r)
		}
		if def == nil {
			return resolved{}, fmt.Errorf("%w: %s refers to writable data in %s that belongs to no variable symbol; compile with -fdata-sections", ErrRefused, b.owner(u, sec), u.fixed.secName(tsec))
		}
		name := def.Name
		os, err := b.origData(u, def)
		if err != nil {
			return resolved{}, err
		}
		if os != nil {
			// orig.o and the target come from one compilation, so they
			// agree on the numbering of function-scope statics.
			name = os.Name
		}
		ts, err := b.tgt.lookup(name, def.Bind == elf.STB_LOCAL, u.src)
		if err != nil {
			if errors.Is(err, errNotInTarget) {
				return resolved{}, fmt.Errorf("%w: %s uses the writable variable %s, which %s does not have; a hot patch cannot add writable data: keep the new state in a shadow variable", ErrRefused, b.owner(u, sec), def.Name, b.tgt.name)
			}
			return resolved{}, err
		}
		if ts.Size != def.Size {
			return resolved{}, fmt.Errorf("%w: variable %s is %d bytes in fixed.o but %d in %s; a hot patch cannot change a variable's size", ErrRefused, def.Name, def.Size, ts.Size, b.tgt.name)
		}
		return resolved{vaddr: ts.Value - def.Value + s.Value, name: def.Name, global: def.Bind != elf.STB_LOCAL}, nil
	case secTLS:
		return resolved{}, fmt.Errorf("%w: %s uses the thread-local variable %s; TLS references are not supported in hot patches", ErrRefused, b.owner(u, sec), s.Name)
	}
	return resolved{}, fmt.Errorf("%w: %s refers to section %s, which is not loaded at run time", ErrRefused, b.owner(u, sec), u.fixed.secName(tsec))
}

// resolveIFunc binds a call to an IFUNC the target defines (ts, whose
// address is the resolver's) to the GOT slot the loader fills with the
// chosen implementation: its IRELATIVE slot, or an exported IFUNC's own slot.
func (b *builder) resolveIFunc(u *unit, sec int, name string, ts elfx.Symbol) (resolved, error) {
	if slot, ok := b.tgt.irelative[ts.Value]; ok {
		return resolved{name: name, isFunc: true, ifuncSlot: slot}, nil
	}
	if ts.Bind != elf.STB_LOCAL {
		if slot, ok := b.tgt.jmpSlot[name]; ok {
			return resolved{name: name, isFunc: true, ifuncSlot: slot}, nil
		}
		if slot, ok := b.tgt.globDat[name]; ok {
			return resolved{name: name, isFunc: true, ifuncSlot: slot}, nil
		}
	}
	return resolved{}, fmt.Errorf("%w: %s calls the IFUNC %s, but %s has no GOT slot resolved for it (no IRELATIVE relocation for its resolver at %#x); call one implementation directly", ErrRefused, b.owner(u, sec), name, b.tgt.name, ts.Value)
}

// objectAt finds the variable covering the byte a relocation points at.
func (b *builder) objectAt(u *unit, sec int, val uint64, r elfx.Reloc) *elfx.Symbol {
	off := int64(val) + r.Addend
	if isPCRel(r.Type) {
		off += 4
	}
	for i := range u.fixed.syms {
		s := &u.fixed.syms[i]
		if int(s.Section) == sec && s.Type == elf.STT_OBJECT && off >= int64(s.Value) && off < int64(s.Value+s.Size) {
			return s
		}
	}
	return nil
}

func (b *builder) notFound(u *unit, sec int, def *elfx.Symbol, err error) error {
	if !errors.Is(err, errNotInTarget) {
		return err
	}
	kind := "global"
	if def.Bind == elf.STB_LOCAL {
		kind = "static (in " + u.orig.file + ")"
	}
	return fmt.Errorf("%w: %s calls %s function %s, which %s does not contain (inlined into its callers or removed by the linker); change the callers instead, or check that --target is the binary built from orig.o", ErrRefused, b.owner(u, sec), kind, def.Name, b.tgt.name)
}

// relocate resolves one relocation of an included section.
func (b *builder) relocate(u *unit, sec int, r elfx.Reloc) error {
	at := u.placed[sec] + r.Offset
	secLen := uint64(len(u.fixed.data[sec]))
	if s := u.fixed.sec(sec); s == nil || s.Type == elf.SHT_NOBITS || r.Offset > secLen {
		return fmt.Errorf("%w: relocation at %#x lies outside %s", elfx.ErrMalformed, r.Offset, u.fixed.secName(sec))
	}
	switch r.Type {
	case elf.R_X86_64_PC32, elf.R_X86_64_PLT32, elf.R_X86_64_GOTPCREL, elf.R_X86_64_GOTPCRELX, elf.R_X86_64_REX_GOTPCRELX,
		elf.R_X86_64_32, elf.R_X86_64_32S:
		if r.Offset+4 > secLen {
			return fmt.Errorf("%w: relocation at %#x lies outside %s", elfx.ErrMalformed, r.Offset, u.fixed.secName(sec))
		}
	case elf.R_X86_64_64:
		if r.Offset+8 > secLen {
			return fmt.Errorf("%w: relocation at %#x lies outside %s", elfx.ErrMalformed, r.Offset, u.fixed.secName(sec))
		}
	case elf.R_X86_64_TPOFF32, elf.R_X86_64_GOTTPOFF:
		if r.Offset+4 > secLen {
			return fmt.Errorf("%w: relocation at %#x lies outside %s", elfx.ErrMalformed, r.Offset, u.fixed.secName(sec))
		}
		return b.relocateTLS(u, sec, r, at)
	case elf.R_X86_64_TLSGD, elf.R_X86_64_TLSLD, elf.R_X86_64_DTPOFF32, elf.R_X86_64_DTPOFF64, elf.R_X86_64_GOTPC32_TLSDESC, elf.R_X86_64_TLSDESC_CALL:
		name := "a thread-local variable"
		if s, err := u.fixed.symbol(r.Sym); err == nil && s.Name != "" {
			name = "the thread-local variable " + s.Name
		}
		return fmt.Errorf("%w: %s reaches %s through __tls_get_addr (the general- or local-dynamic TLS model, %s), which a hot patch cannot link: compile the file with -ftls-model=initial-exec, or keep that access out of the changed functions", ErrRefused, b.owner(u, sec), name, r.Type)
	default:
		return fmt.Errorf("%w: %s has a relocation of type %s, which hot patches do not support (unusual code models cannot be linked into a running process); keep that code out of the changed functions", ErrRefused, b.owner(u, sec), r.Type)
	}
	t, err := b.resolve(u, sec, r)
	if err != nil {
		return err
	}
	where := b.owner(u, sec)
	if t.ifuncSlot != 0 {
		switch r.Type {
		case elf.R_X86_64_GOTPCREL, elf.R_X86_64_GOTPCRELX, elf.R_X86_64_REX_GOTPCRELX:
			b.addFixup(at, bundle.ModulePC32, int64(t.ifuncSlot)+r.Addend)
			return nil
		case elf.R_X86_64_PC32, elf.R_X86_64_PLT32:
			idx := b.stubAt(t.name, t.ifuncSlot)
			b.pending = append(b.pending, pendingRef{at: at, typ: r.Type, addend: r.Addend, to: ref{kind: refStub, idx: idx}, where: where})
			return nil
		}
		return fmt.Errorf("%w: %s takes the address of the IFUNC %s with a %s relocation; only calls and GOT loads of an IFUNC can be linked", ErrRefused, where, t.name, r.Type)
	}
	switch r.Type {
	case elf.R_X86_64_GOTPCREL, elf.R_X86_64_GOTPCRELX, elf.R_X86_64_REX_GOTPCRELX:
		// Prefer the target's own GOT slot: it honours interposition and
		// copy relocations exactly as the old code saw them.
		if t.global || t.imported {
			if slotAddr, ok := b.tgt.globDat[t.name]; ok {
				b.addFixup(at, bundle.ModulePC32, int64(slotAddr)+r.Addend)
				return nil
			}
			if slotAddr, ok := b.tgt.jmpSlot[t.name]; ok && t.isFunc {
				b.addFixup(at, bundle.ModulePC32, int64(slotAddr)+r.Addend)
				return nil
			}
		}
		if t.imported {
			return b.notImported(u, sec, t.name)
		}
		idx := b.localSlot(t)
		b.pending = append(b.pending, pendingRef{at: at, typ: elf.R_X86_64_PC32, addend: r.Addend, to: ref{kind: refSlot, idx: idx}, where: where})
		return nil
	}
	if t.imported {
		if !t.isFunc {
			return fmt.Errorf("%w: %s refers directly to %s, which %s takes from a shared library without a copy in the executable; compile the fix with the same -fPIC/-fPIE flags as the target", ErrRefused, where, t.name, b.tgt.name)
		}
		idx, err := b.stubFor(u, sec, t.name)
		if err != nil {
			return err
		}
		b.pending = append(b.pending, pendingRef{at: at, typ: r.Type, addend: r.Addend, to: ref{kind: refStub, idx: idx}, where: where})
		return nil
	}
	if t.inBundle {
		b.pending = append(b.pending, pendingRef{at: at, typ: r.Type, addend: r.Addend, to: t.to, where: where})
		return nil
	}
	switch r.Type {
	case elf.R_X86_64_PC32, elf.R_X86_64_PLT32:
		b.addFixup(at, bundle.ModulePC32, int64(t.vaddr)+r.Addend)
	case elf.R_X86_64_64:
		b.addFixup(at, bundle.ModuleAbs64, int64(t.vaddr)+r.Addend)
	case elf.R_X86_64_32:
		b.addFixup(at, bundle.ModuleAbs32, int64(t.vaddr)+r.Addend)
	case elf.R_X86_64_32S:
		b.addFixup(at, bundle.ModuleAbs32S, int64(t.vaddr)+r.Addend)
	}
	return nil
}

func (b *builder) addFixup(at uint64, kind bundle.FixupKind, addend int64) {
	b.fixups = append(b.fixups, bundle.Fixup{Offset: uint32(at), Kind: kind, Addend: addend})
}

func (b *builder) notImported(u *unit, sec int, name string) error {
	hint := ""
	switch name {
	case "memset", "memcpy", "memmove", "memcmp", "strlen":
		hint = fmt.Sprintf(" (gcc may emit %s for a loop or a struct copy the source does not spell out; writing through a volatile pointer keeps the loop)", name)
	}
	return fmt.Errorf("%w: %s now calls %s, which %s does not import%s; a hot patch cannot add a new library dependency: call something the target already uses, or ship the fix as a restart update", ErrRefused, b.owner(u, sec), name, b.tgt.name, hint)
}

// relocateTLS links a reference to a thread-local variable the module
// already has. Its offset from the thread pointer is fixed when the module
// is linked (an executable's TLS block sits right below the thread
// pointer), so local-exec references get the constant itself and
// initial-exec ones a GOT slot holding it: the module's own (a shared
// library's TPOFF64 slot) or, in an executable, whose linker turned its
// slots into constants, one in the bundle.
func (b *builder) relocateTLS(u *unit, sec int, r elfx.Reloc, at uint64) error {
	s, err := u.fixed.symbol(r.Sym)
	if err != nil {
		return err
	}
	def := s
	if s.Type == elf.STT_SECTION {
		def = b.objectAt(u, int(s.Section), s.Value, r)
	}
	if def == nil {
		return fmt.Errorf("%w: %s refers to thread-local storage in %s that belongs to no variable symbol", ErrRefused, b.owner(u, sec), u.fixed.secName(int(s.Section)))
	}
	name, local := def.Name, def.Bind == elf.STB_LOCAL
	if def.Defined() {
		os, err := b.origData(u, def)
		if err != nil {
			return err
		}
		if os == nil {
			return fmt.Errorf("%w: %s uses the thread-local variable %s, which %s does not have; a hot patch cannot add TLS to running threads: keep the state elsewhere", ErrRefused, b.owner(u, sec), def.Name, b.tgt.name)
		}
		name = os.Name
	}
	ts, err := b.tgt.lookup(name, local, u.src)
	if err != nil {
		if errors.Is(err, errNotInTarget) {
			return fmt.Errorf("%w: %s uses the thread-local variable %s, which %s does not define (it comes from another module); only the module's own TLS can be linked: keep that access out of the changed functions", ErrRefused, b.owner(u, sec), def.Name, b.tgt.name)
		}
		return err
	}
	if ts.Type != elf.STT_TLS {
		return fmt.Errorf("%w: %s uses %s as thread-local, but %s defines it as %s", ErrRefused, b.owner(u, sec), def.Name, b.tgt.name, ts.Type)
	}
	off := int64(ts.Value) - int64(def.Value) + int64(s.Value) // the variable's offset in the TLS block
	if s.Type == elf.STT_SECTION {
		off = int64(ts.Value) - int64(def.Value)
	}
	if r.Type == elf.R_X86_64_GOTTPOFF {
		if slot, ok := b.tgt.tpoff[def.Name]; ok && !local {
			b.addFixup(at, bundle.ModulePC32, int64(slot)+r.Addend)
			return nil
		}
		if slot, ok := b.tgt.tpoffStatic[uint64(off)]; ok {
			b.addFixup(at, bundle.ModulePC32, int64(slot)+r.Addend)
			return nil
		}
	}
	memsz, align, ok := b.tgt.f.TLSSegment()
	if !ok || b.tgt.f.Type == elf.ET_DYN && b.tgt.isLibrary() {
		return fmt.Errorf("%w: %s uses the thread-local variable %s, whose offset from the thread pointer %s decides only at load time; keep that access out of the changed functions", ErrRefused, b.owner(u, sec), def.Name, b.tgt.name)
	}
	if align == 0 {
		align = 1
	}
	tpoff := off - int64((memsz+align-1)/align*align)
	if r.Type == elf.R_X86_64_TPOFF32 {
		v := tpoff + r.Addend
		if v < -1<<31 || v >= 1<<31 {
			return fmt.Errorf("%w: %s: TLS offset of %s out of range", ErrRefused, b.owner(u, sec), def.Name)
		}
		binary.LittleEndian.PutUint32(b.code[at:], uint32(int32(v)))
		return nil
	}
	idx := b.constSlot(def.Name+"@tpoff", uint64(tpoff))
	b.pending = append(b.pending, pendingRef{at: at, typ: elf.R_X86_64_PC32, addend: r.Addend, to: ref{kind: refSlot, idx: idx}, where: b.owner(u, sec)})
	return nil
}

// constSlot returns a bundle GOT slot holding the constant v.
func (b *builder) constSlot(name string, v uint64) int {
	key := fmt.Sprintf("c%x:%s", v, name)
	if i, ok := b.slotIdx[key]; ok {
		return i
	}
	b.slots = append(b.slots, slot{name: name, constant: true, addr: v})
	b.slotIdx[key] = len(b.slots) - 1
	return len(b.slots) - 1
}

// stubAt returns a stub jumping through the GOT slot at slot.
func (b *builder) stubAt(name string, slot uint64) int {
	key := fmt.Sprintf("%s@%x", name, slot)
	if i, ok := b.stubIdx[key]; ok {
		return i
	}
	b.stubs = append(b.stubs, stub{name: name, slot: slot})
	b.stubIdx[key] = len(b.stubs) - 1
	return len(b.stubs) - 1
}

func (b *builder) stubFor(u *unit, sec int, name string) (int, error) {
	if i, ok := b.stubIdx[name]; ok {
		return i, nil
	}
	slotAddr, ok := b.tgt.jmpSlot[name]
	if !ok {
		slotAddr, ok = b.tgt.globDat[name]
	}
	if !ok {
		return 0, b.notImported(u, sec, name)
	}
	b.stubs = append(b.stubs, stub{name: name, slot: slotAddr})
	b.stubIdx[name] = len(b.stubs) - 1
	return len(b.stubs) - 1, nil
}

func (b *builder) localSlot(t resolved) int {
	key := fmt.Sprintf("m%x", t.vaddr)
	if t.inBundle {
		key = fmt.Sprintf("b%d:%d+%d", t.to.u.n, t.to.idx, t.to.add)
	}
	if i, ok := b.slotIdx[key]; ok {
		return i
	}
	s := slot{name: t.name, module: !t.inBundle, addr: t.vaddr, ref: t.to}
	if t.inBundle {
		s.name = b.secName(t.to.u, t.to.idx)
	}
	b.slots = append(b.slots, s)
	b.slotIdx[key] = len(b.slots) - 1
	return len(b.slots) - 1
}

// writeLocal resolves a reference to bundle code at offset to: PC-relative
// values are final now (the code moves as one block); absolute ones need the
// region's address and become region fixups.
func (b *builder) writeLocal(p pendingRef, to uint64) error {
	switch p.typ {
	case elf.R_X86_64_PC32, elf.R_X86_64_PLT32:
		v := int64(to) + p.addend - int64(p.at)
		if v < -1<<31 || v >= 1<<31 {
			return fmt.Errorf("%w: %s: a reference inside the patch spans %d bytes, beyond rel32 reach", ErrRefused, p.where, v)
		}
		binary.LittleEndian.PutUint32(b.code[p.at:], uint32(int32(v)))
	case elf.R_X86_64_64:
		b.addFixup(p.at, bundle.RegionAbs64, int64(to)+p.addend)
	case elf.R_X86_64_32:
		b.addFixup(p.at, bundle.RegionAbs32, int64(to)+p.addend)
	case elf.R_X86_64_32S:
		b.addFixup(p.at, bundle.RegionAbs32S, int64(to)+p.addend)
	default:
		return fmt.Errorf("%w: %s: relocation type %s against patch code", ErrRefused, p.where, p.typ)
	}
	return nil
}

// emit fills the bundle: sites checked against the target, new functions,
// consistency from the options.
func (b *builder) emit() error {
	mod := bundle.Module{BuildID: b.tgt.buildID, Name: b.tgt.name, Code: b.code}
	if b.opts.Quiescent {
		mod.Consistency = bundle.Quiescent
	}
	quiet := map[string]bool{}
	for _, n := range b.opts.QuiescentFuncs {
		quiet[n] = true
	}
	used := map[string]bool{}
	for _, u := range b.units {
		for _, fs := range u.changed {
			os, err := u.origFunc(fs)
			if err != nil {
				return err
			}
			ts, err := b.tgt.lookup(os.Name, os.Bind == elf.STB_LOCAL, u.src)
			if errors.Is(err, errNotInTarget) {
				// Nothing in the process runs the old copy: ship the new
				// one for the replaced callers, provided they all are.
				if err := b.callersReplaced(u, os, fs); err != nil {
					return err
				}
				mod.Funcs = append(mod.Funcs, bundle.Func{Name: fs.Name, New: true, Offset: uint32(u.placed[int(fs.Section)] + fs.Value), Size: uint32(fs.Size)})
				b.res.NotInTarget = append(b.res.NotInTarget, fs.Name)
				continue
			}
			if err != nil {
				return err
			}
			old, hash, err := b.tgt.oldBytes(ts)
			if err != nil {
				return err
			}
			if err := b.verify(u, os, ts, old); err != nil {
				return err
			}
			b.res.Verified++
			min := uint64(minFuncSize)
			if bytes.HasPrefix(old, endbr64) {
				min = minFuncSizeEndbr
			}
			if ts.Size < min {
				return fmt.Errorf("%w: function %s is %d bytes in %s, too small to redirect (a jump needs %d); patch its callers instead", ErrRefused, fs.Name, ts.Size, b.tgt.name, min)
			}
			if ts.Size > 1<<32-1 || fs.Size == 0 || fs.Size > 1<<32-1 {
				return fmt.Errorf("%w: function %s has an unusable size (%d in the target, %d in fixed.o)", ErrRefused, fs.Name, ts.Size, fs.Size)
			}
			f := bundle.Func{Name: fs.Name, Site: ts.Value, OldSize: uint32(ts.Size), OldHash: hash,
				Offset: uint32(u.placed[int(fs.Section)] + fs.Value), Size: uint32(fs.Size)}
			if quiet[fs.Name] {
				f.Consistency = bundle.Quiescent
				used[fs.Name] = true
			}
			mod.Funcs = append(mod.Funcs, f)
			c := Change{Name: fs.Name, Site: ts.Value, OldSize: ts.Size, NewSize: fs.Size, sym: fs}
			if os.Bind == elf.STB_LOCAL {
				c.File = ts.File
			}
			b.res.Changed = append(b.res.Changed, c)
		}
	}
	for _, n := range b.opts.QuiescentFuncs {
		if !used[n] {
			return fmt.Errorf("--quiescent-func %s: %s is not one of the changed functions (%s)", n, n, strings.Join(changedNames(b.res.Changed), ", "))
		}
	}
	for _, u := range b.units {
		for _, fs := range u.newFns {
			if fs.Size == 0 {
				return fmt.Errorf("%w: new function %s has size 0", ErrRefused, fs.Name)
			}
			mod.Funcs = append(mod.Funcs, bundle.Func{Name: fs.Name, New: true, Offset: uint32(u.placed[int(fs.Section)] + fs.Value), Size: uint32(fs.Size)})
		}
	}
	b.reportInlining()
	sort.SliceStable(b.fixups, func(i, j int) bool { return b.fixups[i].Offset < b.fixups[j].Offset })
	mod.Fixups = b.fixups
	bun := &bundle.Bundle{ID: b.opts.ID, Level: b.opts.Level, CVEs: b.opts.CVEs, Description: b.opts.Description, Modules: []bundle.Module{mod}}
	if err := bun.Validate(); err != nil {
		return fmt.Errorf("build bundle for %s: %w", b.tgt.name, err)
	}
	b.res.Bundle = bun
	return nil
}

// callersReplaced checks that every function of orig.o that refers to os,
// a changed function the target lacks, is replaced by the bundle.
func (b *builder) callersReplaced(u *unit, os, fs *elfx.Symbol) error {
	replaced := map[string]bool{}
	for _, c := range u.changed {
		if o, err := u.origFunc(c); err == nil && o != nil {
			replaced[o.Name] = true
		}
	}
	var missing []string
	for caller := range u.orig.referrers(os) {
		if caller != os.Name && !replaced[caller] {
			missing = append(missing, caller)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("%w: function %s changed but %s has no symbol %s, and its callers %s in %s did not change, so the fix would not reach them; check that --target was built from %s", ErrRefused, fs.Name, b.tgt.name, os.Name, strings.Join(missing, ", "), u.orig.path, u.orig.path)
	}
	return nil
}

func changedNames(cs []Change) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}
