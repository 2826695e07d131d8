// Package proc controls a live process through ptrace and /proc: it stops and
// resumes every thread, reads registers, reads and writes memory through
// /proc/PID/mem, and makes system calls inside the target.
//
// Trust: the target is not trusted to cooperate but is trusted not to race us
// maliciously; everything read from it (maps, memory, ELF headers) is parsed
// defensively. Every ptrace request for a process is issued from one goroutine
// locked to its OS thread (see Tracer).
//
// The stop protocol and the crash-safe remote system call are explained in
// docs/proc.md.
package proc

import (
	"errors"
	"fmt"
)

// Mapping is one line of /proc/PID/maps.
type Mapping struct {
	Start, End, Offset uint64
	Perms, Dev         string
	Inode              uint64
	Path               string
}

// Exec reports whether the mapping is executable.
func (m Mapping) Exec() bool { return len(m.Perms) >= 3 && m.Perms[2] == 'x' }

// Readable reports whether the mapping is readable.
func (m Mapping) Readable() bool { return len(m.Perms) >= 1 && m.Perms[0] == 'r' }

// Name is the mapping's path without the " (deleted)" marker the kernel adds
// after the file was replaced, so that a module keeps its name across a
// package upgrade. It is informational only: modules are identified by build-id.
func (m Mapping) Name() string {
	const deleted = " (deleted)"
	if len(m.Path) > len(deleted) && m.Path[len(m.Path)-len(deleted):] == deleted {
		return m.Path[:len(m.Path)-len(deleted)]
	}
	return m.Path
}

// Module is an ELF file mapped into a process, identified by the GNU build-id
// read from the process's memory.
type Module struct {
	Path    string // informational: paths lie (containers, deleted files)
	BuildID []byte
	Bias    uint64 // load bias: runtime address = Bias + ELF virtual address
	Start   uint64 // lowest address of any mapping of the file
	End     uint64 // end of the highest mapping of the file
}

// Contains reports whether addr lies within the module's mappings' span.
func (m Module) Contains(addr uint64) bool { return addr >= m.Start && addr < m.End }

// Range is a half-open address range [Start, End).
type Range struct{ Start, End uint64 }

// HoleSpec describes the free address range FindHole looks for.
type HoleSpec struct {
	Near  []Range // every byte of the hole must be within rel32 reach of every byte of these
	Size  uint64  // bytes; rounded up to the page size
	Low32 bool    // the hole must lie entirely below 2 GiB
	Avoid []Range // ranges that look free but must stay free (the brk heap gap)
}

// Thread is a stopped thread with its program counter and stack pointer as
// they were when it stopped.
type Thread struct {
	Tid    int
	PC, SP uint64
	// TP is the thread pointer (x86-64: the FS base), which for a thread
	// of the C library's threads points at its thread control block at the
	// top of its stack mapping, above every stack frame.
	TP uint64
}

var (
	// ErrNoHole means no free address range in reach could be found.
	ErrNoHole = errors.New("no free address range in reach")
	// ErrPermission means the kernel refused to let hotfleet trace the process.
	ErrPermission = errors.New("permission denied")
	// ErrAlreadyTraced means another tracer (a debugger) holds the process.
	ErrAlreadyTraced = errors.New("process already traced")
	// ErrExited means the process exited.
	ErrExited = errors.New("process exited")
)

// ExitedError says which process exited under hotfleet's hands.
type ExitedError struct{ Pid int }

func (e ExitedError) Error() string {
	return fmt.Sprintf("pid %d exited", e.Pid)
}

// Is lets errors.Is(err, ErrExited) match.
func (e ExitedError) Is(target error) bool { return target == ErrExited }
