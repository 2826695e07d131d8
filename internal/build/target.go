package build

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"hotfleet/internal/elfx"
)

// endbr64 opens functions built with -fcf-protection; the engine keeps it and
// writes its jump after it.
var endbr64 = []byte{0xf3, 0x0f, 0x1e, 0xfa}

// Smallest functions the engine can redirect: a 5-byte jmp rel32, after the
// 4-byte endbr64 when the function starts with one.
const (
	minFuncSize      = 5
	minFuncSizeEndbr = 9
)

// target is the binary the patch is linked against.
type target struct {
	path    string
	name    string
	f       *elfx.File
	buildID []byte
	syms    []elfx.Symbol
	dynsyms []elfx.Symbol
	globDat map[string]uint64 // GOT slot vaddr by symbol, from .rela.dyn GLOB_DAT
	jmpSlot map[string]uint64 // GOT slot vaddr by symbol, from .rela.plt JUMP_SLOT
	// relative holds the addend of each R_X86_64_RELATIVE slot: the GOT
	// entries of symbols the module itself defines, in PIE and -fPIC code.
	relative map[uint64]uint64
	// irelative maps an IFUNC resolver's address to the GOT slot the
	// dynamic loader fills with the implementation it picks.
	irelative map[uint64]uint64
	// tpoff holds the GOT slots of initial-exec TLS references the module
	// already has (R_X86_64_TPOFF64), by symbol name and, for a static
	// variable (no symbol), by its offset in the TLS block.
	tpoff       map[string]uint64
	tpoffStatic map[uint64]uint64
	// pltBySlot lists the PLT entries jumping through each GOT slot.
	pltBySlot map[uint64][]uint64
	// plt lists, by symbol, the PLT entries (.plt, .plt.sec, .plt.got) that
	// jump through that symbol's GOT slot.
	plt map[string][]uint64
	// Name indexes into syms and dynsyms (see index).
	byName, dynByName, byStaticBase map[string][]int
	// compilers are the "GCC: (...)" strings of .comment.
	compilers []string
}

func openTarget(path, symbols string) (*target, error) {
	f, err := elfx.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read target %s: %w", path, err)
	}
	t := &target{path: path, name: filepath.Base(path), f: f, globDat: map[string]uint64{}, jmpSlot: map[string]uint64{}}
	fail := func(err error) (*target, error) {
		f.Close()
		return nil, err
	}
	if f.Machine != elf.EM_X86_64 {
		return fail(fmt.Errorf("%w: target %s is for %s; the builder handles x86-64 only", ErrRefused, path, f.Machine))
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fail(fmt.Errorf("%w: target %s is %s; give the executable or shared library the processes run", ErrRefused, path, f.Type))
	}
	if t.buildID, err = f.BuildID(); err != nil {
		return fail(fmt.Errorf("read build-id of %s: %w", path, err))
	}
	if len(t.buildID) == 0 {
		return fail(fmt.Errorf("%w: target %s has no GNU build-id, so running copies cannot be recognised; relink it with -Wl,--build-id", ErrRefused, path))
	}
	if symbols != "" {
		if t.syms, err = symbolsFrom(symbols, path, t.buildID, f); err != nil {
			return fail(err)
		}
	} else if t.syms, err = f.Symbols(); err != nil {
		if errors.Is(err, elfx.ErrNoSymtab) {
			return fail(fmt.Errorf("%w: target %s is stripped (no .symtab), so its static functions and data cannot be found; give the unstripped build of the same binary, or its debug file, as --symbols", ErrRefused, path))
		}
		return fail(fmt.Errorf("read symbols of %s: %w", path, err))
	}
	if t.dynsyms, err = f.DynamicSymbols(); err != nil {
		return fail(fmt.Errorf("read dynamic symbols of %s: %w", path, err))
	}
	relocs, err := f.DynRelocs()
	if err != nil {
		return fail(fmt.Errorf("read dynamic relocations of %s: %w", path, err))
	}
	t.relative = map[uint64]uint64{}
	t.irelative = map[uint64]uint64{}
	t.tpoff, t.tpoffStatic = map[string]uint64{}, map[uint64]uint64{}
	for _, r := range relocs {
		switch r.Type {
		case elf.R_X86_64_GLOB_DAT:
			t.globDat[r.Name] = r.Offset
		case elf.R_X86_64_JMP_SLOT:
			t.jmpSlot[r.Name] = r.Offset
		case elf.R_X86_64_RELATIVE:
			t.relative[r.Offset] = uint64(r.Addend)
		case elf.R_X86_64_IRELATIVE:
			t.irelative[uint64(r.Addend)] = r.Offset
		case elf.R_X86_64_TPOFF64:
			if r.Name != "" {
				t.tpoff[r.Name] = r.Offset
			} else {
				t.tpoffStatic[uint64(r.Addend)] = r.Offset
			}
		}
	}
	if err := t.readPLT(); err != nil {
		return fail(err)
	}
	t.compilers = comments(f)
	if len(t.compilers) == 0 && symbols != "" {
		// Distributions strip .comment from the binary; the unstripped
		// build or debug file may still have it.
		if sf, err := elfx.Open(symbols); err == nil {
			t.compilers = comments(sf)
			sf.Close()
		}
	}
	return t, nil
}

