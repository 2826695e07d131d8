package build

import (
	"bufio"
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"hotfleet/internal/bundle"
	"hotfleet/internal/testenv"
)

// config is one way of building the target: the patch must link right for
// every one of them.
type config struct {
	name   string
	cflags []string // for lib.c, as the target was compiled
	shared bool     // lib.c and other.c are linked into liblib.so
	// plainTarget builds the target without -ffunction-sections
	// -fdata-sections; only the two objects have them.
	plainTarget bool
}

var configs = []config{
	{name: "pie", cflags: []string{"-fPIE"}},
	{name: "nopie", cflags: []string{"-fno-pie"}},
	{name: "pie-cet", cflags: []string{"-fPIE", "-fcf-protection"}},
	{name: "pic-in-pie", cflags: []string{"-fPIC"}},
	{name: "plain-target", cflags: []string{"-fPIE"}, plainTarget: true},
	{name: "shared", cflags: []string{"-fPIC", "-fcf-protection"}, shared: true},
}

var baseFlags = []string{"-O2", "-ffunction-sections", "-fdata-sections", "-Wl,--build-id"}

func abs(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// fixture is a built target plus its harness.
type fixture struct {
	cfg     config
	dir     string
	target  string // the module the patch is for
	harness string
	module  string // harness argument naming the module
}

func buildFixture(t *testing.T, cfg config) *fixture {
	t.Helper()
	testenv.NeedGCC(t)
	dir := t.TempDir()
	fx := &fixture{cfg: cfg, dir: dir}
	flags := append(append([]string{}, baseFlags...), cfg.cflags...)
	if cfg.plainTarget {
		flags = append([]string{"-O2", "-Wl,--build-id"}, cfg.cflags...)
	}
	if cfg.shared {
		fx.target = testenv.CC(t, filepath.Join(dir, "liblib.so"), append(flags, "-shared", abs(t, "lib.c"), abs(t, "other.c"))...)
		fx.harness = testenv.CC(t, filepath.Join(dir, "harness"), "-O2", "-fPIE", "-pie", abs(t, "harness.c"), "-L"+dir, "-llib", "-Wl,-rpath,"+dir)
		fx.module = "liblib.so"
		return fx
	}
	link := "-pie"
	if cfg.name == "nopie" {
		link = "-no-pie"
	}
	fx.target = testenv.CC(t, filepath.Join(dir, "harness"), append(flags, link, abs(t, "harness.c"), abs(t, "lib.c"), abs(t, "other.c"))...)
	fx.harness = fx.target
	return fx
}

// object compiles lib.c as the target's build did, with extra -D flags.
func (fx *fixture) object(t *testing.T, name string, extra ...string) string {
	t.Helper()
	flags := append(append([]string{}, baseFlags...), fx.cfg.cflags...)
	flags = append(flags, extra...)
	return testenv.CC(t, filepath.Join(fx.dir, name), append(flags, "-c", abs(t, "lib.c"))...)
}

func (fx *fixture) build(t *testing.T, fixedDefines ...string) (*Result, error) {
	t.Helper()
	orig := fx.object(t, "orig.o")
	fixed := fx.object(t, "fixed.o", fixedDefines...)
	return Build(context.Background(), Options{Target: fx.target, Orig: orig, Patched: fixed, ID: "hf-test", Level: 1})
}

// elfSym is a symbol with the STT_FILE it follows, read with debug/elf
// directly so the test does not trust the code under test.
type elfSym struct {
	elf.Symbol
	file string
}

func targetSymbols(t *testing.T, path string) []elfSym {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	var out []elfSym
	file := ""
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FILE {
			file = s.Name
		}
		out = append(out, elfSym{s, file})
	}
	return out
}

func symAddr(t *testing.T, syms []elfSym, name, file string) uint64 {
	t.Helper()
	for _, s := range syms {
		if (s.Name == name || strings.HasPrefix(s.Name, name+"@")) && s.Section != elf.SHN_UNDEF &&
			(file == "" || elf.ST_BIND(s.Info) != elf.STB_LOCAL || filepath.Base(s.file) == file) {
			return s.Value
		}
	}
	t.Fatalf("target has no symbol %s in %q", name, file)
	return 0
}

