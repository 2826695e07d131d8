package inventory

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"hotfleet/internal/proc"
)

const (
	// maxPhdrs bounds the program header table we read: real modules have
	// about a dozen entries and the kernel's loader refuses tables over 64 KiB.
	maxPhdrs = 1170
	// maxNoteBytes bounds one PT_NOTE segment; build-id and ABI notes take
	// well under a KiB.
	maxNoteBytes = 64 << 10
	// maxBuildID bounds a build-id: GNU ld emits 20 bytes (sha1) and at most
	// 64 with --build-id=0x...; anything longer is not a build-id.
	maxBuildID = 64

	ptNote = 4
)

// errNotELF means a mapped file is not an ELF image (a locale archive, a
// font, a database): it is not a module.
var errNotELF = errors.New("not an ELF image")

// elfIdent is what the inventory learns from one ELF file.
type elfIdent struct {
	buildID string // lowercase hex, "" when the file has no GNU build-id note
	class   byte   // 1: ELF32, 2: ELF64
}

// readELFIdent reads the GNU build-id from the PT_NOTE segments of the ELF
// image in r, laid out as in its file (p_offset addressing). It reads the
// ELF header, the program header table and the note segments, nothing else:
// three small reads for a typical module. Malformed input yields an error,
// never a panic.
func readELFIdent(r io.ReaderAt) (elfIdent, error) {
	var eh [64]byte
	n, err := r.ReadAt(eh[:], 0)
	if n < 16 || !bytes.Equal(eh[:4], []byte("\x7fELF")) {
		if err != nil && !errors.Is(err, io.EOF) {
			return elfIdent{}, fmt.Errorf("read ELF header: %w", err)
		}
		return elfIdent{}, errNotELF
	}
	var bo binary.ByteOrder
	switch eh[5] {
	case 1:
		bo = binary.LittleEndian
	case 2:
		bo = binary.BigEndian
	default:
		return elfIdent{}, fmt.Errorf("%w: unknown data encoding %d", errNotELF, eh[5])
	}
	id := elfIdent{class: eh[4]}
	var phoff uint64
	var phentsize, phnum uint16
	var want int
	switch id.class {
	case 1:
		want = 52
		phoff = uint64(bo.Uint32(eh[0x1c:]))
		phentsize, phnum = bo.Uint16(eh[0x2a:]), bo.Uint16(eh[0x2c:])
	case 2:
		want = 64
		phoff = bo.Uint64(eh[0x20:])
		phentsize, phnum = bo.Uint16(eh[0x36:]), bo.Uint16(eh[0x38:])
	default:
		return elfIdent{}, fmt.Errorf("%w: unknown class %d", errNotELF, eh[4])
	}
	if n < want {
		return elfIdent{}, fmt.Errorf("%w: header truncated at %d bytes", errNotELF, n)
	}
	minEnt := uint16(32)
	if id.class == 2 {
		minEnt = 56
	}
	if phnum == 0 {
		return id, nil // an ELF file without segments carries no loadable note
	}
	if phentsize < minEnt || int(phnum) > maxPhdrs || phoff > 1<<62 {
		return elfIdent{}, fmt.Errorf("%w: program header table of %d entries of %d bytes", errNotELF, phnum, phentsize)
	}
	raw := make([]byte, int(phnum)*int(phentsize))
	if _, err := r.ReadAt(raw, int64(phoff)); err != nil {
		return elfIdent{}, fmt.Errorf("read program header table: %w", err)
	}
	for i := 0; i < int(phnum); i++ {
		p := raw[i*int(phentsize):]
		if bo.Uint32(p) != ptNote {
			continue
		}
		var off, size, align uint64
		if id.class == 1 {
			off, size, align = uint64(bo.Uint32(p[4:])), uint64(bo.Uint32(p[16:])), uint64(bo.Uint32(p[28:]))
		} else {
			off, size, align = bo.Uint64(p[8:]), bo.Uint64(p[32:]), bo.Uint64(p[48:])
		}
		if size == 0 || size > maxNoteBytes || off > 1<<62 {
			continue
		}
		note := make([]byte, size)
		if _, err := r.ReadAt(note, int64(off)); err != nil {
			continue // a note past the end of a truncated file is no build-id
		}
		if b := proc.BuildIDNote(note, align, bo); b != nil {
			id.buildID = hex.EncodeToString(b)
			return id, nil
		}
	}
	return id, nil
}
