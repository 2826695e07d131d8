package livepatch

import (
	"runtime/debug"
	"sync"
)

// The world-stopped steps should not wait for the Go garbage collector: a
// collection that starts while the target's threads are stopped stops the
// tracer too, for its own stop-the-world phases, and that time counts in
// the pause. noGC holds collections off from just before a stop until just
// after the resume; the calls nest, so concurrent operations on several
// processes restore the setting only when the last one ends.
var gcHold struct {
	sync.Mutex
	n    int
	prev int
}

// noGC disables garbage collection until the returned function is called.
func noGC() (release func()) {
	gcHold.Lock()
	if gcHold.n == 0 {
		gcHold.prev = debug.SetGCPercent(-1)
	}
	gcHold.n++
	gcHold.Unlock()
	return func() {
		gcHold.Lock()
		gcHold.n--
		if gcHold.n == 0 {
			debug.SetGCPercent(gcHold.prev)
		}
		gcHold.Unlock()
	}
}

// stackBufs keeps the buffers stack scans read into across operations, so
// that a scan with the world stopped does not fault in fresh pages.
var stackBufs sync.Pool

// stackBuffer returns a buffer of at least n bytes from the pool.
func stackBuffer(n uint64) []byte {
	if b, ok := stackBufs.Get().(*[]byte); ok && uint64(cap(*b)) >= n {
		return (*b)[:n]
	}
	return make([]byte, n)
}
