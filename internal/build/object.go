package build

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"hotfleet/internal/elfx"
)

// secKind says what a section of a relocatable object holds, which decides
// whether the builder copies it into the bundle or binds to the target's copy.
type secKind int

const (
	secOther    secKind = iota // not loaded (debug info, notes, ...)
	secText                    // a function's code
	secCold                    // a .cold fragment split off a function
	secRodata                  // read-only data: copied when referenced
	secStrings                 // mergeable string literals: copied when referenced
	secWritable                // .data/.bss/.data.rel.ro: never copied, bound to the target
	secTLS                     // thread-local storage: refused
)

// object is one parsed relocatable object (orig.o or fixed.o).
type object struct {
	path     string
	f        *elfx.File
	syms     []elfx.Symbol
	relocs   map[int][]elfx.Reloc
	file     string // the source file named by the first STT_FILE symbol
	funcs    map[string]*elfx.Symbol
	dataSyms []*elfx.Symbol       // writable and TLS variables
	secDef   map[int]*elfx.Symbol // the symbol a section was emitted for
	data     map[int][]byte
	// byKey groups functions and cold fragments by cloneKey: the clones
	// of one function of one kind ("scale.constprop.0", ".1") together.
	byKey map[string][]*elfx.Symbol
	// lsda maps a code section to the section holding its exception
	// table (landing pads), from the .eh_frame FDE that covers it.
	lsda map[int]int
	// coldSec marks code sections holding only split-off fragments
	// (symbols named "f.cold", "f.part.0.cold").
	coldSec map[int]bool
	// refs caches nextRef's referenced offsets, by section.
	refs map[int][]int64
	// cxx says the object is C++ (mangled names, exception tables or the
	// C++ personality routine): exceptions may unwind through its code.
	cxx bool
}

func openObject(path, role string) (*object, error) {
	f, err := elfx.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read %s %s: %w", role, path, err)
	}
	if f.Type != elf.ET_REL {
		f.Close()
		return nil, fmt.Errorf("%w: %s %s is %s, not a relocatable object: compile it with -c", ErrRefused, role, path, f.Type)
	}
	if f.Machine != elf.EM_X86_64 {
		f.Close()
		return nil, fmt.Errorf("%w: %s %s is for %s; the builder handles x86-64 objects only", ErrRefused, role, path, f.Machine)
	}
	for _, sec := range f.Sections {
		if strings.HasPrefix(sec.Name, ".gnu.lto_") {
			f.Close()
			return nil, fmt.Errorf("%w: %s %s was built with -flto (it holds %s, compiler IR rather than final code); its code is only decided at link time, so it cannot be compared with the target: rebuild without LTO (-fno-lto), or ship the fix as a restart update", ErrRefused, role, path, sec.Name)
		}
	}
	o := &object{path: path, f: f, funcs: map[string]*elfx.Symbol{}, secDef: map[int]*elfx.Symbol{}, data: map[int][]byte{}, byKey: map[string][]*elfx.Symbol{}, coldSec: map[int]bool{}}
	if o.syms, err = f.Symbols(); err != nil {
		f.Close()
		return nil, fmt.Errorf("read symbols of %s %s: %w", role, path, err)
	}
	if o.relocs, err = f.SectionRelocs(); err != nil {
		f.Close()
		return nil, fmt.Errorf("read relocations of %s %s: %w", role, path, err)
	}
	whole := map[int]bool{}
	for i := range o.syms {
		s := &o.syms[i]
		if s.Type != elf.STT_FUNC || !s.Defined() || s.Section >= elf.SHN_LORESERVE {
			continue
		}
		if isColdName(s.Name) {
			o.coldSec[int(s.Section)] = true
		} else {
			whole[int(s.Section)] = true
		}
	}
	for sec := range whole {
		delete(o.coldSec, sec)
	}
	for i := range o.syms {
		s := &o.syms[i]
		if s.Type == elf.STT_FILE && o.file == "" {
			o.file = s.Name
		}
		if !s.Defined() || s.Section >= elf.SHN_LORESERVE || int(s.Section) >= len(f.Sections) {
			continue
		}
		sec := int(s.Section)
		switch s.Type {
		case elf.STT_FUNC:
			if strings.Contains(s.Name, ".lto_priv.") {
				f.Close()
				return nil, fmt.Errorf("%w: %s %s defines %s, a function from link-time optimisation: rebuild without LTO (-fno-lto), or ship the fix as a restart update", ErrRefused, role, path, s.Name)
			}
			o.byKey[cloneKey(s.Name)] = append(o.byKey[cloneKey(s.Name)], s)
			if isColdName(s.Name) {
				o.secDef[sec] = s
				continue
			}
			if _, dup := o.funcs[s.Name]; dup {
				f.Close()
				return nil, fmt.Errorf("%w: %s defines function %s twice", ErrRefused, path, s.Name)
			}
			// A second name for the same code ("f.localalias", which gcc
			// gives -fPIC functions for calls that bypass interposition):
			// one function, under its global name.
			if prev := o.secDef[sec]; prev != nil && prev.Type == elf.STT_FUNC && prev.Value == s.Value {
				// Keep the global name, and of two, the shorter one
				// (libxml2's xmlFoo over its xmlFoo__internal_alias).
				if prev.Bind != elf.STB_LOCAL && s.Bind == elf.STB_LOCAL || (prev.Bind == elf.STB_LOCAL) == (s.Bind == elf.STB_LOCAL) && len(prev.Name) <= len(s.Name) {
					continue
				}
				delete(o.funcs, prev.Name)
			}
			o.funcs[s.Name] = s
			o.secDef[sec] = s
		case elf.STT_OBJECT, elf.STT_TLS:
			if old := o.secDef[sec]; old == nil || old.Value != 0 {
				o.secDef[sec] = s
			}
			if k := o.kind(sec); k == secWritable || k == secTLS || s.Type == elf.STT_TLS {
				o.dataSyms = append(o.dataSyms, s)
			}
		}
	}
	o.findLSDAs()
	for _, s := range o.syms {
		if strings.HasPrefix(s.Name, "_Z") || s.Name == "__gxx_personality_v0" || s.Name == "DW.ref.__gxx_personality_v0" {
			o.cxx = true
			break
		}
	}
	o.cxx = o.cxx || len(o.lsda) > 0
	return o, nil
}

