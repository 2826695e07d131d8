package build

import (
	"debug/dwarf"
	"fmt"
	"sort"
	"strings"
)

// Layouts of types. A fix that changes a struct the program keeps in
// memory (a field widened, added or moved) cannot be hot patched: running
// processes hold objects with the old layout, which new code would misread.
// Objects on the heap have no symbol whose size could tell, so the check
// reads the struct, union and class definitions from the objects' DWARF
// (-g) and compares every type both builds define. Without DWARF the check
// cannot run; docs/builder.md says so.

// typeLayout is one named aggregate type: its size and members.
type typeLayout struct {
	size    int64
	members []string // "name@offset" in declaration order
}

func (l typeLayout) String() string {
	return fmt.Sprintf("%d bytes {%s}", l.size, strings.Join(l.members, " "))
}

// readLayouts returns the layouts of the named struct, union and class
// types o's DWARF defines (typedef names for anonymous ones). A name with
// two different definitions in one object is left out. It returns nil when
// o has no usable DWARF.
func readLayouts(o *object) (out map[string]typeLayout) {
	defer func() {
		if recover() != nil {
			out = nil
		}
	}()
	d, err := o.f.DWARF()
	if err != nil || d == nil {
		return nil
	}
	byOff := map[dwarf.Offset]*typeLayout{}
	names := map[dwarf.Offset]string{}
	typedefs := map[string]dwarf.Offset{}
	r := d.Reader()
	// The aggregates being read, innermost last, with their depths.
	type open struct {
		l     *typeLayout
		depth int
	}
	var stack []open
	depth := 0
	for {
		e, err := r.Next()
		if err != nil || e == nil {
			break
		}
		if e.Tag == 0 {
			depth--
			if n := len(stack); n > 0 && stack[n-1].depth == depth {
				stack = stack[:n-1]
			}
			continue
		}
		switch e.Tag {
		case dwarf.TagStructType, dwarf.TagUnionType, dwarf.TagClassType:
			size, ok := e.Val(dwarf.AttrByteSize).(int64)
			if decl, _ := e.Val(dwarf.AttrDeclaration).(bool); decl || !ok {
				break
			}
			l := &typeLayout{size: size}
			byOff[e.Offset] = l
			if n, ok := e.Val(dwarf.AttrName).(string); ok {
				names[e.Offset] = n
			}
			if e.Children {
				stack = append(stack, open{l, depth})
			}
		case dwarf.TagMember:
			if len(stack) == 0 || depth != stack[len(stack)-1].depth+1 {
				break
			}
			cur := stack[len(stack)-1].l
			n, _ := e.Val(dwarf.AttrName).(string)
			off := "?"
			switch v := e.Val(dwarf.AttrDataMemberLoc).(type) {
			case int64:
				off = fmt.Sprint(v)
			}
			if bo, ok := e.Val(dwarf.AttrDataBitOffset).(int64); ok {
				off = fmt.Sprintf("bit%d", bo)
			}
			if bs, ok := e.Val(dwarf.AttrBitSize).(int64); ok {
				off += fmt.Sprintf(":%d", bs)
			}
			cur.members = append(cur.members, n+"@"+off)
		case dwarf.TagTypedef:
			if n, ok := e.Val(dwarf.AttrName).(string); ok {
				if t, ok := e.Val(dwarf.AttrType).(dwarf.Offset); ok {
					typedefs[n] = t
				}
			}
		}
		if e.Children {
			depth++
		}
	}
	out = map[string]typeLayout{}
	bad := map[string]bool{}
	add := func(name string, l *typeLayout) {
		if prev, ok := out[name]; ok && prev.String() != l.String() {
			bad[name] = true
		}
		out[name] = *l
	}
	for off, l := range byOff {
		if n := names[off]; n != "" {
			add(n, l)
		}
	}
	for n, t := range typedefs {
		if l := byOff[t]; l != nil && names[t] == "" {
			add(n, l)
		}
	}
	for n := range bad {
		delete(out, n)
	}
	return out
}

// checkLayouts refuses a fix that changes the layout of a type both builds
// of u define.
func (b *builder) checkLayouts(u *unit) error {
	if len(u.changed) == 0 {
		return nil
	}
	ol := readLayouts(u.orig)
	fl := readLayouts(u.fixed)
	if ol == nil || fl == nil {
		b.res.Warnings = append(b.res.Warnings, fmt.Sprintf("%s: the objects have no DWARF (compile with -g, which does not change the code): a changed layout of a struct kept in memory could not be checked, and callers changed through inlining are not labelled", u.name))
		return nil
	}
	var names []string
	for n, o := range ol {
		if f, ok := fl[n]; ok && o.String() != f.String() {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil
	}
	sort.Strings(names)
	n := names[0]
	return fmt.Errorf("%w: the fix of %s changes the layout of %s (%s became %s)%s; running processes hold objects with the old layout, which the new code would misread: keep the layout (put new fields in a separate structure the new code allocates), or ship a restart update", ErrRefused, u.name, n, ol[n], fl[n], others(names[1:]))
}

func others(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return fmt.Sprintf(", and of %s", strings.Join(names, ", "))
}
