package livepatch

import (
	"unsafe"

	"golang.org/x/sys/unix"

	"hotfleet/internal/proc"
)

// iovMax is the kernel's limit on ranges per process_vm_readv call (UIO_MAXIOV).
const iovMax = 1024

// span is one range of target memory to read into b.
type span struct {
	addr uint64
	b    []byte
}

// readSpans fills every span from the target with as few system calls as it
// can, because it runs while the world is stopped: process_vm_readv reads
// many ranges per call. It stops at the first range it cannot read (or read
// whole); that one is read through /proc/PID/mem, which also reads pages the
// process cannot, and the rest is retried.
func readSpans(pid int, mem *proc.Mem, spans []span) error {
	local := make([]unix.Iovec, 0, min(len(spans), iovMax))
	remote := make([]unix.RemoteIovec, 0, min(len(spans), iovMax))
	for len(spans) > 0 {
		batch := spans[:min(len(spans), iovMax)]
		local, remote = local[:0], remote[:0]
		for _, s := range batch {
			if len(s.b) == 0 {
				continue
			}
			var v unix.Iovec
			v.Base = (*byte)(unsafe.Pointer(&s.b[0]))
			v.SetLen(len(s.b))
			local = append(local, v)
			remote = append(remote, unix.RemoteIovec{Base: uintptr(s.addr), Len: len(s.b)})
		}
		n, err := unix.ProcessVMReadv(pid, local, remote, 0)
		if err != nil {
			n = 0
		}
		done := 0
		for done < len(batch) && n >= len(batch[done].b) {
			n -= len(batch[done].b)
			done++
		}
		if done < len(batch) {
			if err := mem.ReadAt(batch[done].b, batch[done].addr); err != nil {
				return err
			}
			done++
		}
		spans = spans[done:]
	}
	return nil
}
