package proc

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"syscall"
)

// Mem reads and writes a process's memory through /proc/PID/mem. The kernel
// performs these accesses as a debugger would (FOLL_FORCE), so writes to
// read-only and R-X pages succeed: W^X targets can be patched without ever
// mapping a page writable and executable.
type Mem struct {
	pid int
	f   *os.File
}

// OpenMem opens /proc/PID/mem for reading and writing.
func OpenMem(pid int) (*Mem, error) {
	f, err := os.OpenFile(memFile(pid, "mem"), os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EPERM) {
			return nil, fmt.Errorf("open memory of pid %d: %w; run hotfleet as root or with CAP_SYS_PTRACE (%v)", pid, ErrPermission, err)
		}
		return nil, procFileErr(pid, "open memory of", err)
	}
	return &Mem{pid: pid, f: f}, nil
}

// ReadAt fills p from the target's memory at addr, or fails naming the address.
func (m *Mem) ReadAt(p []byte, addr uint64) error {
	if err := m.check(len(p), addr, "read"); err != nil {
		return err
	}
	n, err := m.f.ReadAt(p, int64(addr))
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return m.accessErr("read", len(p), n, addr, err)
}

// WriteAt writes all of p into the target's memory at addr, or fails naming
// the address.
func (m *Mem) WriteAt(p []byte, addr uint64) error {
	if err := m.check(len(p), addr, "write"); err != nil {
		return err
	}
	n, err := m.f.WriteAt(p, int64(addr))
	if n == len(p) {
		return nil
	}
	if err == nil {
		err = io.ErrShortWrite
	}
	return m.accessErr("write", len(p), n, addr, err)
}

func (m *Mem) check(n int, addr uint64, op string) error {
	if m == nil || m.f == nil {
		return fmt.Errorf("%s %d bytes at %#x: memory of the process is not open", op, n, addr)
	}
	// /proc/PID/mem takes a signed file offset; user addresses on x86-64 and
	// arm64 stay far below 2^63, so anything above is a caller bug.
	if addr > math.MaxInt64 || uint64(n) > math.MaxInt64-addr {
		return fmt.Errorf("%s %d bytes at %#x in pid %d: address out of range", op, n, addr, m.pid)
	}
	return nil
}

func (m *Mem) accessErr(op string, want, got int, addr uint64, err error) error {
	// A process that is exiting (killed, or its memory already torn down)
	// reads as nothing at every address: that is its exit, not a bad address.
	if Gone(m.pid) {
		return fmt.Errorf("%s %d bytes at %#x in pid %d: %w", op, want, addr, m.pid, ExitedError{Pid: m.pid})
	}
	return fmt.Errorf("%s %d bytes at %#x in pid %d: only %d done (is the address mapped?): %w", op, want, addr, m.pid, got, err)
}

// Gone reports whether pid has exited, is a zombie, or is exiting (killed,
// or its memory torn down): what it reads or maps now says nothing about
// the process it was.
func Gone(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return errors.Is(err, fs.ErrNotExist) || processDying(pid) || !processAlive(pid)
}

// Close closes the memory file.
func (m *Mem) Close() error {
	if m == nil || m.f == nil {
		return nil
	}
	err := m.f.Close()
	m.f = nil
	return err
}
