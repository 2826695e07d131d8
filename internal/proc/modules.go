package proc

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
)

const (
	// maxPhdrs bounds the program header count we read from a target: real
	// modules have about a dozen, and the kernel's loader refuses tables
	// larger than 64 KiB (about 1170 entries).
	maxPhdrs = 1170
	// maxNoteBytes bounds one PT_NOTE segment read from a target; build-id
	// and ABI notes take well under a KiB.
	maxNoteBytes = 64 << 10
	// maxBuildID bounds a build-id: GNU ld emits 20 bytes (sha1), at most 64
	// with --build-id=0x...; anything longer is not a build-id.
	maxBuildID = 64

	elfHeaderSize = 64
	phdrSize      = 56
	ptLoad        = 1
	ptNote        = 4
	ntGNUBuildID  = 3
)

// Modules lists the ELF modules mapped into pid (the executable, every shared
// library and the vDSO), with the GNU build-id read from the process's own
// memory: the file behind a path may have been replaced since it was mapped.
// Mappings that do not hold a well-formed ELF image are skipped: a process may
// map arbitrary files, and only loaded ELF images are modules.
func Modules(pid int) ([]Module, error) {
	maps, err := ReadMaps(pid)
	if err != nil {
		return nil, err
	}
	mem, err := OpenMem(pid)
	if err != nil {
		return nil, fmt.Errorf("list modules of pid %d: %w", pid, err)
	}
	defer mem.Close()
	return modulesFrom(maps, mem), nil
}

func modulesFrom(maps []Mapping, mem *Mem) []Module {
	var mods []Module
	for i, m := range maps {
		if m.Offset != 0 || !m.Readable() || m.End-m.Start < elfHeaderSize {
			continue
		}
		if m.Inode == 0 && m.Path != "[vdso]" {
			continue // anonymous memory is never a module
		}
		if i > 0 && sameFile(maps[i-1], m) && maps[i-1].End == m.Start {
			continue // a later piece of a module already seen
		}
		mod, imageEnd, err := readModule(mem, m)
		if err != nil {
			continue
		}
		// Span every mapping of the same file inside the image's extent, so
		// that a second, unrelated mapping of the file does not stretch it.
		for _, o := range maps[i:] {
			if o.Start >= imageEnd {
				break
			}
			if sameFile(o, m) && o.End > mod.Start {
				mod.End = max(mod.End, o.End)
			}
		}
		mods = append(mods, mod)
	}
	return mods
}

func sameFile(a, b Mapping) bool {
	return a.Inode == b.Inode && a.Dev == b.Dev && a.Path == b.Path
}

type phdr struct {
	typ                uint32
	off, vaddr, filesz uint64
	memsz, align       uint64
}

// readModule parses the ELF image whose first page is mapped at m.
// It returns the module spanning m and the end of the image's address extent.
func readModule(mem *Mem, m Mapping) (Module, uint64, error) {
	var eh [elfHeaderSize]byte
	if err := mem.ReadAt(eh[:], m.Start); err != nil {
		return Module{}, 0, err
	}
	if !bytes.Equal(eh[:4], []byte("\x7fELF")) || eh[4] != 2 || eh[5] != 1 {
		return Module{}, 0, errors.New("not a little-endian ELF64 image")
	}
	le := binary.LittleEndian
	phoff := le.Uint64(eh[0x20:])
	phentsize := le.Uint16(eh[0x36:])
	phnum := le.Uint16(eh[0x38:])
	if phentsize != phdrSize || phnum == 0 || int(phnum) > maxPhdrs {
		return Module{}, 0, fmt.Errorf("program header table: %d entries of %d bytes", phnum, phentsize)
	}
	if phoff > m.End-m.Start || uint64(phnum)*phdrSize > m.End-m.Start-phoff {
		return Module{}, 0, errors.New("program header table lies outside the first mapping")
	}
	raw := make([]byte, int(phnum)*phdrSize)
	if err := mem.ReadAt(raw, m.Start+phoff); err != nil {
		return Module{}, 0, err
	}
	phs := make([]phdr, phnum)
	lowest := ^uint64(0)
	highest := uint64(0)
	for i := range phs {
		b := raw[i*phdrSize:]
		p := phdr{
			typ: le.Uint32(b[0:]), off: le.Uint64(b[8:]), vaddr: le.Uint64(b[16:]),
			filesz: le.Uint64(b[32:]), memsz: le.Uint64(b[40:]), align: le.Uint64(b[48:]),
		}
		phs[i] = p
		if p.typ == ptLoad {
			lowest = min(lowest, p.vaddr)
			if end := p.vaddr + p.memsz; end >= p.vaddr {
				highest = max(highest, end)
			}
		}
	}
	if lowest == ^uint64(0) || highest <= lowest {
		return Module{}, 0, errors.New("no loadable segment")
	}
	page := uint64(os.Getpagesize())
	base := lowest &^ (page - 1)
	bias := m.Start - base
	extent := highest - base
	if extent > 1<<47 {
		return Module{}, 0, errors.New("loadable segments span more than the address space")
	}
	imageEnd := m.Start + (extent+page-1)&^(page-1)
	mod := Module{Path: m.Name(), Bias: bias, Start: m.Start, End: m.End} // widened by the caller
	for _, p := range phs {
		if p.typ != ptNote || p.filesz == 0 || p.filesz > maxNoteBytes {
			continue
		}
		note := make([]byte, p.filesz)
		if err := mem.ReadAt(note, bias+p.vaddr); err != nil {
			continue
		}
		if id := findBuildID(note, p.align); id != nil {
			mod.BuildID = id
			break
		}
	}
	if mod.BuildID == nil {
		return Module{}, 0, errors.New("no GNU build-id note")
	}
	return mod, imageEnd, nil
}

// findBuildID walks the notes of one PT_NOTE segment of a little-endian
// module (the targets hotfleet patches).
func findBuildID(b []byte, align uint64) []byte {
	return BuildIDNote(b, align, binary.LittleEndian)
}

// BuildIDNote returns a copy of the GNU build-id in the notes of one PT_NOTE
// segment, or nil. Entries are padded to the segment's alignment (4, or 8 for
// segments holding gnu.property notes); the notes are untrusted input.
func BuildIDNote(b []byte, align uint64, bo binary.ByteOrder) []byte {
	pad := uint64(4)
	if align == 8 {
		pad = 8
	}
	up := func(n uint64) uint64 { return (n + pad - 1) &^ (pad - 1) }
	for len(b) >= 12 {
		namesz, descsz, typ := uint64(bo.Uint32(b)), uint64(bo.Uint32(b[4:])), bo.Uint32(b[8:])
		if namesz > uint64(len(b))-12 {
			return nil
		}
		name := b[12 : 12+namesz]
		descOff := 12 + up(namesz)
		if descOff > uint64(len(b)) || descsz > uint64(len(b))-descOff {
			return nil
		}
		if typ == ntGNUBuildID && bytes.Equal(name, []byte("GNU\x00")) && descsz > 0 && descsz <= maxBuildID {
			return bytes.Clone(b[descOff : descOff+descsz])
		}
		next := descOff + up(descsz)
		if next > uint64(len(b)) {
			return nil
		}
		b = b[next:]
	}
	return nil
}