// staticUsedBy returns the name of the "calls.N" static that function fn of
// the object refers to, read from its relocations with debug/elf.
func staticUsedBy(t *testing.T, obj, fn string) string {
	t.Helper()
	f, err := elf.Open(obj)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	sec := f.Section(".rela.text." + fn)
	if sec == nil {
		t.Fatalf("%s has no relocations for %s", obj, fn)
	}
	data, err := sec.Data()
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off+24 <= len(data); off += 24 {
		idx := binary.LittleEndian.Uint64(data[off+8:]) >> 32
		s := syms[idx-1]
		name := s.Name
		if elf.ST_TYPE(s.Info) == elf.STT_SECTION {
			name = strings.TrimPrefix(f.Sections[s.Section].Name, ".bss.")
		}
		if strings.HasPrefix(name, "calls.") {
			return name
		}
	}
	t.Fatalf("%s of %s uses no calls.N static", fn, obj)
	return ""
}

func findSym(syms []elfSym, name string) (uint64, bool) {
	for _, s := range syms {
		if (s.Name == name || strings.HasPrefix(s.Name, name+"@")) && s.Section != elf.SHN_UNDEF {
			return s.Value, true
		}
	}
	return 0, false
}

// readelfSlots returns GOT slot addresses by symbol from `readelf -rW`.
func readelfSlots(t *testing.T, path, relType string) map[string]uint64 {
	t.Helper()
	out, err := exec.Command("readelf", "-rW", path).Output()
	if err != nil {
		t.Fatalf("readelf -r %s: %v", path, err)
	}
	slots := map[string]uint64{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || !strings.HasPrefix(f[2], relType) {
			continue
		}
		v, err := strconv.ParseUint(f[0], 16, 64)
		if err != nil {
			continue
		}
		slots[strings.SplitN(f[4], "@", 2)[0]] = v
	}
	return slots
}

func funcNames(m *bundle.Module, isNew bool) []string {
	var out []string
	for _, f := range m.Funcs {
		if f.New == isNew {
			out = append(out, f.Name)
		}
	}
	sort.Strings(out)
	return out
}

func hasFixup(m *bundle.Module, kind bundle.FixupKind, addend int64) bool {
	for _, x := range m.Fixups {
		if x.Kind == kind && x.Addend == addend {
			return true
		}
	}
	return false
}

