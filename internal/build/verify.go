package build

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/arch/x86/x86asm"

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
//
// The two are walked instruction by instruction, because the target may
// have been linked from objects built without -ffunction-sections: there
// the assembler relaxes a jump to a nearby function of the same file
// ("jmp helper", a tail call) into its 2-byte form, which shortens the
// function and shifts the alignment padding after it. A rel32 jump in
// orig.o that reaches the same address as the target's rel8 jump is the
// same code, and differing padding (nops) is skipped.
func (b *builder) verify(u *unit, os *elfx.Symbol, ts elfx.Symbol, old []byte) error {
	code, err := u.orig.symBytes(os)
	if err != nil {
		return err
	}
	rels := u.orig.relocsIn(int(os.Section), os.Value, os.Value+os.Size)
	relocsAt := func(lo, hi int) []elfx.Reloc {
		var out []elfx.Reloc
		for _, r := range rels {
			if off := int(r.Offset - os.Value); off >= lo && off < hi {
				out = append(out, r)
			}
		}
		return out
	}
	differ := func(io, it int, what string) error {
		if what == "" {
			oe, te := min(io+8, len(code)), min(it+8, len(old))
			what = fmt.Sprintf("%s has % x where the target has % x", u.orig.path, code[io:oe], old[it:te])
		}
		return b.mismatchErr(u, os.Name, mismatch{off: uint64(io), what: what})
	}
	// Jumps inside the function are checked by where they land, through
	// the map of instruction starts, since relaxation shifts offsets.
	type jump struct{ from, odest, tdest int }
	var jumps []jump
	at := map[int]int{} // orig offset -> target offset, per instruction
	io, it := 0, 0
	for io < len(code) && it < len(old) {
		at[io] = it
		oi, oerr := x86asm.Decode(code[io:], 64)
		ti, terr := x86asm.Decode(old[it:], 64)
		if oerr != nil || terr != nil || oi.Len == 0 || ti.Len == 0 {
			// Not an instruction (data in the code): bytes must match.
			if code[io] != old[it] || len(relocsAt(io, io+1)) > 0 {
				return differ(io, it, "")
			}
			io, it = io+1, it+1
			continue
		}
		rs := relocsAt(io, io+oi.Len)
		if len(rs) == 0 && oi.Op == ti.Op && isRelBranch(oi) && isRelBranch(ti) {
			jumps = append(jumps, jump{io, io + oi.Len + int(oi.Args[0].(x86asm.Rel)), it + ti.Len + int(ti.Args[0].(x86asm.Rel))})
			io, it = io+oi.Len, it+ti.Len
			continue
		}
		if len(rs) == 1 && isNear(oi, code[io:]) && isShort(ti, old[it:]) && sameBranch(code[io:], old[it:]) {
			// A relaxed jump: where it lands must be where orig.o's goes.
			r := rs[0]
			dest := ts.Value + uint64(it+ti.Len) + uint64(int64(int8(old[it+ti.Len-1])))
			addrs, name, known, err := b.expected(u, r)
			if err != nil {
				return err
			}
			if known && !containsShifted(addrs, r.Addend+4, dest) {
				return differ(io, it, fmt.Sprintf("its jump to %s reaches %#x in the target, where %s is at %#x", name, dest, name, addrs[0]))
			}
			io, it = io+oi.Len, it+ti.Len
			continue
		}
		if oi.Len != ti.Len || oi.Op == x86asm.NOP != (ti.Op == x86asm.NOP) {
			switch {
			case oi.Op == x86asm.NOP && ti.Op == x86asm.NOP:
				io, it = io+oi.Len, it+ti.Len
				continue
			case oi.Op == x86asm.NOP && len(rs) == 0:
				io += oi.Len
				at[io] = it
				continue
			case ti.Op == x86asm.NOP:
				it += ti.Len
				continue
			}
			if len(rs) == 0 {
				return differ(io, it, "")
			}
			// A relaxed GOT or TLS access: same length in total, the
			// target's may decode as other instructions.
		}
		n := oi.Len
		if it+n > len(old) {
			return differ(io, it, fmt.Sprintf("the target's function ends before orig.o's (%d bytes, %d in %s)", len(old), len(code), u.orig.path))
		}
		for _, r := range rs {
			if isTLSCall(r.Type) {
				// General- and local-dynamic TLS sequences (16 and 12
				// bytes with the call) are rewritten whole by the linker.
				n = 16
				if r.Type == elf.R_X86_64_TLSLD {
					n = 12
				}
			}
		}
		n = min(n, len(code)-io, len(old)-it)
		ow, tw := code[io:io+n], old[it:it+n]
		covered := make([]bool, n)
		for _, r := range relocsAt(io, io+n) {
			if isTLSCall(r.Type) {
				for i := range covered {
					covered[i] = true
				}
				continue
			}
			rr := r
			rr.Offset = r.Offset - os.Value - uint64(io)
			m, err := b.verifyReloc(u, rr, rr.Offset, ow, tw, ts.Value+uint64(it), covered)
			if err != nil {
				return err
			}
			if m != nil {
				m.off += uint64(io)
				return b.mismatchErr(u, os.Name, *m)
			}
		}
		for i := range ow {
			if !covered[i] && ow[i] != tw[i] {
				return differ(io+i, it+i, "")
			}
		}
		io, it = io+n, it+n
	}
	for _, j := range jumps {
		if got, ok := at[j.odest]; !ok || got != j.tdest {
			return differ(j.from, at[j.from], fmt.Sprintf("its jump to offset %#x lands elsewhere in the target", j.odest))
		}
	}
	// What is left on either side must be padding.
	for io < len(code) {
		oi, err := x86asm.Decode(code[io:], 64)
		if err != nil || oi.Op != x86asm.NOP {
			return differ(io, it, fmt.Sprintf("the target's function ends at %d bytes, before orig.o's code does (%d bytes)", len(old), len(code)))
		}
		io += oi.Len
	}
	for it < len(old) {
		ti, err := x86asm.Decode(old[it:], 64)
		if err != nil || ti.Op != x86asm.NOP && ti.Op != x86asm.INT {
			return differ(io, it, fmt.Sprintf("orig.o's function ends at %d bytes, before the target's code does (%d bytes)", len(code), len(old)))
		}
		it += ti.Len
	}
	return nil
}

