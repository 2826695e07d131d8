package build

import (
	"bytes"
	"debug/dwarf"
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
	info = &inlineInfo{copies: map[string]map[string][][2]uint64{}}
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
	return info
}

// dwarfName is the name DWARF gives a function symbol: clones and cold
// fragments are described under their original's name.
func dwarfName(sym string) string {
	if i := strings.IndexByte(sym, '.'); i > 0 {
		return sym[:i]
	}
	return sym
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
			for i := range b.res.Changed {
				if b.res.Changed[i].sym == f {
					b.res.Changed[i].Inlined = why
					b.res.Inlined = append(b.res.Inlined, b.res.Changed[i])
				}
			}
		}
	}
}