func (o *object) close() { o.f.Close() }

// findLSDAs reads which code sections have an exception table: an FDE's
// relocations name its code (pc_begin) and, a few bytes later, its LSDA
// in .gcc_except_table.
func (o *object) findLSDAs() {
	o.lsda = map[int]int{}
	for i, sec := range o.f.Sections {
		if sec.Name != ".eh_frame" {
			continue
		}
		rels := o.relocsIn(i, 0, ^uint64(0))
		for k := 0; k+1 < len(rels); k++ {
			a, c := rels[k], rels[k+1]
			if a.Sym <= 0 || a.Sym >= len(o.syms) || c.Sym <= 0 || c.Sym >= len(o.syms) || c.Offset-a.Offset > 16 {
				continue
			}
			code, tab := int(o.syms[a.Sym].Section), int(o.syms[c.Sym].Section)
			if k := o.kind(code); (k == secText || k == secCold) && strings.HasPrefix(o.secName(tab), ".gcc_except_table") {
				o.lsda[code] = tab
			}
		}
	}
}

func (o *object) sec(i int) *elf.Section {
	if i <= 0 || i >= len(o.f.Sections) {
		return nil
	}
	return o.f.Sections[i]
}

// secName names section i for messages, even when i is out of range.
func (o *object) secName(i int) string {
	if s := o.sec(i); s != nil {
		return s.Name
	}
	return fmt.Sprintf("<section %d>", i)
}

func (o *object) kind(i int) secKind {
	s := o.sec(i)
	if s == nil || s.Flags&elf.SHF_ALLOC == 0 {
		return secOther
	}
	switch {
	case s.Flags&elf.SHF_TLS != 0:
		return secTLS
	case s.Flags&elf.SHF_EXECINSTR != 0:
		// A fragment gcc split off a function ("f.cold"), not a whole
		// function that happens to live in .text.unlikely.f (a cold one).
		if o.coldSec[i] {
			return secCold
		}
		return secText
	case s.Flags&elf.SHF_WRITE != 0 && (s.Name == ".data.rel.ro" || strings.HasPrefix(s.Name, ".data.rel.ro.")):
		// Constant data holding addresses (tables of strings, functions,
		// labels): written only by the dynamic loader, then read-only. It
		// travels with the new code like .rodata, its addresses becoming
		// fixups, so a table pointing into a changed function points into
		// the new code.
		return secRodata
	case s.Flags&elf.SHF_WRITE != 0:
		return secWritable
	case s.Flags&(elf.SHF_MERGE|elf.SHF_STRINGS) == elf.SHF_MERGE|elf.SHF_STRINGS:
		return secStrings
	case s.Type == elf.SHT_PROGBITS:
		return secRodata
	}
	return secOther
}