// readPLT finds each PLT entry's GOT slot: the entry's "jmp *disp(%rip)"
// (ff 25, possibly after endbr64 and a bnd prefix) names it. Entries are 16
// bytes in .plt and .plt.sec, 8 in .plt.got and in a static executable's
// IFUNC PLT, so every "ff 25" that reaches a known GOT slot counts; an entry
// starts at its endbr64 when it has one.
func (t *target) readPLT() error {
	t.plt = map[string][]uint64{}
	t.pltBySlot = map[uint64][]uint64{}
	bySlot := map[uint64]string{}
	for n, a := range t.globDat {
		bySlot[a] = n
	}
	for n, a := range t.jmpSlot {
		bySlot[a] = n
	}
	known := map[uint64]bool{}
	for a := range bySlot {
		known[a] = true
	}
	for _, a := range t.irelative {
		known[a] = true
	}
	for i, s := range t.f.Sections {
		if s.Name != ".plt" && s.Name != ".plt.sec" && s.Name != ".plt.got" && s.Name != ".iplt" {
			continue
		}
		d, err := t.f.SectionData(i)
		if err != nil {
			return fmt.Errorf("read %s of %s: %w", s.Name, t.path, err)
		}
		for j := 0; j+6 <= len(d); j++ {
			if d[j] != 0xff || d[j+1] != 0x25 {
				continue
			}
			slot := s.Addr + uint64(j) + 6 + uint64(int64(int32(binary.LittleEndian.Uint32(d[j+2:]))))
			if !known[slot] {
				continue
			}
			start := j
			if start >= 1 && d[start-1] == 0xf2 { // bnd
				start--
			}
			entries := []uint64{s.Addr + uint64(start)}
			if start >= 4 && bytes.Equal(d[start-4:start], endbr64) {
				entries = append(entries, s.Addr+uint64(start-4))
			}
			t.pltBySlot[slot] = append(t.pltBySlot[slot], entries...)
			if n, ok := bySlot[slot]; ok {
				t.plt[n] = append(t.plt[n], entries...)
			}
			j += 5
		}
	}
	return nil
}

// comments returns the distinct compiler identification strings of a
// file's .comment section ("GCC: (Debian 12.2.0-14) 12.2.0").
func comments(f *elfx.File) []string {
	var out []string
	for i, s := range f.Sections {
		if s.Name != ".comment" {
			continue
		}
		d, err := f.SectionData(i)
		if err != nil {
			return nil
		}
		for _, c := range bytes.Split(d, []byte{0}) {
			str := string(c)
			if str == "" || slices.Contains(out, str) {
				continue
			}
			out = append(out, str)
		}
	}
	return out
}

func (t *target) close() { t.f.Close() }

// symbolsFrom reads the .symtab of symbols, an unstripped copy (or debug
// file) of the target. Only its symbols are used; the code the bundle
// replaces is always read from the target itself. The two must be the same
// build: the same build-id, or, for a rebuild of a distribution's binary
// whose build-id differs only through its debug information (a build path
// recorded there), the same loadable contents: every allocated section of
// the target present in symbols at the same address with the same bytes.
// Then every address symbols names is the target's.
func symbolsFrom(symbols, target string, buildID []byte, tf *elfx.File) ([]elfx.Symbol, error) {
	sf, err := elfx.Open(symbols)
	if err != nil {
		return nil, fmt.Errorf("read symbols file %s: %w", symbols, err)
	}
	defer sf.Close()
	id, err := sf.BuildID()
	if err != nil {
		return nil, fmt.Errorf("read build-id of symbols file %s: %w", symbols, err)
	}
	if !bytes.Equal(id, buildID) {
		if why := sameLoadable(tf, sf); why != "" {
			return nil, fmt.Errorf("%w: symbols file %s has build-id %x but target %s has %x, and they are different builds (%s); give the unstripped binary (or debug file) of exactly this build, or a rebuild whose code and data are identical", ErrRefused, symbols, id, target, buildID, why)
		}
	}
	syms, err := sf.Symbols()
	if err != nil {
		if errors.Is(err, elfx.ErrNoSymtab) {
			return nil, fmt.Errorf("%w: symbols file %s is stripped too (no .symtab); give the unstripped build or its debug file", ErrRefused, symbols)
		}
		return nil, fmt.Errorf("read symbols of %s: %w", symbols, err)
	}
	return syms, nil
}

