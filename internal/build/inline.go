package build

import (
	"bytes"
	"debug/dwarf"
	"debug/elf"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
)

// Inlining. When the fix changes a function gcc inlined into its callers,
// the callers' code changes too; the diff finds them like any changed
// function and the bundle replaces them. What the diff cannot say is why a
// caller changed. The objects' DWARF (present when they were compiled with
// -g, which does not change gcc's code) records every inlined copy as a
// DW_TAG_inlined_subroutine inside its caller, with the address ranges it
// occupies. A caller is reported as changed through inlining when it holds
// an inlined copy of a function whose own code changed: one whose
// out-of-line copy changed too, or, for a function that only exists
// inlined, whose inlined copy's bytes differ between the two objects.

// inlineInfo is what one object's DWARF says about inlining.
type inlineInfo struct {
	// copies maps a caller (DWARF name: linkage name for C++, plain name
	// for C, the original's name for a clone) to its inlined callees and
	// the byte ranges (section offsets) of each callee's copies.
	copies map[string]map[string][][2]uint64
	// own maps a function (its code section) to the source lines of its
	// own code: the line table's rows outside every inlined copy.
	own map[int]string
}

// readInlines reads the inlined copies from o's DWARF. It returns nil when
// o has no usable DWARF: the report is informational, so unreadable debug
// information only leaves it out.
func readInlines(o *object) (info *inlineInfo) {
	defer func() {
		if recover() != nil {
			info = nil
		}
	}()
	d, err := o.f.DWARF()
	if err != nil || d == nil {
		return nil
	}
	info = &inlineInfo{copies: map[string]map[string][][2]uint64{}, own: map[int]string{}}
	names := map[dwarf.Offset]string{}
	var nameOf func(e *dwarf.Entry, depth int) string
	nameOf = func(e *dwarf.Entry, depth int) string {
		if n, ok := e.Val(dwarf.AttrLinkageName).(string); ok {
			return n
		}
		if n, ok := e.Val(dwarf.AttrName).(string); ok {
			return n
		}
		if depth > 4 {
			return ""
		}
		for _, a := range []dwarf.Attr{dwarf.AttrAbstractOrigin, dwarf.AttrSpecification} {
			off, ok := e.Val(a).(dwarf.Offset)
			if !ok {
				continue
			}
			if n, ok := names[off]; ok {
				return n
			}
			r := d.Reader()
			r.Seek(off)
			oe, err := r.Next()
			if err != nil || oe == nil {
				return ""
			}
			n := nameOf(oe, depth+1)
			names[off] = n
			return n
		}
		return ""
	}
	r := d.Reader()
	// The concrete function each nesting level is inside of.
	var stack []string
	for {
		e, err := r.Next()
		if err != nil || e == nil {
			break
		}
		if e.Tag == 0 {
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		caller := ""
		if len(stack) > 0 {
			caller = stack[len(stack)-1]
		}
		switch e.Tag {
		case dwarf.TagSubprogram:
			if e.Val(dwarf.AttrLowpc) != nil || e.Val(dwarf.AttrRanges) != nil {
				caller = nameOf(e, 0)
			}
		case dwarf.TagInlinedSubroutine:
			if caller != "" {
				callee := nameOf(e, 0)
				rs, err := d.Ranges(e)
				if err == nil && callee != "" {
					m := info.copies[caller]
					if m == nil {
						m = map[string][][2]uint64{}
						info.copies[caller] = m
					}
					for _, rg := range rs {
						m[callee] = append(m[callee], [2]uint64{rg[0], rg[1]})
					}
				}
			}
		}
		if e.Children {
			stack = append(stack, caller)
		}
	}
	info.readOwnLines(o, d)
	return info
}

// readOwnLines fills info.own. In a relocatable object each code section
// has its own line-table sequence starting at address 0; which section a
// sequence describes is named by the relocation of its DW_LNE_set_address,
// the sequence's one 64-bit relocation in .debug_line.
func (info *inlineInfo) readOwnLines(o *object, d *dwarf.Data) {
	var seqSecs []int
	for i, sec := range o.f.Sections {
		if sec.Name != ".debug_line" {
			continue
		}
		for _, r := range o.relocsIn(i, 0, ^uint64(0)) {
			if r.Type == elf.R_X86_64_64 && r.Sym > 0 && r.Sym < len(o.syms) {
				seqSecs = append(seqSecs, int(o.syms[r.Sym].Section))
			}
		}
	}
	inlined := map[int][][2]uint64{}
	for caller, callees := range info.copies {
		f := o.funcs[caller]
		if f == nil {
			continue
		}
		for _, rs := range callees {
			inlined[int(f.Section)] = append(inlined[int(f.Section)], rs...)
		}
	}
	rows := map[int][]string{}
	seq := 0
	r := d.Reader()
	for {
		cu, err := r.Next()
		if err != nil || cu == nil {
			break
		}
		if cu.Tag != dwarf.TagCompileUnit {
			r.SkipChildren()
			continue
		}
		lr, err := d.LineReader(cu)
		r.SkipChildren()
		if err != nil || lr == nil {
			continue
		}
		var e dwarf.LineEntry
		for lr.Next(&e) == nil {
			if seq >= len(seqSecs) {
				return // the sequences and relocations disagree: no report
			}
			sec := seqSecs[seq]
			if e.EndSequence {
				seq++
				continue
			}
			in := false
			for _, rg := range inlined[sec] {
				in = in || e.Address >= rg[0] && e.Address < rg[1]
			}
			if in || e.File == nil {
				continue
			}
			row := fmt.Sprintf("%s:%d", filepath.Base(e.File.Name), e.Line)
			if rs := rows[sec]; len(rs) == 0 || rs[len(rs)-1] != row {
				rows[sec] = append(rows[sec], row)
			}
		}
	}
	if seq != len(seqSecs) {
		return
	}
	// In address order: a statement the fix adds shows up even when the
	// driver's #line markers give it the number of an existing line.
	for sec, rs := range rows {
		info.own[sec] = strings.Join(rs, " ")
	}
}

// dwarfName is the name DWARF gives a function symbol: clones and cold
// fragments are described under their original's name.
func dwarfName(sym string) string {
	if i := strings.IndexByte(sym, '.'); i > 0 {
		return sym[:i]
	}
	return sym
}

// inlinedIntoUnchanged reports whether a function of the fixed object that
// did not change holds an inlined copy of callee.
func inlinedIntoUnchanged(u *unit, fi *inlineInfo, callee string, changed map[string]bool) bool {
	for caller, callees := range fi.copies {
		if _, ok := callees[callee]; ok && !changed[caller] {
			return true
		}
	}
	return false
}

// instanceBytes concatenates the bytes of code's ranges, for ranges that lie
// inside the function (cold parts of a copy live in another section).
func instanceBytes(code []byte, base uint64, ranges [][2]uint64) []byte {
	var out []byte
	for _, r := range ranges {
		if r[0] < base || r[1] > base+uint64(len(code)) || r[1] < r[0] {
			continue
		}
		out = append(out, code[r[0]-base:r[1]-base]...)
	}
	return out
}

// reportInlining fills Change.Inlined and Result.Inlined.
func (b *builder) reportInlining() {
	for _, u := range b.units {
		if len(u.changed) == 0 {
			continue
		}
		fi := readInlines(u.fixed)
		if fi == nil {
			continue
		}
		oi := readInlines(u.orig)
		changed := map[string]bool{}
		for _, f := range u.changed {
			changed[dwarfName(f.Name)] = true
		}
		for _, f := range u.changed {
			callees := fi.copies[dwarfName(f.Name)]
			var why []string
			for c, franges := range callees {
				if c == dwarfName(f.Name) {
					continue
				}
				if changed[c] {
					why = append(why, c)
					continue
				}
				if len(u.fixed.byKey[c]) > 0 || oi == nil {
					continue // has an out-of-line copy, which did not change
				}
				// Only inlined: changed if every function holding a copy
				// of it changed (an unchanged holder proves its code did
				// not), and this copy's bytes differ.
				if inlinedIntoUnchanged(u, fi, c, changed) {
					continue
				}
				os, err := u.origFunc(f)
				if err != nil || os == nil {
					continue
				}
				ob, err1 := u.orig.symBytes(os)
				fb, err2 := u.fixed.symBytes(f)
				if err1 != nil || err2 != nil {
					continue
				}
				oranges := oi.copies[dwarfName(os.Name)][c]
				if !bytes.Equal(instanceBytes(ob, os.Value, oranges), instanceBytes(fb, f.Value, franges)) {
					why = append(why, c)
				}
			}
			if len(why) == 0 {
				continue
			}
			sort.Strings(why)
			// Only because of inlining: the lines of its own code are the
			// same in both builds (a fix that keeps line numbers, as the
			// source-tree driver's #line markers do, touches none of them).
			only := false
			if oi != nil {
				if os, err := u.origFunc(f); err == nil && os != nil {
					ol, ok1 := oi.own[int(os.Section)]
					fl, ok2 := fi.own[int(f.Section)]
					only = ok1 && ok2 && ol == fl
				}
			}
			for i := range b.res.Changed {
				if b.res.Changed[i].sym == f {
					b.res.Changed[i].Inlined = why
					if only {
						b.res.Inlined = append(b.res.Inlined, b.res.Changed[i])
					}
				}
			}
		}
	}
}
