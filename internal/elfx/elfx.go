// Package elfx reads the parts of ELF files that hotfleet needs: the GNU
// build-id, the file type, symbols grouped by the source file that defined
// them, section headers and relocations, for x86-64 executables, shared
// libraries and relocatable objects.
//
// Trust: the input is untrusted. Every entry point returns an error, never
// panics, on malformed input: debug/elf is wrapped and any panic inside it is
// recovered at this package's boundary. Sizes and counts are bounded by the
// limits below so a hostile file cannot make the reader allocate without bound.
package elfx

import (
	"bytes"
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Limits applied while reading, so a crafted file cannot exhaust memory.
const (
	MaxFileSize    = 1 << 30   // 1 GiB: larger than any binary hotfleet patches
	MaxSections    = 1 << 16   // ELF section indices are 16-bit in practice
	MaxSymbols     = 1 << 22   // big C++ binaries have a few million symbols
	MaxRelocs      = 1 << 22   // per relocation section
	MaxSectionRead = 256 << 20 // bytes read from any one section
	MaxNotesSize   = 1 << 20   // notes are tiny; build-ids are 20 bytes
)

// ErrMalformed is wrapped by errors about input that is not a valid ELF file
// or breaks one of the limits.
var ErrMalformed = errors.New("malformed ELF file")

// ErrNoSymtab is returned by File.Symbols when the file has no .symtab: it was
// stripped.
var ErrNoSymtab = errors.New("no .symtab (the file is stripped)")

// Symbol is one symbol with the source file it came from.
type Symbol struct {
	// Index is the symbol's index in its table (0 is the null symbol), as
	// relocations name it.
	Index   int
	Name    string // for .symtab names of versioned symbols: "puts@GLIBC_2.2.5"
	Value   uint64
	Size    uint64
	Type    elf.SymType
	Bind    elf.SymBind
	Section elf.SectionIndex
	// File is the name of the STT_FILE symbol that precedes a local symbol in
	// .symtab (the source file that defined it); empty for globals.
	File string
	// FileIndex is the table index of that STT_FILE symbol: it tells apart
	// two source files of the same name (src/a/util.c and src/b/util.c are
	// both "util.c"). 0 for globals.
	FileIndex int
}

// BaseName is the symbol name without a "@VERSION" or "@@VERSION" suffix.
func (s Symbol) BaseName() string {
	if i := strings.IndexByte(s.Name, '@'); i > 0 {
		return s.Name[:i]
	}
	return s.Name
}

// Defined reports whether the symbol is defined in this file.
func (s Symbol) Defined() bool { return s.Section != elf.SHN_UNDEF }

// Reloc is one RELA relocation. Offset is a section offset in relocatable
// objects and a virtual address in linked files.
type Reloc struct {
	Offset uint64
	Type   elf.R_X86_64
	Sym    int // index into the symbol table the relocation section links to
	Addend int64
}

// DynReloc is a dynamic relocation of a linked file with its symbol name
// resolved through .dynsym.
type DynReloc struct {
	Section string // .rela.plt or .rela.dyn
	Offset  uint64 // vaddr of the slot
	Type    elf.R_X86_64
	Name    string // symbol name without version; empty for RELATIVE
	Addend  int64
}

// File is an opened ELF file. Its methods never panic.
type File struct {
	f     *elf.File
	close io.Closer
	Type  elf.Type
	// Machine of the file; only EM_X86_64 files have relocations decoded.
	Machine  elf.Machine
	Sections []*elf.Section
}

// Open opens the ELF file at path.
func Open(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	st, err := fh.Stat()
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Size() > MaxFileSize {
		fh.Close()
		return nil, fmt.Errorf("%s: %w: %d bytes is over the limit of %d", path, ErrMalformed, st.Size(), MaxFileSize)
	}
	f, err := NewFile(fh)
	if err != nil {
		fh.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f.close = fh
	return f, nil
}

// NewFile reads an ELF file from r.
func NewFile(r io.ReaderAt) (f *File, err error) {
	defer recoverInto(&err)
	ef, err := elf.NewFile(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if len(ef.Sections) > MaxSections {
		return nil, fmt.Errorf("%w: %d sections, the limit is %d", ErrMalformed, len(ef.Sections), MaxSections)
	}
	return &File{f: ef, Type: ef.Type, Machine: ef.Machine, Sections: ef.Sections}, nil
}

// Close releases the file opened by Open.
func (f *File) Close() error {
	if f.close != nil {
		return f.close.Close()
	}
	return nil
}

func recoverInto(err *error) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: reader failed on corrupt data: %v", ErrMalformed, r)
	}
}

// Section returns the section with the given name, or nil.
func (f *File) Section(name string) *elf.Section {
	for _, s := range f.Sections {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// SectionData returns the contents of section i (zeros for SHT_NOBITS).
func (f *File) SectionData(i int) (data []byte, err error) {
	defer recoverInto(&err)
	if i <= 0 || i >= len(f.Sections) {
		return nil, fmt.Errorf("%w: no section %d", ErrMalformed, i)
	}
	s := f.Sections[i]
	if s.Size > MaxSectionRead {
		return nil, fmt.Errorf("%w: section %s is %d bytes, the limit is %d", ErrMalformed, s.Name, s.Size, MaxSectionRead)
	}
	if s.Type == elf.SHT_NOBITS {
		return make([]byte, s.Size), nil
	}
	if s.Flags&elf.SHF_COMPRESSED != 0 {
		return nil, fmt.Errorf("section %s is compressed, which hotfleet does not read", s.Name)
	}
	data = make([]byte, s.Size)
	if _, err := s.ReadAt(data, 0); err != nil {
		return nil, fmt.Errorf("%w: read section %s: %v", ErrMalformed, s.Name, err)
	}
	return data, nil
}

// BuildID returns the GNU build-id from a note section or a PT_NOTE segment,
// or nil when the file has none.
func (f *File) BuildID() (id []byte, err error) {
	defer recoverInto(&err)
	for _, s := range f.Sections {
		if s.Type != elf.SHT_NOTE {
			continue
		}
		if s.Size > MaxNotesSize {
			return nil, fmt.Errorf("%w: note section %s is %d bytes", ErrMalformed, s.Name, s.Size)
		}
		data := make([]byte, s.Size)
		if _, err := s.ReadAt(data, 0); err != nil {
			return nil, fmt.Errorf("%w: read %s: %v", ErrMalformed, s.Name, err)
		}
		if id := findBuildID(data, f.f.ByteOrder); id != nil {
			return id, nil
		}
	}
	for _, p := range f.f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		if p.Filesz > MaxNotesSize {
			return nil, fmt.Errorf("%w: PT_NOTE of %d bytes", ErrMalformed, p.Filesz)
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err != nil {
			return nil, fmt.Errorf("%w: read PT_NOTE: %v", ErrMalformed, err)
		}
		if id := findBuildID(data, f.f.ByteOrder); id != nil {
			return id, nil
		}
	}
	return nil, nil
}

// findBuildID walks ELF notes (namesz, descsz, type, name, desc; 4-byte
// aligned) and returns the NT_GNU_BUILD_ID descriptor.
func findBuildID(data []byte, bo binary.ByteOrder) []byte {
	const ntGNUBuildID = 3
	for len(data) >= 12 {
		namesz := uint64(bo.Uint32(data[0:]))
		descsz := uint64(bo.Uint32(data[4:]))
		typ := bo.Uint32(data[8:])
		data = data[12:]
		nameEnd := (namesz + 3) &^ 3
		descEnd := nameEnd + (descsz+3)&^3
		if nameEnd > uint64(len(data)) || nameEnd+descsz > uint64(len(data)) {
			return nil
		}
		name := data[:namesz]
		if typ == ntGNUBuildID && bytes.Equal(bytes.TrimRight(name, "\x00"), []byte("GNU")) && descsz > 0 {
			return bytes.Clone(data[nameEnd : nameEnd+descsz])
		}
		if descEnd > uint64(len(data)) {
			return nil
		}
		data = data[descEnd:]
	}
	return nil
}

// Symbols returns .symtab with the null symbol at index 0 and each local
// symbol labelled with its STT_FILE. It returns ErrNoSymtab for stripped files.
func (f *File) Symbols() ([]Symbol, error) {
	return f.symbols(elf.SHT_SYMTAB)
}

// DynamicSymbols returns .dynsym with the null symbol at index 0.
func (f *File) DynamicSymbols() ([]Symbol, error) {
	return f.symbols(elf.SHT_DYNSYM)
}

func (f *File) symbols(typ elf.SectionType) (out []Symbol, err error) {
	defer recoverInto(&err)
	var sec *elf.Section
	for _, s := range f.Sections {
		if s.Type == typ {
			sec = s
			break
		}
	}
	if sec == nil {
		if typ == elf.SHT_SYMTAB {
			return nil, ErrNoSymtab
		}
		return nil, nil
	}
	if sec.Size/24 > MaxSymbols {
		return nil, fmt.Errorf("%w: %d symbols in %s, the limit is %d", ErrMalformed, sec.Size/24, sec.Name, MaxSymbols)
	}
	var syms []elf.Symbol
	if typ == elf.SHT_SYMTAB {
		syms, err = f.f.Symbols()
	} else {
		syms, err = f.f.DynamicSymbols()
	}
	if err != nil {
		if errors.Is(err, elf.ErrNoSymbols) {
			return []Symbol{{}}, nil
		}
		return nil, fmt.Errorf("%w: read %s: %v", ErrMalformed, sec.Name, err)
	}
	out = make([]Symbol, 0, len(syms)+1)
	out = append(out, Symbol{})
	file, fileIdx := "", 0
	for i, s := range syms {
		st := elf.ST_TYPE(s.Info)
		sb := elf.ST_BIND(s.Info)
		sym := Symbol{Index: i + 1, Name: s.Name, Value: s.Value, Size: s.Size, Type: st, Bind: sb, Section: s.Section}
		if st == elf.STT_FILE {
			file, fileIdx = s.Name, i+1
		}
		if sb == elf.STB_LOCAL {
			sym.File, sym.FileIndex = file, fileIdx
		}
		out = append(out, sym)
	}
	return out, nil
}

// readRela decodes an SHT_RELA section of an ELF64 little-endian file.
func (f *File) readRela(s *elf.Section) ([]Reloc, error) {
	if f.f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return nil, fmt.Errorf("relocations of %s files for %s are not supported; hotfleet handles x86-64", f.f.Class, f.Machine)
	}
	if s.Type != elf.SHT_RELA {
		return nil, fmt.Errorf("section %s holds %s relocations; only RELA is supported", s.Name, s.Type)
	}
	const entSize = 24
	if s.Size%entSize != 0 {
		return nil, fmt.Errorf("%w: relocation section %s is %d bytes, not a multiple of %d", ErrMalformed, s.Name, s.Size, entSize)
	}
	if s.Size/entSize > MaxRelocs {
		return nil, fmt.Errorf("%w: %d relocations in %s, the limit is %d", ErrMalformed, s.Size/entSize, s.Name, MaxRelocs)
	}
	data := make([]byte, s.Size)
	if _, err := s.ReadAt(data, 0); err != nil {
		return nil, fmt.Errorf("%w: read %s: %v", ErrMalformed, s.Name, err)
	}
	bo := f.f.ByteOrder
	out := make([]Reloc, 0, len(data)/entSize)
	for off := 0; off+entSize <= len(data); off += entSize {
		info := bo.Uint64(data[off+8:])
		out = append(out, Reloc{
			Offset: bo.Uint64(data[off:]),
			Type:   elf.R_X86_64(info & 0xffffffff),
			Sym:    int(info >> 32),
			Addend: int64(bo.Uint64(data[off+16:])),
		})
	}
	return out, nil
}

// SectionRelocs returns, for a relocatable object, the relocations that apply
// to each section, keyed by the index of the section they patch.
func (f *File) SectionRelocs() (out map[int][]Reloc, err error) {
	defer recoverInto(&err)
	out = map[int][]Reloc{}
	for _, s := range f.Sections {
		if s.Type != elf.SHT_RELA && s.Type != elf.SHT_REL {
			continue
		}
		target := int(s.Info)
		if target <= 0 || target >= len(f.Sections) {
			return nil, fmt.Errorf("%w: relocation section %s applies to section %d, which does not exist", ErrMalformed, s.Name, target)
		}
		rs, err := f.readRela(s)
		if err != nil {
			return nil, err
		}
		out[target] = append(out[target], rs...)
	}
	return out, nil
}

// DynRelocs returns the relocations of .rela.plt and .rela.dyn (JUMP_SLOT,
// IRELATIVE, GLOB_DAT, COPY, RELATIVE, ...) with their .dynsym names.
func (f *File) DynRelocs() (out []DynReloc, err error) {
	defer recoverInto(&err)
	dyn, err := f.DynamicSymbols()
	if err != nil {
		return nil, err
	}
	for _, s := range f.Sections {
		if s.Type != elf.SHT_RELA || s.Flags&elf.SHF_ALLOC == 0 {
			continue
		}
		rs, err := f.readRela(s)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			d := DynReloc{Section: s.Name, Offset: r.Offset, Type: r.Type, Addend: r.Addend}
			if r.Sym != 0 {
				if r.Sym >= len(dyn) {
					return nil, fmt.Errorf("%w: %s relocation at %#x names symbol %d of %d", ErrMalformed, s.Name, r.Offset, r.Sym, len(dyn))
				}
				d.Name = dyn[r.Sym].BaseName()
			}
			out = append(out, d)
		}
	}
	return out, nil
}

// ReadAt reads n bytes at link-time virtual address addr of a linked file,
// through the PT_LOAD segment that maps it.
func (f *File) ReadAt(addr, n uint64) (data []byte, err error) {
	defer recoverInto(&err)
	if n > MaxSectionRead {
		return nil, fmt.Errorf("read of %d bytes at %#x is over the limit of %d", n, addr, MaxSectionRead)
	}
	for _, p := range f.f.Progs {
		if p.Type != elf.PT_LOAD || addr < p.Vaddr || addr-p.Vaddr > p.Filesz || n > p.Filesz-(addr-p.Vaddr) {
			continue
		}
		data = make([]byte, n)
		if _, err := p.ReadAt(data, int64(addr-p.Vaddr)); err != nil {
			return nil, fmt.Errorf("%w: read %d bytes at %#x: %v", ErrMalformed, n, addr, err)
		}
		return data, nil
	}
	return nil, fmt.Errorf("no loadable segment holds the %d bytes at %#x in the file", n, addr)
}

// DWARF returns the file's debug information, with the relocations of a
// relocatable object applied (so addresses are section offsets). It
// returns nil, nil when the file has no .debug_info.
func (f *File) DWARF() (d *dwarf.Data, err error) {
	defer recoverInto(&err)
	if f.Section(".debug_info") == nil {
		return nil, nil
	}
	for _, s := range f.Sections {
		if strings.HasPrefix(s.Name, ".debug_") && s.Size > MaxSectionRead {
			return nil, fmt.Errorf("%w: section %s is %d bytes, the limit is %d", ErrMalformed, s.Name, s.Size, MaxSectionRead)
		}
	}
	d, err = f.f.DWARF()
	if err != nil {
		return nil, fmt.Errorf("%w: read DWARF: %v", ErrMalformed, err)
	}
	return d, nil
}

// TLSSegment returns the size in memory and the alignment of the PT_TLS
// segment of a linked file; ok is false when it has none.
func (f *File) TLSSegment() (memsz, align uint64, ok bool) {
	for _, p := range f.f.Progs {
		if p.Type == elf.PT_TLS {
			return p.Memsz, p.Align, true
		}
	}
	return 0, 0, false
}

// HasInterp reports whether the file has a PT_INTERP segment: an
// executable (PIE or not) rather than a shared library.
func (f *File) HasInterp() bool {
	for _, p := range f.f.Progs {
		if p.Type == elf.PT_INTERP {
			return true
		}
	}
	return false
}