// sameLoadable compares what the loader maps of two ELF files: every
// allocated section of t with contents (the build-id note aside) must exist
// in o with the same address, size and bytes. It returns "" when they are
// the same, else what differs.
func sameLoadable(t, o *elfx.File) string {
	compared := 0
	for i, ts := range t.Sections {
		if i == 0 || ts.Flags&elf.SHF_ALLOC == 0 || ts.Type == elf.SHT_NOBITS || ts.Name == ".note.gnu.build-id" {
			continue
		}
		j := slices.IndexFunc(o.Sections, func(s *elf.Section) bool { return s.Name == ts.Name })
		if j <= 0 {
			return "section " + ts.Name + " is missing from the symbols file"
		}
		osec := o.Sections[j]
		if osec.Type == elf.SHT_NOBITS {
			return "the symbols file holds no contents for " + ts.Name + " (a debug file must match by build-id)"
		}
		if osec.Addr != ts.Addr || osec.Size != ts.Size {
			return fmt.Sprintf("section %s is %d bytes at %#x in the target, %d bytes at %#x in the symbols file", ts.Name, ts.Size, ts.Addr, osec.Size, osec.Addr)
		}
		td, err1 := t.SectionData(i)
		od, err2 := o.SectionData(j)
		if err1 != nil || err2 != nil {
			return "section " + ts.Name + " cannot be read"
		}
		if !bytes.Equal(td, od) {
			return "the contents of " + ts.Name + " differ"
		}
		compared++
	}
	if compared == 0 {
		return "the target has no loadable sections to compare"
	}
	return ""
}

// isLibrary reports whether the target is a shared library rather than a
// (position-independent) executable: it has no PT_INTERP.
func (t *target) isLibrary() bool {
	return t.f.Type == elf.ET_DYN && !t.f.HasInterp()
}

// errNotInTarget is returned by lookup when the target has no such symbol.
var errNotInTarget = errors.New("not defined in the target")

func isDataOrFunc(s elfx.Symbol) bool {
	return s.Defined() && s.Type != elf.STT_SECTION && s.Type != elf.STT_FILE
}

// lookup finds the target's definition of name. Local (static) symbols are
// matched within the source file file, so two static functions of the same
// name in different files never get confused; a function-scope static
// ("count.1") whose number changed is matched by its base name when that is
// unique in the file.
func (t *target) lookup(name string, local bool, src fileRef) (elfx.Symbol, error) {
	file := src.name
	t.index()
	if !local {
		for _, i := range t.byName[name] {
			if s := t.syms[i]; s.Bind != elf.STB_LOCAL && isDataOrFunc(s) {
				return s, nil
			}
		}
		for _, i := range t.dynByName[name] {
			if s := t.dynsyms[i]; s.Bind != elf.STB_LOCAL && isDataOrFunc(s) {
				return s, nil
			}
		}
		if _, ok := t.jmpSlot[name]; ok {
			return elfx.Symbol{}, errNotInTarget // imported from a library
		}
		if _, ok := t.globDat[name]; ok {
			return elfx.Symbol{}, errNotInTarget
		}
		// Hidden globals (-fvisibility=hidden, visibility attributes) become
		// local symbols when linked; accept one when its name is unique.
		var hidden []elfx.Symbol
		for _, i := range t.byName[name] {
			if s := t.syms[i]; s.Bind == elf.STB_LOCAL && isDataOrFunc(s) && s.Name == name {
				hidden = append(hidden, s)
			}
		}
		if len(hidden) > 1 {
			// The linker lists symbols it made local after an empty
			// STT_FILE; statics of the same name sit under their file.
			var linkerMade []elfx.Symbol
			for _, s := range hidden {
				if s.File == "" {
					linkerMade = append(linkerMade, s)
				}
			}
			if len(linkerMade) == 1 {
				hidden = linkerMade
			}
		}
		if len(hidden) == 1 {
			return hidden[0], nil
		}
		if len(hidden) > 1 {
			return elfx.Symbol{}, fmt.Errorf("%w: %s has no global %s but %d local symbols of that name, and the builder cannot tell which one is meant", ErrRefused, t.path, name, len(hidden))
		}
		return elfx.Symbol{}, errNotInTarget
	}
	match := func(idx []int, eq func(string) bool) []elfx.Symbol {
		var out []elfx.Symbol
		for _, i := range idx {
			if s := t.syms[i]; s.Bind == elf.STB_LOCAL && isDataOrFunc(s) && eq(s.Name) {
				out = append(out, s)
			}
		}
		return out
	}
	inFile := func(c []elfx.Symbol) []elfx.Symbol {
		var out []elfx.Symbol
		for _, s := range c {
			if file == "" || s.File == "" || sameFile(s.File, file) && (src.group == 0 || s.FileIndex == src.group) {
				out = append(out, s)
			}
		}
		return out
	}
	c := inFile(match(t.byName[name], func(n string) bool { return n == name }))
	if len(c) == 0 {
		base := staticLocalBase(name)
		if base != name {
			c = inFile(match(t.byStaticBase[base], func(n string) bool { return staticLocalBase(n) == base && n != base }))
		}
	}
	switch len(c) {
	case 0:
		return elfx.Symbol{}, errNotInTarget
	case 1:
		return c[0], nil
	}
	return elfx.Symbol{}, fmt.Errorf("%w: %d static symbols named %s in source files named %s of %s, and the builder cannot tell which one the object means (several files of that name define the same static names); rename one of them", ErrRefused, len(c), name, file, t.path)
}

