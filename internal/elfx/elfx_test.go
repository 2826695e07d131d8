package elfx

import (
	"bytes"
	"debug/elf"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"hotfleet/internal/testenv"
)

const knownBuildID = "0123456789abcdef0123456789abcdef01234567"

func buildExe(t *testing.T, pie bool, extra ...string) string {
	t.Helper()
	args := []string{"-O2", "-ffunction-sections", "-fdata-sections", "-Wl,--build-id=0x" + knownBuildID}
	if pie {
		args = append(args, "-fPIE", "-pie")
	} else {
		args = append(args, "-fno-pie", "-no-pie")
	}
	args = append(args, extra...)
	args = append(args, "testdata/one.c", "testdata/two.c")
	return testenv.CC(t, "exe", args...)
}

func TestExecutable(t *testing.T) {
	for _, pie := range []bool{true, false} {
		name := "nopie"
		want := elf.ET_EXEC
		if pie {
			name, want = "pie", elf.ET_DYN
		}
		t.Run(name, func(t *testing.T) {
			f, err := Open(buildExe(t, pie))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Type != want {
				t.Errorf("type %v, want %v", f.Type, want)
			}
			id, err := f.BuildID()
			if err != nil || hex.EncodeToString(id) != knownBuildID {
				t.Fatalf("build-id %x, %v; want %s", id, err, knownBuildID)
			}
			syms, err := f.Symbols()
			if err != nil {
				t.Fatal(err)
			}
			// Each static helper is labelled with the file that defined it,
			// and its bytes differ: one adds 1, the other doubles.
			files := map[string]Symbol{}
			for _, s := range syms {
				if s.Name == "helper" && s.Type == elf.STT_FUNC {
					files[s.File] = s
				}
			}
			if len(files) != 2 || files["one.c"].Value == 0 || files["two.c"].Value == 0 {
				t.Fatalf("static helpers by file: %+v; want one in one.c and one in two.c", files)
			}
			a, err := f.ReadAt(files["one.c"].Value, files["one.c"].Size)
			if err != nil {
				t.Fatal(err)
			}
			b, err := f.ReadAt(files["two.c"].Value, files["two.c"].Size)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(a, b) {
				t.Fatalf("both helpers read as %x; the reader did not map their addresses", a)
			}
			relocs, err := f.DynRelocs()
			if err != nil {
				t.Fatal(err)
			}
			var puts *DynReloc
			for i := range relocs {
				if relocs[i].Name == "puts" {
					puts = &relocs[i]
				}
			}
			if puts == nil || puts.Type != elf.R_X86_64_JMP_SLOT || puts.Section != ".rela.plt" {
				t.Fatalf("puts relocation = %+v; want a JUMP_SLOT in .rela.plt", puts)
			}
			if got := readelfSlot(t, f, "puts"); got != puts.Offset {
				t.Errorf("puts GOT slot %#x, readelf says %#x", puts.Offset, got)
			}
		})
	}
}

// readelfSlot takes the GOT slot of name from the .got.plt contents: the
// n-th JUMP_SLOT lives at .got.plt + 8*(3+n).
func readelfSlot(t *testing.T, f *File, name string) uint64 {
	t.Helper()
	gotplt := f.Section(".got.plt")
	if gotplt == nil {
		t.Fatal("no .got.plt")
	}
	relocs, _ := f.DynRelocs()
	n := 0
	for _, r := range relocs {
		if r.Section != ".rela.plt" {
			continue
		}
		if r.Name == name {
			return gotplt.Addr + 8*uint64(3+n)
		}
		n++
	}
	return 0
}

