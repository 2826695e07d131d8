package livepatch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"hotfleet/internal/proc"
)

// The region header layout is documented byte by byte in docs/region-format.md;
// keep the two in step.
const (
	regionMagic   = "HFREGION"
	regionVersion = 1

	fixedHeaderSize = 256 // the fixed part, followed by the site table
	siteEntrySize   = 72  // one site-table entry
	maxJumpBytes    = 16  // room for saved original bytes and jump bytes per site
	pageSize        = 4096

	// maxHeaderSize bounds what is read from a target as a header: the largest
	// header a valid bundle can produce (4096 sites with 4096-byte names) is
	// about 17 MiB, so anything bigger is not ours or is corrupt.
	maxHeaderSize = 32 << 20
	// maxMapNameLen is the kernel's limit on an anonymous mapping name
	// (ANON_VMA_NAME_MAX_LEN, 80 bytes including the NUL).
	maxMapNameLen = 79
	// maxModuleNameLen truncates the module path stored in the header: it is
	// informational and a long path must not bloat every region.
	maxModuleNameLen = 255
	// mapNamePrefix starts the name of every region in /proc/PID/maps.
	mapNamePrefix = "hotfleet:"
	// anonNamePrefix and memfdNamePrefix start a region's path in
	// /proc/PID/maps when prctl named it, and when a memfd of that name backs
	// it (kernels without CONFIG_ANON_VMA_NAME).
	anonNamePrefix  = "[anon:" + mapNamePrefix
	memfdNamePrefix = "/memfd:" + mapNamePrefix
)

// Byte offsets of the fields that change after the region is written. Each is
// 4- or 8-byte aligned so that one write through /proc/PID/mem updates it as a
// unit: a hotfleet killed mid-way leaves either the old or the new value.
const (
	offState      = 12
	offReplacedBy = 72
	offApplied    = 80
	offSwitch     = 184 // the switch word the stubs test: 1 runs the new code
)

// state is the life-cycle state of a region, stored at offState.
type state uint32

const (
	statePrepared   state = 1 // code written, no site jumps to it yet
	stateSwitching  state = 2 // sites are being redirected to it
	stateApplied    state = 3 // every site jumps to it
	stateReverting  state = 4 // sites are being restored to the original bytes
	stateReverted   state = 5 // no site jumps to it; waits to be unmapped
	stateSuperseded state = 6 // a higher level replaced it; waits to be unmapped
)

func (s state) String() string {
	switch s {
	case statePrepared:
		return "prepared"
	case stateSwitching:
		return "switching"
	case stateApplied:
		return "applied"
	case stateReverting:
		return "reverting"
	case stateReverted:
		return "reverted"
	case stateSuperseded:
		return "superseded"
	}
	return "unknown(" + strconv.FormatUint(uint64(s), 10) + ")"
}

// Header flags.
const (
	// flagHasNew marks a region holding new functions (reached only from the
	// bundle's code). Their addresses may have escaped into the target's data
	// (callbacks), so such a region is never unmapped automatically.
	flagHasNew = 1
)

// Site flags.
const (
	siteQuiescent = 1 // the function switches only when no thread is inside it
)

// siteRec is one redirected function as recorded in the region header.
type siteRec struct {
	Site    uint64 // runtime address of the old function
	New     uint64 // runtime address of the new function in the region
	JumpOff uint8  // 4 when the site starts with endbr64, kept in place
	JumpLen uint8  // 5 (jmp rel32) or 14 (jmp *0(%rip) + address)
	Flags   uint8
	OldSize uint32
	NewSize uint32
	Saved   []byte // the original bytes the jump overwrites (JumpLen bytes)
	Jump    []byte // the exact jump bytes written (JumpLen bytes)
	Name    string
	Stub    uint32 // offset of the site's stub in the region, 0 when the jump goes straight to New
}

// quiescent reports whether the site switches only when its function is idle.
func (s *siteRec) quiescent() bool { return s.Flags&siteQuiescent != 0 }

// jumpAt is the address of the first overwritten byte.
func (s *siteRec) jumpAt() uint64 { return s.Site + uint64(s.JumpOff) }