// index builds the name indexes lookup uses, once: big C++ programs have
// millions of symbols and a build looks up thousands of names.
func (t *target) index() {
	if t.byName != nil {
		return
	}
	t.byName, t.dynByName, t.byStaticBase = map[string][]int{}, map[string][]int{}, map[string][]int{}
	for i, s := range t.syms {
		t.byName[s.BaseName()] = append(t.byName[s.BaseName()], i)
		if s.BaseName() != s.Name {
			t.byName[s.Name] = append(t.byName[s.Name], i)
		}
		if s.Bind == elf.STB_LOCAL {
			if b := staticLocalBase(s.Name); b != s.Name {
				t.byStaticBase[b] = append(t.byStaticBase[b], i)
			}
		}
	}
	for i, s := range t.dynsyms {
		t.dynByName[s.BaseName()] = append(t.dynByName[s.BaseName()], i)
	}
}

// fileRef names a source file of the target: its name, and when several
// files have that name, which one (the STT_FILE symbol's index).
type fileRef struct {
	name  string
	group int
}

// fileOf finds which of the target's source files o was compiled from.
// Files are matched by name; when several have o's name, by the local
// functions and variables they define: the one defining all of o's.
func (t *target) fileOf(o *object) fileRef {
	ref := fileRef{name: o.file}
	names := map[int]map[string]bool{}
	for _, s := range t.syms {
		if s.Bind == elf.STB_LOCAL && s.FileIndex != 0 && sameFile(s.File, o.file) && isDataOrFunc(s) {
			if names[s.FileIndex] == nil {
				names[s.FileIndex] = map[string]bool{}
			}
			names[s.FileIndex][s.Name] = true
		}
	}
	if len(names) < 2 {
		return ref
	}
	var mine []string
	for _, s := range o.syms {
		if s.Bind == elf.STB_LOCAL && s.Defined() && s.Section < elf.SHN_LORESERVE && (s.Type == elf.STT_FUNC || s.Type == elf.STT_OBJECT) && !strings.HasPrefix(s.Name, ".") {
			mine = append(mine, s.Name)
		}
	}
	var fits []int
	for g, have := range names {
		all := len(mine) > 0
		for _, n := range mine {
			all = all && have[n]
		}
		if all {
			fits = append(fits, g)
		}
	}
	if len(fits) == 1 {
		ref.group = fits[0]
	}
	return ref
}

// oldBytes reads a function's bytes from the target file and hashes them, as
// the agent will hash them in memory before writing.
func (t *target) oldBytes(s elfx.Symbol) ([]byte, []byte, error) {
	b, err := t.f.ReadAt(s.Value, s.Size)
	if err != nil {
		return nil, nil, fmt.Errorf("read function %s at %#x in %s: %w", s.Name, s.Value, t.path, err)
	}
	h := sha256.Sum256(b)
	return b, h[:], nil
}