func (o *object) sectionData(i int) ([]byte, error) {
	if d, ok := o.data[i]; ok {
		return d, nil
	}
	d, err := o.f.SectionData(i)
	if err != nil {
		return nil, fmt.Errorf("read section %d of %s: %w", i, o.path, err)
	}
	o.data[i] = d
	return d, nil
}

// funcBytes returns the bytes of a function symbol.
func (o *object) symBytes(s *elfx.Symbol) ([]byte, error) {
	d, err := o.sectionData(int(s.Section))
	if err != nil {
		return nil, err
	}
	if s.Value > uint64(len(d)) || s.Size > uint64(len(d))-s.Value {
		return nil, fmt.Errorf("%w: symbol %s lies outside its section in %s", elfx.ErrMalformed, s.Name, o.path)
	}
	return d[s.Value : s.Value+s.Size], nil
}

// relocsIn returns the relocations of section sec that fall in [lo, hi),
// sorted by offset.
func (o *object) relocsIn(sec int, lo, hi uint64) []elfx.Reloc {
	var out []elfx.Reloc
	for _, r := range o.relocs[sec] {
		if r.Offset >= lo && r.Offset < hi {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Offset < out[j].Offset })
	return out
}

func (o *object) symbol(idx int) (*elfx.Symbol, error) {
	if idx <= 0 || idx >= len(o.syms) {
		return nil, fmt.Errorf("%w: relocation names symbol %d of %d in %s", elfx.ErrMalformed, idx, len(o.syms), o.path)
	}
	return &o.syms[idx], nil
}

// isPCRel reports whether r's addend includes the displacement-to-end
// adjustment (usually -4) of a RIP-relative operand.
func isPCRel(t elf.R_X86_64) bool {
	switch t {
	case elf.R_X86_64_PC32, elf.R_X86_64_PLT32, elf.R_X86_64_GOTPCREL, elf.R_X86_64_GOTPCRELX, elf.R_X86_64_REX_GOTPCRELX:
		return true
	}
	return false
}

// staticLocalBase strips the ".N" gcc appends to a function-scope static
// ("calls.0"): the number may differ between two builds of one file.
func staticLocalBase(name string) string {
	i := strings.LastIndexByte(name, '.')
	if i <= 0 || i == len(name)-1 {
		return name
	}
	if _, err := strconv.Atoi(name[i+1:]); err != nil {
		return name
	}
	return name[:i]
}

// isColdName reports whether a function symbol is a fragment gcc split
// off its function: "f.cold", "f.cold.3", "f.part.0.cold".
func isColdName(name string) bool {
	i := strings.Index(name, ".cold")
	return i > 0 && (len(name) == i+5 || name[i+5] == '.')
}

// cloneKey names a function's clone independently of gcc's numbering:
// "scale.constprop.0" and "scale.constprop.1" are both "scale.constprop",
// "f.part.0.isra.0" is "f.part.isra". gcc numbers the clones of a function
// in the order it makes them, which a fix elsewhere in the file can change.
func cloneKey(name string) string {
	if !strings.Contains(name, ".") {
		return name
	}
	parts := strings.Split(name, ".")
	out := parts[:1]
	for _, p := range parts[1:] {
		if _, err := strconv.Atoi(p); err == nil && p != "" {
			continue
		}
		out = append(out, p)
	}
	return strings.Join(out, ".")
}

// referrers returns the names of the functions whose code refers to the
// variable v, directly or through its section symbol.
func (o *object) referrers(v *elfx.Symbol) map[string]bool {
	out := map[string]bool{}
	for sec, rels := range o.relocs {
		k := o.kind(sec)
		if k != secText && k != secCold {
			continue
		}
		def := o.secDef[sec]
		if def == nil {
			continue
		}
		name := def.Name
		if i := strings.Index(name, ".cold"); i > 0 {
			name = name[:i]
		}
		for _, r := range rels {
			if r.Sym <= 0 || r.Sym >= len(o.syms) {
				continue
			}
			s := &o.syms[r.Sym]
			if s == v || s.Type == elf.STT_SECTION && s.Section == v.Section && o.secDef[int(v.Section)] == v {
				out[name] = true
			}
		}
	}
	return out
}

