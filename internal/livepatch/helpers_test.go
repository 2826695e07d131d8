package livepatch_test

import (
	"bufio"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"hotfleet/internal/bundle"
	"hotfleet/internal/testenv"
)

// replyTimeout bounds how long a target may take to answer one line.
const replyTimeout = 10 * time.Second

// buildTarget compiles a C program of testdata into dir/name.
func buildTarget(t *testing.T, src, out string, extra ...string) string {
	t.Helper()
	testenv.NeedRoot(t)
	args := append([]string{"-O0", "-pthread"}, extra...)
	return testenv.CC(t, out, append(args, filepath.Join("testdata", src))...)
}

// target is a running test program that calls functions on request.
type target struct {
	t     *testing.T
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
	Pid   int
}

func start(t *testing.T, bin string, args ...string) *target {
	t.Helper()
	cmd := exec.Command(bin, args...)
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	p := &target{t: t, cmd: cmd, in: in, lines: make(chan string, 16), Pid: cmd.Process.Pid}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	for {
		l := p.read()
		if l == "ready" {
			return p
		}
	}
}

func (p *target) read() string {
	p.t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			p.t.Fatalf("target %d exited: %v", p.Pid, p.cmd.Wait())
		}
		return l
	case <-time.After(replyTimeout):
		p.t.Fatalf("target %d did not answer within %s", p.Pid, replyTimeout)
	}
	return ""
}

// call asks the target to call fn now and returns what it printed.
func (p *target) call(fn string) string {
	p.t.Helper()
	if _, err := io.WriteString(p.in, fn+"\n"); err != nil {
		p.t.Fatalf("ask target %d to call %s: %v", p.Pid, fn, err)
	}
	return p.read()
}

func (p *target) expect(fn, want string) {
	p.t.Helper()
	if got := p.call(fn); got != want {
		p.t.Fatalf("%s() in pid %d returned %s, want %s", fn, p.Pid, got, want)
	}
}

// sym is one function of an ELF file with its bytes.
type sym struct {
	addr uint64
	code []byte
}

// readELF returns the functions and the GNU build-id of an ELF file.
func readELF(t *testing.T, path string) (map[string]sym, []byte) {
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
	out := map[string]sym{}
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) != elf.STT_FUNC || s.Size == 0 || int(s.Section) >= len(f.Sections) {
			continue
		}
		sec := f.Sections[s.Section]
		data, err := sec.Data()
		if err != nil {
			t.Fatal(err)
		}
		off := s.Value - sec.Addr
		out[s.Name] = sym{addr: s.Value, code: data[off : off+s.Size]}
	}
	note := f.Section(".note.gnu.build-id")
	if note == nil {
		t.Fatalf("%s has no build-id", path)
	}
	data, err := note.Data()
	if err != nil {
		t.Fatal(err)
	}
	namesz := binary.LittleEndian.Uint32(data[0:])
	descsz := binary.LittleEndian.Uint32(data[4:])
	start := 12 + (namesz+3)&^3
	return out, data[start : start+descsz]
}

// patchFn replaces the old function with code.
type patchFn struct {
	old       string
	code      []byte
	fixups    []bundle.Fixup // offsets relative to code
	quiescent bool
}

// makeBundle builds a bundle by hand for the functions of bin, and passes it
// through the encoder and decoder as a real one would.
func makeBundle(t *testing.T, bin, id string, level uint32, fns ...patchFn) *bundle.Bundle {
	t.Helper()
	syms, buildID := readELF(t, bin)
	m := bundle.Module{BuildID: buildID, Name: filepath.Base(bin)}
	for _, fn := range fns {
		s, ok := syms[fn.old]
		if !ok {
			t.Fatalf("%s has no function %s", bin, fn.old)
		}
		for len(m.Code)%16 != 0 {
			m.Code = append(m.Code, 0xcc)
		}
		off := uint32(len(m.Code))
		m.Code = append(m.Code, fn.code...)
		sum := sha256.Sum256(s.code)
		f := bundle.Func{
			Name: fn.old, Site: s.addr, OldSize: uint32(len(s.code)), OldHash: sum[:],
			Offset: off, Size: uint32(len(fn.code)),
		}
		if fn.quiescent {
			f.Consistency = bundle.Quiescent
		}
		m.Funcs = append(m.Funcs, f)
		for _, x := range fn.fixups {
			x.Offset += off
			m.Fixups = append(m.Fixups, x)
		}
	}
	b := &bundle.Bundle{ID: id, Level: level, Modules: []bundle.Module{m}}
	data, err := bundle.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	out, err := bundle.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ret returns machine code for "mov $v,%eax; ret".
func ret(v uint32) []byte {
	b := []byte{0xb8, 0, 0, 0, 0, 0xc3}
	binary.LittleEndian.PutUint32(b[1:], v)
	return b
}

// callPlusOne returns code that calls fn of the target (through a
// module-pc32 fixup) and returns its result plus one.
func callPlusOne(t *testing.T, bin, fn string) ([]byte, []bundle.Fixup) {
	t.Helper()
	syms, _ := readELF(t, bin)
	s, ok := syms[fn]
	if !ok {
		t.Fatalf("%s has no function %s", bin, fn)
	}
	code := []byte{
		0x48, 0x83, 0xec, 0x08, // sub $8,%rsp: keep the stack 16-byte aligned at the call
		0xe8, 0, 0, 0, 0, // call fn
		0x48, 0x83, 0xc4, 0x08, // add $8,%rsp
		0x83, 0xc0, 0x01, // add $1,%eax
		0xc3, // ret
	}
	return code, []bundle.Fixup{{Offset: 5, Kind: bundle.ModulePC32, Addend: int64(s.addr) - 4}}
}

// mapsOf returns the text of /proc/PID/maps.
func mapsOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/maps")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// kernelNamesMappings reports whether this kernel can name anonymous
// mappings (CONFIG_ANON_VMA_NAME); without it regions are found by magic.
func kernelNamesMappings(t *testing.T) bool {
	t.Helper()
	m, err := syscall.Mmap(-1, 0, 4096, syscall.PROT_READ, syscall.MAP_PRIVATE|syscall.MAP_ANON)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(m)
	name := []byte("hotfleet-probe\x00")
	_, _, errno := syscall.Syscall6(syscall.SYS_PRCTL, 0x53564d41, 0,
		uintptr(unsafe.Pointer(&m[0])), 4096, uintptr(unsafe.Pointer(&name[0])), 0)
	return errno == 0
}
