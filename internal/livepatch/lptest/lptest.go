// Package lptest builds and drives the C test programs that hot patching is
// tested against, and makes bundles for them by hand from their ELF symbols,
// so engine and CLI tests need no patch builder.
package lptest

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

// BuildTarget compiles the C program src into out (relative: in a temporary
// directory), without optimisation so every function stays a real call.
func BuildTarget(t testing.TB, src, out string, extra ...string) string {
	t.Helper()
	testenv.NeedRoot(t)
	args := append([]string{"-O0", "-pthread"}, extra...)
	return testenv.CC(t, out, append(args, src)...)
}

// Target is a running test program that calls functions on request.
type Target struct {
	t     testing.TB
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
	Pid   int
}

func Start(t testing.TB, bin string, args ...string) *Target {
	t.Helper()
	return start(t, false, bin, args...)
}

// StartGrandchild starts the program through a shell so that it is not a
// child of the test process, as real targets are not children of hotfleet.
func StartGrandchild(t testing.TB, bin string, args ...string) *Target {
	t.Helper()
	return start(t, true, bin, args...)
}

func start(t testing.TB, grandchild bool, bin string, args ...string) *Target {
	t.Helper()
	cmd := exec.Command(bin, args...)
	if grandchild {
		// The shell prints the program's pid first, then waits for it. A
		// background job's stdin would be /dev/null: hand it over as fd 3.
		cmd = exec.Command("/bin/sh", append([]string{"-c", `exec 3<&0; "$0" "$@" <&3 3<&- & echo $!; exec 3<&-; wait`, bin}, args...)...)
	}
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
	p := &Target{t: t, cmd: cmd, in: in, lines: make(chan string, 16), Pid: cmd.Process.Pid}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	t.Cleanup(p.Kill)
	// The shell's pid line and the program's "ready" may come in any order.
	ready, havePid := false, !grandchild
	for !ready || !havePid {
		l := p.read()
		if pid, err := strconv.Atoi(l); err == nil && !havePid {
			p.Pid, havePid = pid, true
		} else if l == "ready" {
			ready = true
		}
	}
	return p
}

func (p *Target) read() string {
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

// Call asks the target to call fn now and returns what it printed.
func (p *Target) Call(fn string) string {
	p.t.Helper()
	if _, err := io.WriteString(p.in, fn+"\n"); err != nil {
		p.t.Fatalf("ask target %d to call %s: %v", p.Pid, fn, err)
	}
	return p.read()
}

// Expect fails the test unless fn() now returns want.
func (p *Target) Expect(fn, want string) {
	p.t.Helper()
	if got := p.Call(fn); got != want {
		p.t.Fatalf("%s() in pid %d returned %s, want %s", fn, p.Pid, got, want)
	}
}

// Sym is one function of an ELF file with its bytes.
type Sym struct {
	Addr uint64 // link-time address
	Code []byte
}

// ReadELF returns the functions and the GNU build-id of an ELF file.
func ReadELF(t testing.TB, path string) (map[string]Sym, []byte) {
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
	out := map[string]Sym{}
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
		out[s.Name] = Sym{Addr: s.Value, Code: data[off : off+s.Size]}
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

// Fn replaces the Old function with Code.
type Fn struct {
	Old       string
	Code      []byte
	Fixups    []bundle.Fixup // offsets relative to Code
	Quiescent bool
}

// ObjectFns returns an Fn for each named function, replacing it with the
// function's code in obj, an object compiled with -ffunction-sections. The
// functions must make no references: a hand-made bundle links nothing.
func ObjectFns(t testing.TB, obj string, names ...string) []Fn {
	t.Helper()
	f, err := elf.Open(obj)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var fns []Fn
	for _, name := range names {
		sec := f.Section(".text." + name)
		if sec == nil {
			t.Fatalf("%s: no section .text.%s (compile with -ffunction-sections)", obj, name)
		}
		if f.Section(".rela.text."+name) != nil {
			t.Fatalf("%s: %s has relocations, which a hand-made bundle cannot link", obj, name)
		}
		code, err := sec.Data()
		if err != nil {
			t.Fatalf("%s: read %s: %v", obj, name, err)
		}
		fns = append(fns, Fn{Old: name, Code: code})
	}
	return fns
}

// MakeBundle builds a bundle by hand for the functions of bin, and passes it
// through the encoder and decoder as a real one would.
func MakeBundle(t testing.TB, bin, id string, level uint32, fns ...Fn) *bundle.Bundle {
	t.Helper()
	syms, buildID := ReadELF(t, bin)
	m := bundle.Module{BuildID: buildID, Name: filepath.Base(bin)}
	for _, fn := range fns {
		s, ok := syms[fn.Old]
		if !ok {
			t.Fatalf("%s has no function %s", bin, fn.Old)
		}
		for len(m.Code)%16 != 0 {
			m.Code = append(m.Code, 0xcc)
		}
		off := uint32(len(m.Code))
		m.Code = append(m.Code, fn.Code...)
		sum := sha256.Sum256(s.Code)
		f := bundle.Func{
			Name: fn.Old, Site: s.Addr, OldSize: uint32(len(s.Code)), OldHash: sum[:],
			Offset: off, Size: uint32(len(fn.Code)),
		}
		if fn.Quiescent {
			f.Consistency = bundle.Quiescent
		}
		m.Funcs = append(m.Funcs, f)
		for _, x := range fn.Fixups {
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

// Ret returns machine code for "mov $v,%eax; ret".
func Ret(v uint32) []byte {
	b := []byte{0xb8, 0, 0, 0, 0, 0xc3}
	binary.LittleEndian.PutUint32(b[1:], v)
	return b
}

// CallPlusOne returns code that calls fn of the target (through a
// module-pc32 fixup) and returns its result plus one.
func CallPlusOne(t testing.TB, bin, fn string) ([]byte, []bundle.Fixup) {
	t.Helper()
	syms, _ := ReadELF(t, bin)
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
	return code, []bundle.Fixup{{Offset: 5, Kind: bundle.ModulePC32, Addend: int64(s.Addr) - 4}}
}

// Maps returns the text of /proc/PID/maps.
func Maps(t testing.TB, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/maps")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// KernelNamesMappings reports whether this kernel can name anonymous
// mappings (CONFIG_ANON_VMA_NAME); without it regions are found by magic.
func KernelNamesMappings(t testing.TB) bool {
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

// Kill ends the target now and waits until it is gone.
func (p *Target) Kill() {
	if p.Pid != p.cmd.Process.Pid {
		_ = syscall.Kill(p.Pid, syscall.SIGKILL)
	}
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
}