// isRelBranch reports whether inst is a jump or call to a relative
// address (jmp, jcc, call, loop, jrcxz).
func isRelBranch(inst x86asm.Inst) bool {
	if _, ok := inst.Args[0].(x86asm.Rel); !ok {
		return false
	}
	switch inst.Op {
	case x86asm.JMP, x86asm.CALL, x86asm.JA, x86asm.JAE, x86asm.JB, x86asm.JBE, x86asm.JE, x86asm.JG, x86asm.JGE,
		x86asm.JL, x86asm.JLE, x86asm.JNE, x86asm.JNO, x86asm.JNP, x86asm.JNS, x86asm.JO, x86asm.JP, x86asm.JS,
		x86asm.JCXZ, x86asm.JECXZ, x86asm.JRCXZ, x86asm.LOOP, x86asm.LOOPE, x86asm.LOOPNE:
		return true
	}
	return false
}

// isNear reports whether inst is a jmp or jcc with a 32-bit displacement.
func isNear(inst x86asm.Inst, b []byte) bool {
	return inst.Len == 5 && b[0] == 0xe9 || inst.Len == 6 && b[0] == 0x0f && b[1]&0xf0 == 0x80
}

// isShort reports whether inst is a jmp or jcc with an 8-bit displacement.
func isShort(inst x86asm.Inst, b []byte) bool {
	return inst.Len == 2 && (b[0] == 0xeb || b[0]&0xf0 == 0x70)
}

// sameBranch reports whether a near and a short jump test the same
// condition (or none).
func sameBranch(near, short []byte) bool {
	if near[0] == 0xe9 {
		return short[0] == 0xeb
	}
	return short[0] != 0xeb && near[1]&0x0f == short[0]&0x0f
}

func containsShifted(addrs []uint64, shift int64, v uint64) bool {
	for _, a := range addrs {
		if uint64(int64(a)+shift) == v {
			return true
		}
	}
	return false
}

func isTLSCall(t elf.R_X86_64) bool {
	return t == elf.R_X86_64_TLSGD || t == elf.R_X86_64_TLSLD
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
	case elf.R_X86_64_GOTTPOFF:
		// Initial-exec TLS; in an executable the linker turns the GOT load
		// into an immediate (mov/add $off): the opcode bytes change.
		if off >= 3 {
			mark(off-3, off)
		}
		return nil, nil
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
			if ts.Type == elf.STT_GNU_IFUNC {
				// Calls reach the PLT entry of the slot the resolver fills.
				if slot, ok := b.tgt.irelative[ts.Value]; ok {
					addrs = append(addrs, b.tgt.pltBySlot[slot]...)
				}
			}
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
		// The item the code reaches, up to the next place anything in
		// orig.o refers to: a target built without -fdata-sections
		// interleaves this section with other constants, so only the item
		// itself is comparable. Its own relocated bytes and trailing
		// zeros (alignment padding) are left out.
		end := u.orig.nextRef(sec, at)
		want = d[at:end]
		mask = make([]bool, len(want))
		for _, rr := range u.orig.relocsIn(sec, uint64(at), uint64(end)) {
			n := uint64(4)
			if rr.Type == elf.R_X86_64_64 {
				n = 8
			}
			for i := rr.Offset - uint64(at); i < rr.Offset-uint64(at)+n && i < uint64(len(mask)); i++ {
				mask[i] = true
			}
		}
		for len(want) > 0 && want[len(want)-1] == 0 && !mask[len(want)-1] {
			want, mask = want[:len(want)-1], mask[:len(mask)-1]
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
	if ts, err := b.tgt.lookup(s.Name, s.Bind == elf.STB_LOCAL, u.src); err == nil && ts.Type == elf.STT_GNU_IFUNC && b.tgt.irelative[ts.Value] == slot {
		return nil, nil
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
	if len(b.tgt.compilers) == 0 {
		cc := ""
		if len(objCC) > 0 {
			cc = fmt.Sprintf(" %s was compiled by %q;", u.orig.path, objCC[0])
		}
		return fmt.Sprintf("%s records no compiler (its .comment was stripped);%s check that the target was built by that compiler, from this source, with the same flags (-O level, -march/-mtune, -fPIC/-fPIE, -fcf-protection, -fstack-protector, -D defines)", b.tgt.name, cc)
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
