package build

import (
	"debug/elf"
	"fmt"
	"strings"

	"golang.org/x/arch/x86/x86asm"

	"hotfleet/internal/elfx"
)

// mayThrowCall returns the first call in function f (of a C++ object)
// through which a C++ exception could come back: a call to a C++ function
// (a mangled name, or a C++ runtime routine such as __cxa_*), or an
// indirect call (a virtual call or a call through a pointer), whose target
// the builder cannot see. Calls to plain C names are taken not to throw;
// calls to functions the object defines are followed.
// A tail call (jmp) leaves no frame of f behind and is fine. It returns ""
// when f makes no such call.
func (o *object) mayThrowCall(f *elfx.Symbol) (string, error) {
	return o.mayThrow(f, map[*elfx.Symbol]bool{})
}

// mayThrow is mayThrowCall, following calls to functions the object
// defines: one that throws nothing itself and calls nothing that may throw
// cannot throw. seen breaks recursion (a cycle is taken not to throw by
// itself; something on it must call out to throw).
func (o *object) mayThrow(f *elfx.Symbol, seen map[*elfx.Symbol]bool) (string, error) {
	seen[f] = true
	code, err := o.symBytes(f)
	if err != nil {
		return "", err
	}
	byOff := map[uint64]elfx.Reloc{}
	for _, r := range o.relocsIn(int(f.Section), f.Value, f.Value+f.Size) {
		byOff[r.Offset-f.Value] = r
	}
	for off := 0; off < len(code); {
		inst, err := x86asm.Decode(code[off:], 64)
		if err != nil || inst.Len == 0 {
			off++ // data or padding gcc put in the function: skip a byte
			continue
		}
		if inst.Op == x86asm.CALL {
			// The relocated field, if any, is the instruction's last 4 bytes.
			name := ""
			var callee *elfx.Symbol
			if r, ok := byOff[uint64(off+inst.Len-4)]; ok {
				if s, err := o.symbol(r.Sym); err == nil {
					name, callee = s.Name, s
					if s.Type == elf.STT_SECTION {
						if d := o.secDef[int(s.Section)]; d != nil {
							name, callee = d.Name, d
						}
					}
				}
			}
			switch {
			case name == "":
				if _, rel := inst.Args[0].(x86asm.Rel); !rel {
					return fmt.Sprintf("a function through a pointer (%s at offset %#x)", inst, off), nil
				}
			case name == "__cxa_throw" || name == "__cxa_rethrow" || name == "_Unwind_Resume" || name == "_Unwind_RaiseException":
				return name, nil
			case callee != nil && callee.Type == elf.STT_FUNC && callee.Defined() && callee.Section < elf.SHN_LORESERVE && o.kind(int(callee.Section)) == secText:
				// Defined here: look inside.
				if seen[callee] {
					break
				}
				if _, lsda := o.lsda[int(callee.Section)]; lsda {
					return name, nil
				}
				inner, err := o.mayThrow(callee, seen)
				if err != nil {
					return "", err
				}
				if inner != "" {
					return name, nil
				}
			case strings.HasPrefix(name, "_Z") || strings.HasPrefix(name, "__cxa_") && !strings.HasPrefix(name, "__cxa_guard_") && name != "__cxa_atexit" && name != "__cxa_begin_catch" && name != "__cxa_end_catch":
				return name, nil
			}
		}
		off += inst.Len
	}
	return "", nil
}