// TestBuildLinksAgainstTarget checks what an author sees in the bundle for
// each way of building the target.
func TestBuildLinksAgainstTarget(t *testing.T) {
	for _, cfg := range configs {
		t.Run(cfg.name, func(t *testing.T) {
			fx := buildFixture(t, cfg)
			res, err := fx.build(t, "-DFIX")
			if err != nil {
				t.Fatal(err)
			}
			m := &res.Bundle.Modules[0]
			if got := funcNames(m, false); strings.Join(got, ",") != "classify,greet" {
				t.Errorf("changed functions %v, want classify and greet", got)
			}
			if got := funcNames(m, true); strings.Join(got, ",") != "bonus" {
				t.Errorf("new functions %v, want bonus", got)
			}
			syms := targetSymbols(t, fx.target)
			for _, f := range m.Sites() {
				if want := symAddr(t, syms, f.Name, "lib.c"); f.Site != want {
					t.Errorf("site of %s is %#x, the target has it at %#x", f.Name, f.Site, want)
				}
			}
			// The new string literals ship in the code.
			for _, lit := range []string{"patched greeting #%d for %d\n", "a brand new literal"} {
				if !bytes.Contains(m.Code, []byte(lit)) {
					t.Errorf("bundle code lacks the new string literal %q", lit)
				}
			}
			// printf (called) and, depending on the flags, fprintf/fwrite go
			// through stubs that jump through exactly the target's GOT slot.
			slots := readelfSlots(t, fx.target, "R_X86_64_JUMP_SLO")
			printfSlot, ok := slots["printf"]
			if !ok {
				t.Fatalf("readelf shows no JUMP_SLOT for printf in %s", fx.target)
			}
			stubOK := false
			for _, x := range m.Fixups {
				if x.Kind == bundle.ModulePC32 && x.Offset >= 2 && bytes.Equal(m.Code[x.Offset-2:x.Offset], []byte{0xff, 0x25}) && x.Addend == int64(printfSlot)-4 {
					stubOK = true
				}
			}
			if !stubOK {
				t.Errorf("no 'jmp *rel32(%%rip)' stub with a module-pc32 fixup to printf's GOT slot %#x (addend %#x); fixups: %+v", printfSlot, int64(printfSlot)-4, m.Fixups)
			}
			// counter and stdout are the target's own: reached directly
			// (PC32), through the target's GOT slot, or through a GOT slot
			// in the bundle when the object was built -fPIC and the linker
			// relaxed the target's own GOT entry away.
			globDat := readelfSlots(t, fx.target, "R_X86_64_GLOB_DAT")
			for _, name := range []string{"counter", "stdout"} {
				ok := false
				if a, found := findSym(syms, name); found {
					ok = hasFixup(m, bundle.ModulePC32, int64(a)-4) || hasFixup(m, bundle.ModuleAbs64, int64(a))
				}
				if slot, found := globDat[name]; found {
					ok = ok || hasFixup(m, bundle.ModulePC32, int64(slot)-4)
				}
				if !ok {
					t.Errorf("no fixup reaches the target's %s (symbol or GOT slot %#x); fixups: %+v", name, globDat[name], m.Fixups)
				}
			}
			// greet's static local: gcc numbered it differently in fixed.o
			// (tick's static took its number), yet the patch must use the
			// storage orig.o's greet uses.
			name := staticUsedBy(t, filepath.Join(fx.dir, "orig.o"), "greet")
			calls := symAddr(t, syms, name, "lib.c")
			found := false
			for _, x := range m.Fixups {
				// incl/add of a static local has a -4 or -8 displacement adjustment
				if x.Kind == bundle.ModulePC32 && uint64(x.Addend+4) <= calls && calls <= uint64(x.Addend+8) {
					found = true
				}
			}
			if calls == 0 || !found {
				t.Errorf("no module-pc32 fixup to greet's static local calls (at %#x)", calls)
			}
			if res.RodataBytes == 0 || len(res.Cold) == 0 {
				t.Errorf("no read-only data (%d bytes) or cold fragment (%v): the jump table of classify was left out", res.RodataBytes, res.Cold)
			}
			// The bundle round-trips through the format.
			data, err := bundle.Marshal(res.Bundle)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := bundle.Decode(data); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestStaticNameInTwoFiles patches a static helper whose name also exists in
// other.c: the site must be lib.c's.
func TestStaticNameInTwoFiles(t *testing.T) {
	fx := buildFixture(t, configs[0])
	orig := fx.object(t, "orig.o")
	// A fixed helper: change its constant by rewriting the source.
	src, err := os.ReadFile(abs(t, "lib.c"))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(fx.dir, "fixed")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fixedSrc := bytes.Replace(src, []byte("(x ^ 0x5a) * 3 + 1"), []byte("(x ^ 0x5a) * 5 + 2"), 1)
	if bytes.Equal(src, fixedSrc) {
		t.Fatal("testdata/lib.c no longer has the helper this test edits")
	}
	if err := os.WriteFile(filepath.Join(dir, "lib.c"), fixedSrc, 0o644); err != nil {
		t.Fatal(err)
	}
	fixed := testenv.CC(t, filepath.Join(dir, "fixed.o"), append(append(append([]string{}, baseFlags...), fx.cfg.cflags...), "-c", filepath.Join(dir, "lib.c"))...)
	res, err := Build(context.Background(), Options{Target: fx.target, Orig: orig, Patched: fixed, ID: "hf-helper", Level: 1})
	if err != nil {
		t.Fatal(err)
	}
	syms := targetSymbols(t, fx.target)
	want := symAddr(t, syms, "helper", "lib.c")
	other := symAddr(t, syms, "helper", "other.c")
	sites := res.Bundle.Modules[0].Sites()
	if len(sites) != 1 || sites[0].Name != "helper" || sites[0].Site != want {
		t.Fatalf("sites %+v; want only helper at %#x (lib.c), not %#x (other.c)", sites, want, other)
	}
	if len(res.Changed) != 1 || res.Changed[0].File != "lib.c" && filepath.Base(res.Changed[0].File) != "lib.c" {
		t.Errorf("summary %+v does not say the helper is lib.c's", res.Changed)
	}
}

// TestRefusals checks that each change a hot patch cannot carry is refused
// with a message naming the symbol.
func TestRefusals(t *testing.T) {
	fx := buildFixture(t, configs[2]) // PIE with endbr64
	cases := []struct {
		name    string
		defines []string
		origO   []string // extra flags for orig.o
		want    []string
	}{
		{"nothing changed", nil, nil, []string{"nothing to patch: orig.o and fixed.o compile to the same code"}},
		{"changed initial value", []string{"-DREFUSE_INIT"}, nil, []string{"initial value of initial_value_changes changed"}},
		{"changed object size", []string{"-DREFUSE_SIZE"}, nil, []string{"grows", "changes size from 32 to 64 bytes"}},
		{"new writable global", []string{"-DREFUSE_NEWGLOBAL"}, nil, []string{"brand_new_state", "shadow variable"}},
		{"new TLS variable", []string{"-DREFUSE_TLS"}, nil, []string{"thread-local variable per_thread"}},
		{"changed global constant", []string{"-DREFUSE_CONST"}, nil, []string{"global constant limits changed"}},
		{"new constructor", []string{"-DREFUSE_CTOR"}, nil, []string{"changes the file's constructors", "start_early"}},
		{"changed constructor body", []string{"-DREFUSE_CTORBODY"}, nil, []string{"function setup is a constructor (.init_array)", "will not again"}},
		{"new library dependency", []string{"-DREFUSE_NEWLIB"}, nil, []string{"function greet now calls getpid, which harness does not import"}},
		{"too small", []string{"-DREFUSE_TINY"}, nil, []string{"function tiny is 5 bytes", "too small to redirect"}},
		{"LTO objects", []string{"-DFIX"}, []string{"-flto"}, []string{"was built with -flto", "rebuild without LTO"}},
		{"orig.o built differently", []string{"-DFIX"}, []string{"-O0"}, []string{"the rebuilt original does not match harness: function classify differs", "the flags differ"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			orig := fx.object(t, "orig-"+strings.ReplaceAll(c.name, " ", "_")+".o", c.origO...)
			fixedFlags := append(append([]string{}, c.origO...), c.defines...)
			fixed := fx.object(t, "fixed-"+strings.ReplaceAll(c.name, " ", "_")+".o", fixedFlags...)
			res, err := Build(context.Background(), Options{Target: fx.target, Orig: orig, Patched: fixed, ID: "hf-refuse", Level: 1})
			if err == nil {
				t.Fatalf("built a bundle (%d changed functions); want a refusal", len(res.Changed))
			}
			if !errors.Is(err, ErrRefused) {
				t.Errorf("error does not wrap ErrRefused: %v", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestRefusesBadInputs(t *testing.T) {
	fx := buildFixture(t, configs[0])
	orig := fx.object(t, "orig.o")
	fixed := fx.object(t, "fixed.o", "-DFIX")
	stripped := filepath.Join(fx.dir, "stripped")
	if out, err := exec.Command("strip", "-o", stripped, fx.target).CombinedOutput(); err != nil {
		t.Fatalf("strip: %v\n%s", err, out)
	}
	// The same object, relabelled as arm64 code (e_machine at offset 18).
	data, err := os.ReadFile(fixed)
	if err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint16(data[18:], uint16(elf.EM_AARCH64))
	arm := filepath.Join(fx.dir, "arm64.o")
	if err := os.WriteFile(arm, data, 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name                  string
		target, orig, patched string
		want                  string
	}{
		{"other machine", fx.target, orig, arm, "is for EM_AARCH64; the builder handles x86-64 objects only"},
		{"stripped target", stripped, orig, fixed, "is stripped (no .symtab)"},
		{"executable as orig", fx.target, fx.target, fixed, "not a relocatable object"},
		{"not ELF", fx.target, abs(t, "lib.c"), fixed, "malformed ELF"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Build(context.Background(), Options{Target: c.target, Orig: c.orig, Patched: c.patched, ID: "x", Level: 1})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v; want one saying %q", err, c.want)
			}
		})
	}
}

// TestLinkedCodeRuns is the end-to-end proof of the linking: the harness
// process maps the bundle code near its module, the Go side applies the
// fixups with bundle.Module.Link for the harness's real load bias and region
// address, and the harness calls the new greet and classify through function
// pointers. Its output must equal that of the fix compiled natively.
func TestLinkedCodeRuns(t *testing.T) {
	for _, cfg := range configs {
		t.Run(cfg.name, func(t *testing.T) {
			fx := buildFixture(t, cfg)
			res, err := fx.build(t, "-DFIX")
			if err != nil {
				t.Fatal(err)
			}
			native := fx.nativeFix(t)
			got := fx.runPatched(t, &res.Bundle.Modules[0])
			if got != native {
				t.Fatalf("patched run printed:\n%s\nthe natively compiled fix prints:\n%s", got, native)
			}
			for _, want := range []string{"patched greeting #1 for 5", "via stdout: a brand new literal", "classify(3)=177", "classify(8)=-1", "other=206"} {
				if !strings.Contains(got, want) {
					t.Errorf("patched run did not print %q:\n%s", want, got)
				}
			}
		})
	}
}

// nativeFix runs the harness built directly from the fixed source.
func (fx *fixture) nativeFix(t *testing.T) string {
	t.Helper()
	flags := append(append([]string{}, baseFlags...), "-fPIE", "-pie", "-DFIX", abs(t, "harness.c"), abs(t, "lib.c"), abs(t, "other.c"))
	exe := testenv.CC(t, filepath.Join(fx.dir, "native"), flags...)
	out, err := exec.Command(exe, "", "native").Output()
	if err != nil {
		t.Fatalf("native fix: %v", err)
	}
	return string(out)
}

func (fx *fixture) runPatched(t *testing.T, m *bundle.Module) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, fx.harness, fx.module, "patched")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(stdout)
	line, err := r.ReadString('\n')
	if err != nil {
		cmd.Wait()
		t.Fatalf("harness: %v; stderr: %s", err, stderr.String())
	}
	var bias, region uint64
	if _, err := fmt.Sscanf(line, "%x %x", &bias, &region); err != nil {
		t.Fatalf("harness said %q: %v", line, err)
	}
	code, err := m.Link(bias, region)
	if err != nil {
		t.Fatal(err)
	}
	if m.NeedsLow32() && region >= 1<<31 {
		t.Fatalf("bundle needs low 2 GB but the harness mapped it at %#x", region)
	}
	path := filepath.Join(fx.dir, fmt.Sprintf("code-%x.bin", region))
	if err := os.WriteFile(path, code, 0o644); err != nil {
		t.Fatal(err)
	}
	offs := map[string]uint32{}
	for _, f := range m.Funcs {
		offs[f.Name] = f.Offset
	}
	fmt.Fprintf(stdin, "%s %d %d\n", path, offs["greet"], offs["classify"])
	stdin.Close()
	var rest bytes.Buffer
	rest.ReadFrom(r)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("harness with the patch code: %v\noutput:\n%s\nstderr: %s", err, rest.String(), stderr.String())
	}
	return rest.String()
}

// TestCorruptObjects flips bytes all over fixed.o: the builder must answer
// with an error or a bundle, never crash, and never need its last-resort
// recover (which would mean an unchecked index somewhere).
func TestCorruptObjects(t *testing.T) {
	fx := buildFixture(t, configs[0])
	orig := fx.object(t, "orig.o")
	fixed, err := os.ReadFile(fx.object(t, "fixed.o", "-DFIX"))
	if err != nil {
		t.Fatal(err)
	}
	const stride = 5 // every 5th byte reaches headers, symbol and relocation tables and code
	bad := filepath.Join(fx.dir, "corrupt.o")
	errs := 0
	for i := 0; i < len(fixed); i += stride {
		for _, v := range []byte{0xff, 0x00} {
			data := bytes.Clone(fixed)
			data[i] ^= v | 0x5a
			if err := os.WriteFile(bad, data, 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Build(context.Background(), Options{Target: fx.target, Orig: orig, Patched: bad, ID: "x", Level: 1})
			if err != nil && strings.Contains(err.Error(), "failed on unexpected input") {
				t.Fatalf("byte %d of fixed.o flipped: %v", i, err)
			}
			if err != nil {
				errs++
			}
		}
	}
	if errs == 0 {
		t.Fatal("no corrupted object was refused; the corruption did not reach the reader")
	}
}

// TestVerifyOriginal checks the proof that the rebuilt original is the
// shipped binary: every replaced function is verified, and objects built
// with other flags, from other source or by another compiler are refused
// naming the function and the likely cause.
func TestVerifyOriginal(t *testing.T) {
	fx := buildFixture(t, configs[2])
	res, err := fx.build(t, "-DFIX")
	if err != nil {
		t.Fatal(err)
	}
	if res.Verified != len(res.Changed) || res.Verified == 0 {
		t.Errorf("verified %d functions; want all %d changed ones", res.Verified, len(res.Changed))
	}
	fixed := fx.object(t, "fixed.o", "-DFIX")

	// orig.o from a source whose helper differs from the target's by one
	// constant: same size, other bytes.
	src, err := os.ReadFile(abs(t, "lib.c"))
	if err != nil {
		t.Fatal(err)
	}
	other := bytes.Replace(src, []byte("(x ^ 0x5a) * 3 + 1"), []byte("(x ^ 0x5a) * 5 + 1"), 1)
	if bytes.Equal(src, other) {
		t.Fatal("testdata/lib.c no longer has the helper this test edits")
	}
	dir := filepath.Join(fx.dir, "other")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "lib.c"), other, 0o644); err != nil {
		t.Fatal(err)
	}
	flags := append(append([]string{}, baseFlags...), fx.cfg.cflags...)
	otherSrc := testenv.CC(t, filepath.Join(dir, "orig.o"), append(flags, "-c", filepath.Join(dir, "lib.c"))...)
	// The same object, labelled as another compiler's.
	otherCC := filepath.Join(dir, "othercc.o")
	comment := filepath.Join(dir, "comment")
	if err := os.WriteFile(comment, []byte("\x00GCC: (Other) 99.1.0\x00"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("objcopy", "--update-section", ".comment="+comment, otherSrc, otherCC).CombinedOutput(); err != nil {
		t.Fatalf("objcopy: %v\n%s", err, out)
	}
	cases := []struct {
		name string
		orig string
		want []string
	}{
		{"-O1 objects for an -O2 target", fx.object(t, "o1.o", "-O1"), []string{"function classify", "the flags differ"}},
		{"-march=skylake objects", fx.object(t, "march.o", "-march=skylake"), []string{"the rebuilt original does not match harness: function", "the flags differ"}},
		{"other source", otherSrc, []string{"the rebuilt original does not match harness: function helper differs at offset", "the flags differ", "the source is not the one"}},
		{"other compiler", otherCC, []string{"function helper differs", `different compiler`, `"GCC: (Other) 99.1.0"`, "rebuild with the target's compiler"}},
	}
	// A distribution's binary: .comment stripped.
	noComment := filepath.Join(dir, "harness-nocomment")
	if out, err := exec.Command("objcopy", "--remove-section", ".comment", fx.target, noComment).CombinedOutput(); err != nil {
		t.Fatalf("objcopy: %v\n%s", err, out)
	}
	_, err = Build(context.Background(), Options{Target: noComment, Orig: otherSrc, Patched: fixed, ID: "x", Level: 1})
	if err == nil || !strings.Contains(err.Error(), "function helper differs") || !strings.Contains(err.Error(), "records no compiler (its .comment was stripped)") {
		t.Errorf("target without .comment: %v; want the mismatch saying the compiler is unknown", err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			patched := fixed
			if strings.HasPrefix(c.name, "-O1") {
				patched = fx.object(t, "o1-fixed.o", "-O1", "-DFIX")
			}
			if strings.HasPrefix(c.name, "-march") {
				patched = fx.object(t, "march-fixed.o", "-march=skylake", "-DFIX")
			}
			_, err := Build(context.Background(), Options{Target: fx.target, Orig: c.orig, Patched: patched, ID: "x", Level: 1})
			if err == nil || !errors.Is(err, ErrRefused) {
				t.Fatalf("error %v; want a refusal", err)
			}
			t.Log(err)
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}
