package build

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"hotfleet/internal/elfx"
)

// The proof that the rebuilt original is the shipped binary: for every
// function the bundle replaces, orig.o's code, with its relocations resolved
// the way the linker resolved them in the target, must equal the target's
// bytes at the function's address. A patch built from objects that do not
// match the binary would diff against the wrong code, so any difference is a
// refusal.
//
// The linker may rewrite a few instruction bytes next to a GOT-relative
// relocation (it turns "mov foo@GOTPCREL(%rip)" into "lea foo(%rip)" and
// "call *foo@GOTPCREL(%rip)" into "addr32 call foo" when foo is local);
// those rewrites are accepted when they reach the right symbol.

// mismatch describes the first difference between the rebuilt original
// and the target.
type mismatch struct {
	off  uint64
	what string
}

// verify checks one function; old is the target's bytes at ts.
func (b *builder) verify(u *unit, os *elfx.Symbol, ts elfx.Symbol, old []byte) error {
	code, err := u.orig.symBytes(os)
	if err != nil {
		return err
	}
	if len(code) != len(old) {
		return b.mismatchErr(u, os.Name, mismatch{what: fmt.Sprintf("it is %d bytes in %s but %d in the target", len(code), u.orig.path, len(old))})
	}
	covered := make([]bool, len(code))
	for _, r := range u.orig.relocsIn(int(os.Section), os.Value, os.Value+os.Size) {
		off := r.Offset - os.Value
		m, err := b.verifyReloc(u, r, off, code, old, ts.Value, covered)
		if err != nil {
			return err
		}
		if m != nil {
			return b.mismatchErr(u, os.Name, *m)
		}
	}
	for i := range code {
		if !covered[i] && code[i] != old[i] {
			end := min(i+8, len(code))
			return b.mismatchErr(u, os.Name, mismatch{off: uint64(i), what: fmt.Sprintf("%s has % x where the target has % x", u.orig.path, code[i:end], old[i:end])})
		}
	}
	return nil
}

// verifyReloc checks one relocated field of orig.o's function against the
// value the linker wrote into the target, marking the bytes it checked.
func (b *builder) verifyReloc(u *unit, r elfx.Reloc, off uint64, code, old []byte, fnAddr uint64, covered []bool) (*mismatch, error) {
	size := uint64(4)
	if r.Type == elf.R_X86_64_64 {
		size = 8
	}
	if off+size > uint64(len(code)) {
		return nil, fmt.Errorf("%w: relocation at %#x runs past the end of its function in %s", elfx.ErrMalformed, r.Offset, u.orig.path)
	}
	mark := func(from, to uint64) {
		for i := from; i < to && i < uint64(len(covered)); i++ {
			covered[i] = true
		}
	}
	mark(off, off+size)
	p := fnAddr + off
	v32 := int64(int32(binary.LittleEndian.Uint32(old[off:])))
	switch r.Type {
	case elf.R_X86_64_PC32, elf.R_X86_64_PLT32:
		return b.checkTarget(u, r, off, uint64(int64(p)+v32-r.Addend), false)
	case elf.R_X86_64_32:
		return b.checkTarget(u, r, off, uint64(uint32(v32))-uint64(r.Addend), false)
	case elf.R_X86_64_32S:
		return b.checkTarget(u, r, off, uint64(v32-r.Addend), false)
	case elf.R_X86_64_64:
		return b.checkTarget(u, r, off, binary.LittleEndian.Uint64(old[off:])-uint64(r.Addend), false)
	case elf.R_X86_64_GOTPCREL, elf.R_X86_64_GOTPCRELX, elf.R_X86_64_REX_GOTPCRELX:
		if off >= 2 {
			o1, t1 := code[off-1], old[off-1]
			o2, t2 := code[off-2], old[off-2]
			switch {
			case o2 == 0x8b && t2 == 0x8d && o1 == t1: // mov foo@GOTPCREL → lea foo
				mark(off-2, off-1)
				return b.checkTarget(u, r, off, uint64(int64(p)+v32-r.Addend), true)
			case o2 == 0xff && o1 == 0x15 && t2 == 0x67 && t1 == 0xe8: // call *foo@GOTPCREL → addr32 call foo
				mark(off-2, off)
				return b.checkTarget(u, r, off, uint64(int64(p)+v32-r.Addend), true)
			case o2 == 0xff && o1 == 0x25 && t2 == 0xe9 && off+4 <= uint64(len(old)) && old[off+3] == 0x90: // jmp *foo@GOTPCREL → jmp foo; nop
				mark(off-2, off+4)
				disp := int64(int32(binary.LittleEndian.Uint32(old[off-1:])))
				return b.checkTarget(u, r, off, uint64(int64(fnAddr+off+3)+disp), true)
			case o1 != t1 && (t2 == 0xc7 || t2 == 0xf7 || t2 == 0x81) && t1&0xc0 == 0xc0: // mov/test/binop with an immediate (non-PIC)
				mark(off-3, off)
				return b.checkTarget(u, r, off, uint64(uint32(v32)), true)
			}
		}
		slot := uint64(int64(p) + v32 - r.Addend)
		return b.checkSlot(u, r, off, slot)
	}
	// Other relocation types (TLS) are refused when linking new code; in
	// unchanged instructions of the original they are not checked.
	return nil, nil
}