// nextRef returns the first offset after at in section sec that a
// relocation anywhere in the object refers to (a symbol, or a section
// symbol plus addend), or the section's end: where the item at at ends.
func (o *object) nextRef(sec int, at int64) int64 {
	if o.refs == nil {
		o.refs = map[int][]int64{}
		for _, rels := range o.relocs {
			for _, r := range rels {
				if r.Sym <= 0 || r.Sym >= len(o.syms) {
					continue
				}
				s := &o.syms[r.Sym]
				if !s.Defined() || s.Section >= elf.SHN_LORESERVE {
					continue
				}
				off := int64(s.Value)
				if s.Type == elf.STT_SECTION {
					off = r.Addend
					if isPCRel(r.Type) {
						off += 4
					}
				}
				o.refs[int(s.Section)] = append(o.refs[int(s.Section)], off)
			}
		}
		for i := range o.syms {
			s := &o.syms[i]
			if s.Type == elf.STT_OBJECT && s.Defined() && s.Section < elf.SHN_LORESERVE {
				o.refs[int(s.Section)] = append(o.refs[int(s.Section)], int64(s.Value))
			}
		}
	}
	end := int64(0)
	if h := o.sec(sec); h != nil {
		end = int64(h.Size)
	}
	for _, r := range o.refs[sec] {
		if r > at && r < end {
			end = r
		}
	}
	return end
}

// stringAt returns the NUL-terminated string at off in a string section.
func stringAt(d []byte, off int64) string {
	if off < 0 || off >= int64(len(d)) {
		return fmt.Sprintf("<offset %d>", off)
	}
	s := d[off:]
	if i := bytes.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	return string(s)
}

// targetKey describes what a relocation refers to independently of how the
// compiler numbered sections and labels: a symbol name, the defining symbol
// of a section, or the contents of a string literal. For copied data (rodata,
// cold fragments) the key includes a digest of the contents, so a changed
// table makes the function that reads it changed. The second result is the
// addend rebased onto the named thing.
func (o *object) targetKey(r elfx.Reloc, depth int) (string, int64, error) {
	s, err := o.symbol(r.Sym)
	if err != nil {
		return "", 0, err
	}
	if !s.Defined() || s.Section >= elf.SHN_LORESERVE {
		return s.Name, r.Addend, nil
	}
	sec := int(s.Section)
	kind := o.kind(sec)
	if kind == secStrings {
		d, err := o.sectionData(sec)
		if err != nil {
			return "", 0, err
		}
		if s.Type == elf.STT_SECTION {
			off := r.Addend
			if isPCRel(r.Type) {
				off += 4
			}
			return "str:" + strconv.Quote(stringAt(d, off)), 0, nil
		}
		return "str:" + strconv.Quote(stringAt(d, int64(s.Value))), r.Addend, nil
	}
	name := s.Name
	addend := r.Addend
	if s.Type == elf.STT_SECTION {
		if def := o.secDef[sec]; def != nil {
			name = def.Name
			addend -= int64(def.Value)
		} else {
			name = "section:" + o.secName(sec)
		}
	}
	if s.Type == elf.STT_OBJECT && s.Bind == elf.STB_LOCAL {
		name = staticLocalBase(name)
	} else if kind == secText || kind == secCold {
		name = cloneKey(name)
	} else if def := o.secDef[sec]; s.Type == elf.STT_SECTION && def != nil && def.Bind == elf.STB_LOCAL && def.Type == elf.STT_OBJECT {
		name = staticLocalBase(name)
	}
	if depth == 0 && (kind == secRodata || kind == secCold) {
		sum, err := o.contentDigest(sec)
		if err != nil {
			return "", 0, err
		}
		name += "#" + sum
	}
	return name, addend, nil
}

// contentDigest hashes a section's bytes and normalised relocations.
func (o *object) contentDigest(sec int) (string, error) {
	d, err := o.sectionData(sec)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	h.Write(d)
	for _, r := range o.relocsIn(sec, 0, ^uint64(0)) {
		k, a, err := o.targetKey(r, 1)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "\x00%d:%d:%s:%d", r.Offset, r.Type, k, a)
	}
	return hex.EncodeToString(h.Sum(nil)[:8]), nil
}

// funcSignature is what makes two builds of a function the same: its bytes
// and its normalised relocations.
func (o *object) funcSignature(s *elfx.Symbol) ([]byte, []string, error) {
	code, err := o.symBytes(s)
	if err != nil {
		return nil, nil, err
	}
	var rels []string
	for _, r := range o.relocsIn(int(s.Section), s.Value, s.Value+s.Size) {
		k, a, err := o.targetKey(r, 0)
		if err != nil {
			return nil, nil, err
		}
		rels = append(rels, fmt.Sprintf("%d:%d:%s:%d", r.Offset-s.Value, r.Type, k, a))
	}
	return code, rels, nil
}

func sameFile(a, b string) bool {
	return filepath.Base(a) == filepath.Base(b)
}
