package livepatch

import (
	"fmt"
)

// maxAtomicSpan bounds the range rewritten by one write when every site of a
// switch is written at once: the write makes each page of the range a private
// copy in the target, so beyond this the memory cost outweighs the gain.
const maxAtomicSpan = 64 << 10

// atomicSpan is maxAtomicSpan, changeable by tests of the per-site path.
var atomicSpan uint64 = maxAtomicSpan

// siteWrite is one site's new bytes.
type siteWrite struct {
	addr uint64
	b    []byte
	name string
}

// writeSites writes every site with the world stopped. When all of them lie
// within atomicSpan bytes, they are written by a single write through
// /proc/PID/mem: a hotfleet killed at any instant then leaves the target
// running either none or all of them, never half switched. Otherwise each
// site takes one write and a kill in between leaves a recorded intermediate
// state that the next run finishes. It returns how many writes succeeded.
func (s *session) writeSites(ws []siteWrite) (int, error) {
	if len(ws) == 0 {
		return 0, nil
	}
	lo, hi := ws[0].addr, ws[0].addr
	for _, w := range ws {
		lo, hi = min(lo, w.addr), max(hi, w.addr+uint64(len(w.b)))
	}
	if len(ws) > 1 && hi-lo <= atomicSpan {
		span := []span{{addr: lo, b: make([]byte, hi-lo)}}
		if err := readSpans(s.pid, s.mem, span); err == nil {
			buf := span[0].b
			for _, w := range ws {
				copy(buf[w.addr-lo:], w.b)
			}
			if err := s.mem.WriteAt(buf, lo); err != nil {
				return 0, fmt.Errorf("write %d sites at once in [%#x,%#x): %w", len(ws), lo, hi, err)
			}
			s.opts.failpoint("site")
			return len(ws), nil
		}
		// Not one readable range (the sites span a gap): write one by one.
	}
	for i, w := range ws {
		if err := s.mem.WriteAt(w.b, w.addr); err != nil {
			return i, fmt.Errorf("write site of %s at %#x: %w", w.name, w.addr, err)
		}
		s.opts.failpoint("site")
	}
	return len(ws), nil
}