// expected returns where the target has what relocation r of orig.o names,
// and whether that is known. Code and data with a symbol are looked up in
// the target; mergeable and anonymous read-only data are checked by content
// in checkTarget instead.
func (b *builder) expected(u *unit, r elfx.Reloc) (addrs []uint64, name string, known bool, err error) {
	s, err := u.orig.symbol(r.Sym)
	if err != nil {
		return nil, "", false, err
	}
	if s.Section == elf.SHN_ABS {
		return []uint64{s.Value}, s.Name, true, nil
	}
	if s.Type == elf.STT_GNU_IFUNC && s.Defined() {
		// Calls reach the PLT entry of the slot the resolver fills.
		ts, err := b.tgt.lookup(s.Name, s.Bind == elf.STB_LOCAL, u.src)
		if err != nil {
			return nil, s.Name, false, nil
		}
		addrs = append(addrs, ts.Value)
		if slot, ok := b.tgt.irelative[ts.Value]; ok {
			addrs = append(addrs, b.tgt.pltBySlot[slot]...)
		}
		addrs = append(addrs, b.tgt.plt[s.Name]...)
		return addrs, s.Name, true, nil
	}
	if !s.Defined() {
		ts, err := b.tgt.lookup(s.Name, false, fileRef{})
		if err == nil {
			addrs = append(addrs, ts.Value)
		} else if !errors.Is(err, errNotInTarget) {
			return nil, s.Name, false, nil
		}
		addrs = append(addrs, b.tgt.plt[s.Name]...)
		return addrs, s.Name, len(addrs) > 0, nil
	}
	if s.Section >= elf.SHN_LORESERVE {
		return nil, s.Name, false, nil
	}
	sec := int(s.Section)
	switch u.orig.kind(sec) {
	case secText, secCold, secWritable, secRodata:
		def := s
		if s.Type == elf.STT_SECTION {
			def = u.orig.secDef[sec]
		}
		if def == nil || def.Type == elf.STT_SECTION || def.Name == "" {
			return nil, u.orig.secName(sec), false, nil
		}
		ts, err := b.tgt.lookup(def.Name, def.Bind == elf.STB_LOCAL, u.src)
		if err != nil {
			return nil, def.Name, false, nil
		}
		addrs = append(addrs, ts.Value-def.Value+s.Value)
		if def.Bind != elf.STB_LOCAL {
			addrs = append(addrs, b.tgt.plt[def.Name]...)
		}
		return addrs, def.Name, true, nil
	}
	return nil, s.Name, false, nil
}

// checkTarget checks that S, the symbol address the target's field encodes
// for relocation r, is what orig.o names. direct says the linker relaxed a
// GOT reference into a direct one.
func (b *builder) checkTarget(u *unit, r elfx.Reloc, off, S uint64, direct bool) (*mismatch, error) {
	addrs, name, known, err := b.expected(u, r)
	if err != nil {
		return nil, err
	}
	if known {
		if slices.Contains(addrs, S) {
			return nil, nil
		}
		return &mismatch{off: off, what: fmt.Sprintf("its reference to %s reaches %#x in the target, where %s is at %#x", name, S, name, addrs[0])}, nil
	}
	return b.checkContent(u, r, off, S)
}

