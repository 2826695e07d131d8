package proc

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hotfleet/internal/testenv"
)

// fileBuildID reads the GNU build-id from an ELF file on disk.
func fileBuildID(t *testing.T, path string) []byte {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, s := range f.Sections {
		if s.Type != elf.SHT_NOTE {
			continue
		}
		data, err := s.Data()
		if err != nil {
			t.Fatal(err)
		}
		if id := findBuildID(data, s.Addralign); id != nil {
			return id
		}
	}
	t.Fatalf("%s has no build-id", path)
	return nil
}

// TestModules checks that the executable, its own shared library and libc
// are found with the build-ids their files carry, for PIE and non-PIE
// executables, and that a replaced file ("(deleted)") is still identified.
func TestModules(t *testing.T) {
	testenv.NeedRoot(t)
	dir := t.TempDir()
	lib := testenv.CC(t, filepath.Join(dir, "libhf test.so"), "-shared", "-fPIC", "-Wl,--build-id=sha1", filepath.Join("testdata", "lib.c"))
	for _, pie := range []string{"-pie", "-no-pie"} {
		t.Run(pie, func(t *testing.T) {
			exe := testenv.CC(t, filepath.Join(dir, "withlib"+pie), pie, "-Wl,--build-id=sha1", filepath.Join("testdata", "withlib.c"), lib, "-Wl,-rpath,"+dir)
			tg := startTargetRaw(t, exe)
			if l := tg.expect("ready", 10*time.Second); l != fmt.Sprintf("ready %d 42", tg.pid) {
				t.Fatalf("target said %q", l)
			}
			defer func() { tg.stdin.Close(); tg.expect("bye", 10*time.Second) }()
			pid := tg.pid
			// The executable's file is replaced, as a package upgrade does.
			exeID := fileBuildID(t, exe)
			if err := os.WriteFile(exe+".new", []byte("not the same file"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(exe+".new", exe); err != nil {
				t.Fatal(err)
			}

			mods, err := Modules(pid)
			if err != nil {
				t.Fatal(err)
			}
			maps, err := ReadMaps(pid)
			if err != nil {
				t.Fatal(err)
			}
			libcPath, deleted := "", false
			for _, m := range maps {
				deleted = deleted || m.Path == exe+" (deleted)"
				if base := filepath.Base(m.Name()); strings.HasPrefix(base, "libc.so") || strings.HasPrefix(base, "libc-") {
					libcPath = m.Name()
				}
			}
			if !deleted {
				t.Fatalf("the replaced executable is not shown as deleted in the maps")
			}
			want := map[string][]byte{
				exe:      exeID,
				lib:      fileBuildID(t, lib),
				libcPath: fileBuildID(t, libcPath),
			}
			for path, id := range want {
				var got *Module
				for i := range mods {
					if mods[i].Path == path {
						got = &mods[i]
					}
				}
				if got == nil {
					t.Fatalf("module %s not found in %+v", path, mods)
				}
				if !bytes.Equal(got.BuildID, id) {
					t.Fatalf("%s: build-id %x from memory, %x from the file", path, got.BuildID, id)
				}
				// Start/End span every mapping of the file; Bias maps the
				// ELF entry point (or a symbol) to a mapped address.
				for _, m := range maps {
					if m.Name() == path && (m.Start < got.Start || m.End > got.End) {
						t.Fatalf("%s: mapping %#x-%#x outside the module span %#x-%#x", path, m.Start, m.End, got.Start, got.End)
					}
				}
				f, err := elf.Open(map[bool]string{true: libcPath, false: path}[path == libcPath])
				if err == nil && path != exe {
					entry := got.Bias + f.Entry
					if f.Entry != 0 && !got.Contains(entry) {
						t.Fatalf("%s: entry %#x + bias %#x = %#x not inside %#x-%#x", path, f.Entry, got.Bias, entry, got.Start, got.End)
					}
					f.Close()
				}
				t.Logf("%s: build-id %s bias %#x span %#x-%#x", path, hex.EncodeToString(got.BuildID), got.Bias, got.Start, got.End)
			}
			var exeMod Module
			for _, m := range mods {
				if m.Path == exe {
					exeMod = m
				}
			}
			if pie == "-no-pie" && exeMod.Bias != 0 {
				t.Fatalf("non-PIE executable has bias %#x, want 0", exeMod.Bias)
			}
			if pie == "-pie" && exeMod.Bias == 0 {
				t.Fatal("PIE executable has bias 0")
			}
			// The bias is right: the ELF header's magic sits at bias + first
			// PT_LOAD vaddr rounded down.
			mem, err := OpenMem(pid)
			if err != nil {
				t.Fatal(err)
			}
			defer mem.Close()
			var magic [4]byte
			base := exeMod.Bias
			if pie == "-no-pie" {
				base = exeMod.Start
			}
			if err := mem.ReadAt(magic[:], base); err != nil || string(magic[:]) != "\x7fELF" {
				t.Fatalf("no ELF header at %#x: %q %v", base, magic, err)
			}
		})
	}
}

// TestFindBuildIDMalformed: notes cut short or lying about their sizes
// yield nothing rather than a panic.
func TestFindBuildIDMalformed(t *testing.T) {
	le := binary.LittleEndian
	note := func(namesz, descsz, typ uint32, rest []byte) []byte {
		b := make([]byte, 12)
		le.PutUint32(b, namesz)
		le.PutUint32(b[4:], descsz)
		le.PutUint32(b[8:], typ)
		return append(b, rest...)
	}
	good := note(4, 4, 3, []byte("GNU\x00\xde\xad\xbe\xef"))
	if id := findBuildID(good, 4); !bytes.Equal(id, []byte{0xde, 0xad, 0xbe, 0xef}) {
		t.Fatalf("good note: %x", id)
	}
	for name, b := range map[string][]byte{
		"empty":           nil,
		"short header":    good[:8],
		"huge name":       note(0xffffffff, 4, 3, []byte("GNU\x00")),
		"huge desc":       note(4, 0xfffffff0, 3, []byte("GNU\x00abcd")),
		"cut desc":        good[:len(good)-1],
		"wrong type":      note(4, 4, 1, []byte("GNU\x00abcd")),
		"wrong owner":     note(4, 4, 3, []byte("GNX\x00abcd")),
		"oversized id":    note(4, 100, 3, append([]byte("GNU\x00"), make([]byte, 100)...)),
		"zero-length id":  note(4, 0, 3, []byte("GNU\x00")),
		"name overflows":  note(0xfffffffd, 0, 3, nil),
		"desc wraps size": note(4, 0xffffffff, 3, []byte("GNU\x00")),
	} {
		if id := findBuildID(b, 4); id != nil {
			t.Errorf("%s: got build-id %x", name, id)
		}
	}
	if _, err := Modules(-1); err == nil || !errors.Is(err, ErrExited) {
		t.Errorf("Modules(-1): %v, want ExitedError", err)
	}
}