// header is the decoded region header.
type header struct {
	State      state
	HeaderSize uint32
	CodeOffset uint64
	RegionSize uint64
	CodeSize   uint64
	Level      uint32
	Flags      uint32
	Bias       uint64
	Replaces   uint64
	ReplacedBy uint64
	AppliedNs  uint64
	Switch     uint32 // 1 when the stubs run the new code
	PatchID    string
	Module     string
	MapName    string
	BuildID    []byte
	Sites      []siteRec
}

// region is a header found in a target at Addr.
type region struct {
	Addr uint64
	// Mapping is the path of the mapping holding the region in
	// /proc/PID/maps: its name, or "" when the kernel could not name it.
	Mapping string
	header
}

func (r *region) End() uint64 { return r.Addr + r.RegionSize }

// contains reports whether addr lies inside the region's mapping.
func (r *region) contains(addr uint64) bool { return addr >= r.Addr && addr < r.End() }

// siteAt returns the region's record for the site at addr, or nil.
func (r *region) siteAt(addr uint64) *siteRec {
	for i := range r.Sites {
		if r.Sites[i].Site == addr {
			return &r.Sites[i]
		}
	}
	return nil
}

// mapName is the name given to a region in /proc/PID/maps, shortened to the
// kernel's limit by truncating the patch id (the header keeps the full id).
func mapName(id string, level uint32) string {
	suffix := ":L" + strconv.FormatUint(uint64(level), 10)
	room := maxMapNameLen - len(mapNamePrefix) - len(suffix)
	if len(id) > room {
		id = id[:room]
	}
	return mapNamePrefix + id + suffix
}

// headerSize is the page-aligned size of a header for these sites.
func headerSize(h *header) uint64 {
	n := uint64(fixedHeaderSize) + uint64(len(h.Sites))*siteEntrySize
	n += uint64(len(h.PatchID)) + uint64(len(h.Module)) + uint64(len(h.MapName)) + 1
	for i := range h.Sites {
		n += uint64(len(h.Sites[i].Name))
	}
	return pageAlign(n)
}

func pageAlign(n uint64) uint64 { return (n + pageSize - 1) &^ (pageSize - 1) }

// encode lays the header out in h.HeaderSize bytes.
func (h *header) encode() []byte {
	b := make([]byte, h.HeaderSize)
	le := binary.LittleEndian
	copy(b[0:], regionMagic)
	le.PutUint32(b[8:], regionVersion)
	le.PutUint32(b[12:], uint32(h.State))
	le.PutUint32(b[16:], h.HeaderSize)
	le.PutUint32(b[20:], uint32(len(h.Sites)))
	le.PutUint64(b[24:], h.CodeOffset)
	le.PutUint64(b[32:], h.RegionSize)
	le.PutUint64(b[40:], h.CodeSize)
	le.PutUint32(b[48:], h.Level)
	le.PutUint32(b[52:], h.Flags)
	le.PutUint64(b[56:], h.Bias)
	le.PutUint64(b[64:], h.Replaces)
	le.PutUint64(b[72:], h.ReplacedBy)
	le.PutUint64(b[80:], h.AppliedNs)
	str := uint32(fixedHeaderSize + len(h.Sites)*siteEntrySize)
	put := func(at int, s string, nul bool) {
		le.PutUint32(b[at:], str)
		le.PutUint32(b[at+4:], uint32(len(s)))
		copy(b[str:], s)
		str += uint32(len(s))
		if nul {
			str++ // the kernel reads the mapping name as a C string
		}
	}
	put(88, h.PatchID, false)
	put(96, h.Module, false)
	put(104, h.MapName, true)
	b[112] = uint8(len(h.BuildID))
	copy(b[120:184], h.BuildID)
	le.PutUint32(b[offSwitch:], h.Switch)
	for i := range h.Sites {
		s := &h.Sites[i]
		e := b[fixedHeaderSize+i*siteEntrySize:]
		le.PutUint64(e[0:], s.Site)
		le.PutUint64(e[8:], s.New)
		e[16] = s.JumpOff
		e[17] = s.JumpLen
		e[18] = s.Flags
		le.PutUint32(e[20:], s.OldSize)
		le.PutUint32(e[24:], s.NewSize)
		le.PutUint32(e[28:], uint32(len(s.Name)))
		copy(e[32:48], s.Saved)
		copy(e[48:64], s.Jump)
		le.PutUint32(e[64:], str)
		le.PutUint32(e[68:], s.Stub)
		copy(b[str:], s.Name)
		str += uint32(len(s.Name))
	}
	return b
}