// checkContent checks read-only data without a symbol in the target (string
// literals, constants, jump tables) by its bytes.
func (b *builder) checkContent(u *unit, r elfx.Reloc, off, S uint64) (*mismatch, error) {
	s, err := u.orig.symbol(r.Sym)
	if err != nil {
		return nil, err
	}
	if !s.Defined() || s.Section >= elf.SHN_LORESERVE {
		return nil, nil
	}
	sec := int(s.Section)
	kind := u.orig.kind(sec)
	if kind != secRodata && kind != secStrings {
		return nil, nil
	}
	d, err := u.orig.sectionData(sec)
	if err != nil {
		return nil, err
	}
	h := u.orig.sec(sec)
	// Where in the section the code points: the symbol, or for a section
	// symbol the addend (plus the 4 bytes of PC-relative bias).
	at := int64(s.Value)
	base := S
	if s.Type == elf.STT_SECTION {
		at = r.Addend
		if isPCRel(r.Type) {
			at += 4
		}
		base = uint64(int64(S) + at)
	}
	if at < 0 || at > int64(len(d)) {
		return nil, nil
	}
	var want []byte
	var mask []bool
	switch {
	case kind == secStrings:
		str := stringAt(d, at)
		want = append([]byte(str), 0)
	case h.Flags&elf.SHF_MERGE != 0 && h.Entsize > 0:
		end := min(at+int64(h.Entsize), int64(len(d)))
		want = d[at:end]
	default:
		// A whole section the linker kept as one piece: compare it from
		// its start, except the bytes its own relocations fill in.
		base -= uint64(at)
		want = d
		mask = make([]bool, len(d))
		for _, rr := range u.orig.relocsIn(sec, 0, ^uint64(0)) {
			n := uint64(4)
			if rr.Type == elf.R_X86_64_64 {
				n = 8
			}
			for i := rr.Offset; i < rr.Offset+n && i < uint64(len(mask)); i++ {
				mask[i] = true
			}
		}
	}
	if len(want) == 0 {
		return nil, nil
	}
	got, err := b.tgt.f.ReadAt(base, uint64(len(want)))
	if err != nil {
		return &mismatch{off: off, what: fmt.Sprintf("its reference to %s reaches %#x, outside the target's file", u.orig.secName(sec), base)}, nil
	}
	for i := range want {
		if (mask == nil || !mask[i]) && want[i] != got[i] {
			what := fmt.Sprintf("its reference to %s reaches data in the target that differs from orig.o's", u.orig.secName(sec))
			if kind == secStrings {
				what = fmt.Sprintf("its string literal %q is not at %#x in the target", strings.TrimSuffix(string(want), "\x00"), base)
			}
			return &mismatch{off: off, what: what}, nil
		}
	}
	return nil, nil
}

// checkSlot checks a GOT-relative reference the linker kept: the slot must
// be the target's GOT entry for the named symbol.
func (b *builder) checkSlot(u *unit, r elfx.Reloc, off, slot uint64) (*mismatch, error) {
	s, err := u.orig.symbol(r.Sym)
	if err != nil {
		return nil, err
	}
	name := s.Name
	if s.Type == elf.STT_SECTION {
		if d := u.orig.secDef[int(s.Section)]; d != nil {
			name = d.Name
		}
	}
	if a, ok := b.tgt.globDat[name]; ok && a == slot {
		return nil, nil
	}
	if a, ok := b.tgt.jmpSlot[name]; ok && a == slot {
		return nil, nil
	}
	if s.Type == elf.STT_GNU_IFUNC {
		if ts, err := b.tgt.lookup(s.Name, s.Bind == elf.STB_LOCAL, u.src); err == nil && b.tgt.irelative[ts.Value] == slot {
			return nil, nil
		}
	}
	addrs, _, known, err := b.expected(u, r)
	if err != nil {
		return nil, err
	}
	if !known {
		return nil, nil
	}
	// A slot the module fills for itself: a RELATIVE relocation (PIE,
	// shared library) or, in a fixed-address executable, the link-time
	// address stored in the file.
	if v, ok := b.tgt.relative[slot]; ok {
		if slices.Contains(addrs, v) {
			return nil, nil
		}
	} else if raw, err := b.tgt.f.ReadAt(slot, 8); err == nil && slices.Contains(addrs, binary.LittleEndian.Uint64(raw)) {
		return nil, nil
	}
	return &mismatch{off: off, what: fmt.Sprintf("its GOT reference to %s uses the slot at %#x, which does not hold %s in the target", name, slot, name)}, nil
}

// mismatchErr words a failed proof with its likely cause.
func (b *builder) mismatchErr(u *unit, fn string, m mismatch) error {
	return fmt.Errorf("%w: the rebuilt original does not match %s: function %s differs at offset %#x: %s; %s", ErrRefused, b.tgt.name, fn, m.off, m.what, b.causeHint(u))
}

// causeHint compares the compiler identification of orig.o and the target.
func (b *builder) causeHint(u *unit) string {
	objCC := comments(u.orig.f)
	if len(objCC) > 0 && len(b.tgt.compilers) > 0 && !slices.Contains(b.tgt.compilers, objCC[0]) {
		return fmt.Sprintf("different compiler: %s was compiled by %q but %s by %s; rebuild with the target's compiler", u.orig.path, objCC[0], b.tgt.name, quoteAll(b.tgt.compilers))
	}
	cc := "the same compiler"
	if len(objCC) > 0 {
		cc = fmt.Sprintf("the same compiler (%q)", objCC[0])
	}
	return fmt.Sprintf("both were built by %s, so the flags differ (-O level, -march/-mtune, -fPIC/-fPIE, -fcf-protection, -fstack-protector, -D defines) or the source is not the one the target was built from; rebuild with the target's exact source and flags", cc)
}

func quoteAll(ss []string) string {
	var q []string
	for _, s := range ss {
		q = append(q, fmt.Sprintf("%q", s))
	}
	return strings.Join(q, ", ")
}