func TestStripped(t *testing.T) {
	f, err := Open(buildExe(t, true, "-s"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Symbols(); !errors.Is(err, ErrNoSymtab) {
		t.Fatalf("Symbols on a stripped file: %v, want ErrNoSymtab", err)
	}
	if id, _ := f.BuildID(); hex.EncodeToString(id) != knownBuildID {
		t.Fatalf("stripped file lost its build-id: %x", id)
	}
}

func TestObjectRelocs(t *testing.T) {
	obj := testenv.CC(t, "one.o", "-O2", "-ffunction-sections", "-fdata-sections", "-fPIE", "-c", "testdata/one.c")
	f, err := Open(obj)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Type != elf.ET_REL {
		t.Fatalf("type %v, want ET_REL", f.Type)
	}
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	rels, err := f.SectionRelocs()
	if err != nil {
		t.Fatal(err)
	}
	var text int
	for i, s := range f.Sections {
		if s.Name == ".text.one" {
			text = i
		}
	}
	got := map[string]elf.R_X86_64{}
	for _, r := range rels[text] {
		got[syms[r.Sym].Name] = r.Type
	}
	if got["puts"] != elf.R_X86_64_PLT32 || got["shared_counter"] != elf.R_X86_64_PC32 {
		t.Fatalf("relocations of .text.one by symbol: %v; want puts PLT32 and shared_counter PC32", got)
	}
}

func TestMalformed(t *testing.T) {
	seed, err := os.ReadFile("testdata/seed.o")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 4, 16, 63, 64, 200, len(seed) - 1} {
		if _, err := openAll(seed[:n]); err == nil && n < 64 {
			t.Errorf("%d-byte prefix of an object opened without error", n)
		}
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("opening a missing file succeeded")
	}
}

// openAll runs every reader on data, as the builder would.
func openAll(data []byte) (*File, error) {
	f, err := NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	_, _ = f.BuildID()
	syms, _ := f.Symbols()
	_, _ = f.DynamicSymbols()
	_, _ = f.SectionRelocs()
	_, _ = f.DynRelocs()
	for i := range f.Sections {
		_, _ = f.SectionData(i)
	}
	for _, s := range syms {
		_, _ = f.ReadAt(s.Value, s.Size)
	}
	_, _, _ = f.TLSSegment()
	_ = f.HasInterp()
	_, _ = f.DWARF()
	return f, nil
}

func FuzzOpen(f *testing.F) {
	seed, err := os.ReadFile("testdata/seed.o")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add(seed[:64])
	if exe, err := exec.LookPath("true"); err == nil {
		if data, err := os.ReadFile(exe); err == nil && len(data) < 1<<20 {
			f.Add(data)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _ = openAll(data)
	})
}

// TestSegmentsAndDebugInfo checks the readers the patch builder uses for
// thread-local storage, executables versus libraries, two source files of
// one name, and DWARF.
func TestSegmentsAndDebugInfo(t *testing.T) {
	exe := buildExe(t, true, "-g")
	f, err := Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !f.HasInterp() {
		t.Error("a PIE executable has PT_INTERP")
	}
	if _, _, ok := f.TLSSegment(); ok {
		t.Error("the test program has no thread-local variables, yet a PT_TLS was reported")
	}
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	idx := map[string]int{}
	for _, s := range syms {
		if s.Name == "helper" {
			if s.FileIndex == 0 || syms[s.FileIndex].Type != elf.STT_FILE || syms[s.FileIndex].Name != s.File {
				t.Errorf("helper of %s: FileIndex %d does not name its STT_FILE symbol", s.File, s.FileIndex)
			}
			idx[s.File] = s.FileIndex
		}
	}
	if len(idx) != 2 || idx["one.c"] == idx["two.c"] {
		t.Errorf("the two helpers' files %v are not told apart", idx)
	}
	d, err := f.DWARF()
	if err != nil || d == nil {
		t.Fatalf("DWARF of a -g build: %v, %v", d, err)
	}

	lib := testenv.CC(t, "lib.so", "-O2", "-fPIC", "-shared", "testdata/one.c")
	l, err := Open(lib)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.HasInterp() {
		t.Error("a shared library has no PT_INTERP")
	}
	if d, err := l.DWARF(); d != nil || err != nil {
		t.Errorf("DWARF of a build without -g: %v, %v; want nil, nil", d, err)
	}
}