// mapNameOffset is where the NUL-terminated mapping name lies in the region.
func mapNameOffset(hdr []byte) uint64 { return uint64(binary.LittleEndian.Uint32(hdr[104:])) }

var errNotRegion = errors.New("not a hotfleet region")

// peekHeader checks the first page of a candidate region and returns the
// header size it announces.
func peekHeader(b []byte) (uint32, error) {
	if len(b) < fixedHeaderSize || string(b[:8]) != regionMagic {
		return 0, errNotRegion
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != regionVersion {
		return 0, fmt.Errorf("region format version %d is not supported (this hotfleet reads version %d); use the hotfleet that applied the patch", v, regionVersion)
	}
	size := binary.LittleEndian.Uint32(b[16:])
	if size < fixedHeaderSize || size > maxHeaderSize || size%pageSize != 0 {
		return 0, fmt.Errorf("region header size %d is invalid", size)
	}
	return size, nil
}

// decodeHeader parses a whole header, checking every offset against its size:
// the target's memory is not trusted to hold what we wrote.
func decodeHeader(b []byte) (header, error) {
	var h header
	size, err := peekHeader(b)
	if err != nil {
		return h, err
	}
	if uint64(len(b)) < uint64(size) {
		return h, fmt.Errorf("region header truncated: %d of %d bytes", len(b), size)
	}
	le := binary.LittleEndian
	h.State = state(le.Uint32(b[12:]))
	h.HeaderSize = size
	n := uint64(le.Uint32(b[20:]))
	h.CodeOffset = le.Uint64(b[24:])
	h.RegionSize = le.Uint64(b[32:])
	h.CodeSize = le.Uint64(b[40:])
	h.Level = le.Uint32(b[48:])
	h.Flags = le.Uint32(b[52:])
	h.Bias = le.Uint64(b[56:])
	h.Replaces = le.Uint64(b[64:])
	h.ReplacedBy = le.Uint64(b[72:])
	h.AppliedNs = le.Uint64(b[80:])
	if fixedHeaderSize+n*siteEntrySize > uint64(size) {
		return h, fmt.Errorf("region header claims %d sites, more than fit in %d bytes", n, size)
	}
	if h.CodeOffset < uint64(size) || h.CodeOffset+h.CodeSize < h.CodeOffset || h.CodeOffset+h.CodeSize > h.RegionSize {
		return h, fmt.Errorf("region header: code [%#x,+%#x) does not fit the region of %#x bytes", h.CodeOffset, h.CodeSize, h.RegionSize)
	}
	str := func(off, l uint32) (string, error) {
		if uint64(off)+uint64(l) > uint64(size) {
			return "", fmt.Errorf("region header: string at %d+%d lies outside the header", off, l)
		}
		return string(b[off : off+l]), nil
	}
	if h.PatchID, err = str(le.Uint32(b[88:]), le.Uint32(b[92:])); err != nil {
		return h, err
	}
	if h.Module, err = str(le.Uint32(b[96:]), le.Uint32(b[100:])); err != nil {
		return h, err
	}
	if h.MapName, err = str(le.Uint32(b[104:]), le.Uint32(b[108:])); err != nil {
		return h, err
	}
	idLen := int(b[112])
	if idLen > 64 {
		return h, fmt.Errorf("region header: build-id of %d bytes", idLen)
	}
	h.BuildID = append([]byte(nil), b[120:120+idLen]...)
	h.Switch = le.Uint32(b[offSwitch:])
	h.Sites = make([]siteRec, n)
	for i := range h.Sites {
		e := b[fixedHeaderSize+i*siteEntrySize:]
		s := &h.Sites[i]
		s.Site = le.Uint64(e[0:])
		s.New = le.Uint64(e[8:])
		s.JumpOff = e[16]
		s.JumpLen = e[17]
		s.Flags = e[18]
		s.OldSize = le.Uint32(e[20:])
		s.NewSize = le.Uint32(e[24:])
		if s.JumpLen == 0 || s.JumpLen > maxJumpBytes || s.JumpOff > 4 {
			return h, fmt.Errorf("region header: site %d has a jump of %d bytes at offset %d", i, s.JumpLen, s.JumpOff)
		}
		s.Saved = append([]byte(nil), e[32:32+s.JumpLen]...)
		s.Jump = append([]byte(nil), e[48:48+s.JumpLen]...)
		if s.Name, err = str(le.Uint32(e[64:]), le.Uint32(e[28:])); err != nil {
			return h, err
		}
		s.Stub = le.Uint32(e[68:])
		if s.Stub != 0 && (uint64(s.Stub) < h.CodeOffset || uint64(s.Stub)+stubSize > h.RegionSize) {
			return h, fmt.Errorf("region header: site %d has its stub at %#x, outside the region's code", i, s.Stub)
		}
	}
	return h, nil
}

// readRegion reads and decodes the region header at addr.
func readRegion(mem *proc.Mem, addr uint64) (*region, error) {
	first := make([]byte, pageSize)
	if err := mem.ReadAt(first, addr); err != nil {
		return nil, err
	}
	size, err := peekHeader(first)
	if err != nil {
		return nil, err
	}
	buf := first
	if size > pageSize {
		buf = make([]byte, size)
		if err := mem.ReadAt(buf, addr); err != nil {
			return nil, err
		}
	}
	h, err := decodeHeader(buf)
	if err != nil {
		return nil, fmt.Errorf("region at %#x: %w", addr, err)
	}
	return &region{Addr: addr, header: h}, nil
}

// named reports whether hotfleet named the mapping: by prctl, or by backing
// it with a memfd of the region's name.
func named(m proc.Mapping) bool {
	return strings.HasPrefix(m.Path, anonNamePrefix) || strings.HasPrefix(m.Path, memfdNamePrefix)
}

// candidate reports whether a mapping may hold hotfleet regions: named by
// hotfleet, or anonymous and executable (kernels that could name it neither
// way).
func candidate(m proc.Mapping) bool {
	if named(m) {
		return true
	}
	return m.Path == "" && m.Inode == 0 && m.Exec() && m.Readable()
}

// findLeftovers returns the hotfleet-named mappings that do not start with a
// region header: an apply killed after backing its region by a memfd and
// before writing the header again leaves one. No site can jump into it (the
// sites are written only after the header), so it is safe to unmap.
func findLeftovers(mem *proc.Mem, maps []proc.Mapping) []proc.Mapping {
	var out []proc.Mapping
	for _, m := range maps {
		if named(m) && !hasMagic(mem, m.Start) {
			out = append(out, m)
		}
	}
	return out
}

// maxScanPages bounds how many pages of one anonymous executable mapping are
// checked for a region header: regions are a few pages each, so a bigger
// mapping is a JIT code heap, scanned only at its start.
const maxScanPages = 4096

// findRegions returns every hotfleet region mapped in the process. Without
// mapping names the kernel merges adjacent anonymous mappings, so a mapping
// may hold several regions, or a region after pages that are not one (an
// apply killed between mmap and writing the header leaves zero pages): every
// page start is checked for the magic.
func findRegions(mem *proc.Mem, maps []proc.Mapping) ([]*region, error) {
	var out []*region
	for _, m := range maps {
		if !candidate(m) {
			continue
		}
		isNamed := named(m)
		end := min(m.End, m.Start+maxScanPages*pageSize)
		for addr := m.Start; addr < end; {
			if !hasMagic(mem, addr) {
				addr += pageSize
				continue
			}
			r, err := readRegion(mem, addr)
			if err != nil {
				if isNamed {
					return nil, err
				}
				addr += pageSize // an unrelated mapping that happens to hold the bytes
				continue
			}
			if r.RegionSize == 0 || r.RegionSize%pageSize != 0 || r.End() > m.End {
				return nil, fmt.Errorf("region at %#x claims %#x bytes, but its mapping ends at %#x", addr, r.RegionSize, m.End)
			}
			r.Mapping = m.Path
			out = append(out, r)
			addr = r.End()
		}
	}
	return out, nil
}

func hasMagic(mem *proc.Mem, addr uint64) bool {
	b := make([]byte, len(regionMagic))
	return mem.ReadAt(b, addr) == nil && string(b) == regionMagic
}
