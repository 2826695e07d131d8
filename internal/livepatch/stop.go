package livepatch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"syscall"
	"time"

	"hotfleet/internal/proc"
)

const (
	// maxStackScan bounds the stack words read per thread: 8 MiB is the
	// default thread stack size, so a larger span is not a stack in use.
	maxStackScan = 8 << 20
	// firstBackoff and maxBackoff bound the wait between attempts to find
	// every function idle: short at first (most busy spells are brief), never
	// so long that a deadline is overshot by much.
	firstBackoff = 5 * time.Millisecond
	maxBackoff   = 500 * time.Millisecond
	// defaultDeadline is how long a busy function is retried by default.
	defaultDeadline = 10 * time.Second
)

// busyRange is an address range no thread may execute in (PC) or return
// into (a word on its stack) while the world is stopped for a write.
type busyRange struct {
	lo, hi uint64 // [lo, hi)
	fn     string // the function the range belongs to, for messages
}

// BusyError says which function kept a thread busy past the deadline.
type BusyError struct {
	Func   string
	Tid    int
	Addr   uint64 // the PC or the return address found
	InPC   bool   // true: the thread is running in the function; false: it will return into it
	Waited time.Duration
}

func (e *BusyError) Error() string {
	how := fmt.Sprintf("will return into it (return address %#x on its stack)", e.Addr)
	if e.InPC {
		how = fmt.Sprintf("(pc %#x)", e.Addr)
		return fmt.Sprintf("function %s is running in thread %d %s — still busy after %s; retry later or use a longer --deadline", e.Func, e.Tid, how, e.Waited.Round(time.Millisecond))
	}
	return fmt.Sprintf("function %s: thread %d %s — still busy after %s; retry later or use a longer --deadline", e.Func, e.Tid, how, e.Waited.Round(time.Millisecond))
}

// Is lets errors.Is(err, ErrBusy) match.
func (e *BusyError) Is(target error) bool { return target == ErrBusy }

// scanResult is what one stop of the world found.
type scanResult struct {
	busy *BusyError // the first busy hit, nil when every function is idle
	used []bool     // per watched region: some PC or stack word points into it
}

// scan checks every stopped thread's PC and stack words against the ranges
// that must be idle and the regions whose use we want to know. The stack
// scan is conservative: any word that looks like an address in a range counts,
// even a stale one. With fresh maps unset, it fails with errStaleMaps when a
// thread's stack is not in maps, so the caller can read the maps again; with
// fresh maps, a thread whose SP lies in no mapping has no stack to scan (it
// could not push a return address anywhere).
func (s *session) scan(maps []proc.Mapping, fresh bool, threads []proc.Thread, block []busyRange, watch []*region) (scanResult, error) {
	res := scanResult{used: make([]bool, len(watch))}
	lo, hi := ^uint64(0), uint64(0)
	for _, b := range block {
		lo, hi = min(lo, b.lo), max(hi, b.hi)
	}
	for _, w := range watch {
		lo, hi = min(lo, w.Addr), max(hi, w.End())
	}
	check := func(tid int, v uint64, pc bool) {
		if v < lo || v >= hi {
			return
		}
		for _, b := range block {
			if res.busy == nil && v >= b.lo && v < b.hi {
				res.busy = &BusyError{Func: b.fn, Tid: tid, Addr: v, InPC: pc}
			}
		}
		for i, w := range watch {
			if w.contains(v) {
				res.used[i] = true
			}
		}
	}
	spans := make([]span, len(threads))
	total := uint64(0)
	ends := make([]uint64, len(threads))
	for i, th := range threads {
		start, end, ok := stackSpan(maps, th.SP, th.TP)
		if !ok && !fresh {
			return res, errStaleMaps
		}
		spans[i].addr, ends[i] = start, end
		total += end - start
	}
	if uint64(cap(s.stackBuf)) < total {
		s.stackBuf = stackBuffer(total)
	}
	buf := s.stackBuf[:total]
	for i := range threads {
		n := ends[i] - spans[i].addr
		spans[i].b, buf = buf[:n], buf[n:]
	}
	if err := readSpans(s.pid, s.mem, spans); err != nil {
		return res, fmt.Errorf("%w: %w", errStaleMaps, err)
	}
	width := hi - lo
	for i, th := range threads {
		check(th.Tid, th.PC, true)
		b := spans[i].b
		for j := 0; j+8 <= len(b); j += 8 {
			// Nearly every word is outside all ranges: reject it with one
			// comparison, since this loop runs with the world stopped.
			if v := binary.LittleEndian.Uint64(b[j:]); v-lo < width {
				check(th.Tid, v, false)
			}
		}
	}
	return res, nil
}

