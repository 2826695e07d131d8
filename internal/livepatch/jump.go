package livepatch

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"

	"golang.org/x/arch/x86/x86asm"
)

const (
	jmpRel32Len = 5  // e9 rel32
	jmpAbs64Len = 14 // ff 25 00 00 00 00 followed by the 64-bit target
	endbr64Len  = 4
)

var endbr64 = []byte{0xf3, 0x0f, 0x1e, 0xfa}

// entrySkip is how many bytes at the start of a function stay in place: an
// endbr64 must remain the first instruction so that indirect calls keep
// landing on it when indirect branch tracking is enforced.
func entrySkip(code []byte) uint8 {
	if bytes.HasPrefix(code, endbr64) {
		return endbr64Len
	}
	return 0
}

// rel32Reaches reports whether a jmp rel32 at from reaches to.
func rel32Reaches(from, to uint64) bool {
	d := int64(to - (from + jmpRel32Len))
	return d >= -1<<31 && d < 1<<31
}

// jumpBytes returns the shortest jump from `from` to `to` that fits in room
// bytes, or nil when none fits.
func jumpBytes(from, to uint64, room uint32) []byte {
	if room >= jmpRel32Len && rel32Reaches(from, to) {
		b := make([]byte, jmpRel32Len)
		b[0] = 0xe9
		binary.LittleEndian.PutUint32(b[1:], uint32(int32(int64(to-(from+jmpRel32Len)))))
		return b
	}
	if room >= jmpAbs64Len {
		b := make([]byte, jmpAbs64Len)
		copy(b, []byte{0xff, 0x25, 0, 0, 0, 0})
		binary.LittleEndian.PutUint64(b[6:], to)
		return b
	}
	return nil
}

// branchIntoJump decodes the old function and reports the first branch whose
// target lies strictly inside the bytes the jump overwrites: such a branch
// would land in the middle of the jump, so the function may only be switched
// when no thread is inside it. A function that cannot be decoded to its end
// is treated the same way, since its branches cannot be proven harmless.
func branchIntoJump(code []byte, site uint64, skip, jumpLen uint8) (bool, string) {
	lo := site + uint64(skip)
	hi := lo + uint64(jumpLen)
	for off := int(skip); off < len(code); {
		inst, err := x86asm.Decode(code[off:], 64)
		if err != nil {
			return true, fmt.Sprintf("the bytes at %#x do not decode as an instruction, so its branches cannot be checked", site+uint64(off))
		}
		pc := site + uint64(off)
		for _, a := range inst.Args {
			rel, ok := a.(x86asm.Rel)
			if !ok {
				continue
			}
			target := pc + uint64(inst.Len) + uint64(int64(rel))
			if target > lo && target < hi {
				return true, fmt.Sprintf("the %s at %#x branches to %#x, inside the %d bytes the jump overwrites", strings.ToLower(inst.Op.String()), pc, target, jumpLen)
			}
		}
		off += inst.Len
	}
	return false, ""
}

// stubSize is the room of one site's stub in the region: 18 bytes of switch
// logic, the displaced instructions (at most 28 bytes, each 2-byte short
// branch growing by up to 4 when relocated) and the jump back.
const stubSize = 128

// Offsets inside a stub.
const (
	stubOffJump = 13 // the "jmp OFF" instruction
	stubOrig    = 18 // the displaced original instructions
)

// buildStub returns the stub that a site jumps to. The stub tests the
// region's switch word: set, it jumps to the new function; clear, it jumps to
// off, which is either the next byte (the displaced original instructions,
// relocated, then a jump back into the old function after them) or the code
// the site ran before (the replaced level's). So all sites of a region
// switch together with one 4-byte write of the switch word, and writing the
// jumps at the sites beforehand changes nothing a thread can see.
//
// orig holds the function's original bytes from the first overwritten byte
// on (at address from), need is how many of them the jump overwrites. It
// returns false when an instruction there cannot be relocated.
func buildStub(stub, flag, newFn, off uint64, orig []byte, from uint64, need int) ([]byte, bool) {
	out := make([]byte, 0, stubSize)
	put32 := func(b []byte, v int64) bool {
		if v < -1<<31 || v >= 1<<31 {
			return false
		}
		binary.LittleEndian.PutUint32(b, uint32(int32(v)))
		return true
	}
	at := func() uint64 { return stub + uint64(len(out)) }
	// cmpb $0, flag(%rip)
	cmp := []byte{0x80, 0x3d, 0, 0, 0, 0, 0x00}
	if !put32(cmp[2:], int64(flag-(at()+7))) {
		return nil, false
	}
	out = append(out, cmp...)
	// jne newFn
	jne := []byte{0x0f, 0x85, 0, 0, 0, 0}
	if !put32(jne[2:], int64(newFn-(at()+6))) {
		return nil, false
	}
	out = append(out, jne...)
	// jmp off
	if off == 0 {
		off = stub + stubOrig
	}
	jmp := []byte{0xe9, 0, 0, 0, 0}
	if !put32(jmp[1:], int64(off-(at()+5))) {
		return nil, false
	}
	out = append(out, jmp...)
	consumed := 0
	for consumed < need {
		inst, err := x86asm.Decode(orig[consumed:], 64)
		if err != nil {
			return nil, false
		}
		src := orig[consumed : consumed+inst.Len]
		pc := from + uint64(consumed)
		switch {
		case inst.PCRel == 0:
			out = append(out, src...)
		case inst.PCRel == 4:
			target := pc + uint64(inst.Len) + uint64(int64(int32(binary.LittleEndian.Uint32(src[inst.PCRelOff:]))))
			b := bytes.Clone(src)
			if !put32(b[inst.PCRelOff:], int64(target-(at()+uint64(len(b))))) {
				return nil, false
			}
			out = append(out, b...)
		case inst.PCRel == 1 && inst.Len == 2 && (src[0] == 0xeb || src[0]&0xf0 == 0x70):
			target := pc + 2 + uint64(int64(int8(src[1])))
			var b []byte
			if src[0] == 0xeb {
				b = []byte{0xe9, 0, 0, 0, 0}
			} else {
				b = []byte{0x0f, 0x80 | src[0]&0x0f, 0, 0, 0, 0}
			}
			if !put32(b[len(b)-4:], int64(target-(at()+uint64(len(b))))) {
				return nil, false
			}
			out = append(out, b...)
		default:
			return nil, false // loop, jrcxz and friends have no long form
		}
		consumed += inst.Len
	}
	back := []byte{0xe9, 0, 0, 0, 0}
	if !put32(back[1:], int64(from+uint64(consumed)-(at()+5))) {
		return nil, false
	}
	out = append(out, back...)
	if len(out) > stubSize {
		return nil, false
	}
	return out, true
}
