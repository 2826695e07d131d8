// Package proc controls a live process through ptrace and /proc: it stops and
// resumes every thread, reads registers, reads and writes memory through
// /proc/PID/mem, and makes system calls inside the target.
//
// Trust: the target is not trusted to cooperate but is trusted not to race us
// maliciously; everything read from it (maps, memory, ELF headers) is parsed
// defensively. Every ptrace request for a process is issued from one goroutine
// locked to its OS thread (see Tracer).
//
// API CONTRACT (filled in by the implementation; signatures are fixed):
//
//	type Mapping struct{ Start, End, Offset uint64; Perms, Dev string; Inode uint64; Path string }
//	func ReadMaps(pid int) ([]Mapping, error)
//	func (m Mapping) Exec() bool; Readable() bool; Name() string
//	func Threads(pid int) ([]int, error)                      // /proc/PID/task
//
//	type Module struct{ Path string; BuildID []byte; Bias, Start, End uint64 }
//	func Modules(pid int) ([]Module, error)   // ELF modules, build-id read from target memory
//	func (Module) Contains(addr uint64) bool
//
//	type Mem struct{...}                       // /proc/PID/mem, works on R-X pages
//	func OpenMem(pid int) (*Mem, error)
//	func (*Mem) ReadAt(p []byte, addr uint64) error   // full read or error
//	func (*Mem) WriteAt(p []byte, addr uint64) error  // full write or error
//	func (*Mem) Close() error
//
//	type HoleSpec struct{ Near []Range; Size uint64; Low32 bool; Avoid []Range }
//	type Range struct{ Start, End uint64 }
//	func FindHole(maps []Mapping, spec HoleSpec) (uint64, error)  // ErrNoHole wrapped
//
//	type Tracer struct{...}                    // one per process
//	func Attach(ctx context.Context, pid int) (*Tracer, error)   // opens, stops nothing
//	func (*Tracer) Pid() int
//	func (*Tracer) Mem() *Mem
//	func (*Tracer) StopOne(ctx) (tid int, err error)    // seize+interrupt one thread
//	func (*Tracer) StopAll(ctx) error                   // seize+interrupt all until stable
//	func (*Tracer) Stopped() []Thread                   // threads now stopped, with regs
//	func (*Tracer) Syscall(ctx, nr int, args ...uint64) (uint64, error) // on a stopped thread, crash-safe
//	func (*Tracer) Resume() (pause time.Duration, err error) // detach all; pause = first stop .. last detach
//	func (*Tracer) Close() error                        // Resume if needed; end the goroutine
//
//	type Thread struct{ Tid int; PC, SP uint64 }
//
//	var ErrNoHole, ErrPermission, ErrAlreadyTraced error
//	type ExitedError struct{ Pid int }                  // Error(); Is(ErrExited)
//	var ErrExited error
package proc