// errStaleMaps means the memory map read before the stop does not describe
// every thread's stack any more.
var errStaleMaps = errors.New("memory map changed")

// stackSpan is the part of the mapping holding sp that lies at or above sp,
// bounded by maxStackScan. A thread of the C library keeps its thread
// control block at the top of its stack mapping, where its thread pointer
// tp points: no stack frame lies above it, so the span ends there. That
// halves what a scan reads with the world stopped, and keeps words of the
// control block (the thread's start routine, for one) from counting as
// uses of a function. The main thread's control block, a thread on another
// stack and a signal handler on an alternate stack all have tp outside the
// span, which then ends with the mapping.
func stackSpan(maps []proc.Mapping, sp, tp uint64) (start, end uint64, ok bool) {
	for _, m := range maps {
		if sp >= m.Start && sp < m.End {
			start = sp &^ 7
			end = min(m.End, start+maxStackScan)
			if tp > start && tp < end {
				end = tp
			}
			return start, end, true
		}
	}
	return 0, 0, false
}

// stopIdle stops every thread and checks that none is busy in block. When one
// is, it resumes the process, backs off with jitter and tries again until the
// deadline. On success the world is left stopped: the caller writes and then
// resumes. The returned flags tell which watched regions are in use.
func (s *session) stopIdle(block []busyRange, watch []*region) ([]bool, error) {
	start := time.Now()
	deadline := start.Add(s.opts.Deadline)
	backoff := firstBackoff
	for {
		// The maps are read before the stop to keep it short; if a thread's
		// stack is not in them (a thread started meanwhile), they are read
		// again with the world stopped.
		maps, err := proc.ReadMaps(s.pid)
		if err != nil {
			return nil, err
		}
		t0 := time.Now()
		if err := s.t.StopAll(s.ctx); err != nil {
			s.resume()
			return nil, fmt.Errorf("stop the threads: %w", err)
		}
		t1 := time.Now()
		threads := s.t.Stopped()
		res, err := s.scan(maps, false, threads, block, watch)
		if errors.Is(err, errStaleMaps) {
			if maps, err = proc.ReadMaps(s.pid); err == nil {
				res, err = s.scan(maps, true, threads, block, watch)
			}
		}
		if err != nil {
			s.resume()
			return nil, fmt.Errorf("scan the threads' stacks: %w", err)
		}
		s.log.Debug("world stopped and scanned", "pid", s.pid, "threads", len(threads), "stop", t1.Sub(t0), "scan", time.Since(t1), "stackbytes", len(s.stackBuf))
		if res.busy == nil {
			return res.used, nil
		}
		if _, err := s.t.Resume(); err != nil {
			return nil, fmt.Errorf("resume the threads: %w", err)
		}
		s.opts.failpoint("busy")
		s.log.Info("function busy, retrying", "pid", s.pid, "function", res.busy.Func, "thread", res.busy.Tid, "addr", res.busy.Addr)
		if time.Now().Add(backoff).After(deadline) {
			res.busy.Waited = time.Since(start)
			return nil, res.busy
		}
		// Jitter keeps the retries from locking step with a periodic busy spell.
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-s.ctx.Done():
			return nil, s.ctx.Err()
		case <-time.After(wait):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

// resume lets every thread run again after a failure; the failure being
// reported matters more than a failure to resume, which proc also logs by
// leaving nothing stopped when the tracer closes.
func (s *session) resume() {
	if _, err := s.t.Resume(); err != nil {
		s.log.Warn("resume after failure", "pid", s.pid, "err", err)
	}
}

// remote makes a system call in the target with one thread stopped.
func (s *session) remote(nr int, args ...uint64) (uint64, error) {
	ret, err := s.t.Syscall(s.ctx, nr, args...)
	if err != nil {
		return 0, err
	}
	if r := int64(ret); r < 0 && r >= -4095 {
		return 0, syscall.Errno(-r)
	}
	return ret, nil
}

// unmap removes a region from the target. Only call it once no thread can
// reach the region.
func (s *session) unmap(r *region) error {
	if _, err := s.t.StopOne(s.ctx); err != nil {
		return fmt.Errorf("unmap region %#x: stop a thread: %w", r.Addr, err)
	}
	_, err := s.remote(syscall.SYS_MUNMAP, r.Addr, r.RegionSize)
	if _, rerr := s.t.Resume(); err == nil && rerr != nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("unmap region %#x of %s level %d: %w", r.Addr, r.PatchID, r.Level, err)
	}
	return nil
}
