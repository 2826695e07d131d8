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
