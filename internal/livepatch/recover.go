package livepatch

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"hotfleet/internal/proc"
)

// Recover finishes or undoes whatever an interrupted earlier run left in the
// process, and unmaps superseded and reverted regions once they are proven
// unused. It returns one line per action taken.
func Recover(ctx context.Context, pid int, opts Options) ([]string, error) {
	s, err := attach(ctx, pid, opts)
	if err != nil {
		return nil, fmt.Errorf("recover pid %d: %w", pid, err)
	}
	defer s.close()
	done, err := s.recover()
	if err != nil {
		return done, fmt.Errorf("recover pid %d: %w", pid, err)
	}
	return done, nil
}

// recover is Recover on an attached process.
func (s *session) recover() ([]string, error) {
	regions, err := s.regions()
	if err != nil {
		return nil, err
	}
	byAddr := map[uint64]*region{}
	for _, r := range regions {
		byAddr[r.Addr] = r
	}
	var done []string
	for _, r := range regions {
		what := fmt.Sprintf("%s level %d (region %#x)", r.PatchID, r.Level, r.Addr)
		switch r.State {
		case statePrepared:
			// No site was ever written while the region was prepared.
			if err := s.unmap(r); err != nil {
				return done, err
			}
			r.State = 0
			done = append(done, fmt.Sprintf("%s: an apply was interrupted before switching; removed its unused region", what))
		case stateSwitching:
			n, err := s.rollForwardSwitch(r, byAddr[r.Replaces])
			if err != nil {
				return done, fmt.Errorf("finish the interrupted apply of %s: %w", what, err)
			}
			done = append(done, fmt.Sprintf("%s: an apply was interrupted while switching; finished it (%d of %d sites written now)", what, n, len(r.Sites)))
		case stateReverting:
			n, err := s.restore(r, false)
			if err != nil {
				return done, fmt.Errorf("finish the interrupted revert of %s: %w", what, err)
			}
			done = append(done, fmt.Sprintf("%s: a revert was interrupted; finished it (%d of %d sites restored now)", what, n, len(r.Sites)))
		}
	}
	more, err := s.removeLeftovers()
	done = append(done, more...)
	if err != nil {
		return done, err
	}
	var idle []*region
	for _, r := range regions {
		if (r.State == stateSuperseded || r.State == stateReverted) && r.Flags&flagHasNew == 0 {
			idle = append(idle, r)
		}
	}
	if len(idle) == 0 {
		return done, nil
	}
	// One stop proves which of them no thread is in or will return into.
	used, err := s.stopIdle(nil, idle)
	if err != nil {
		return done, err
	}
	if _, err := s.t.Resume(); err != nil {
		return done, fmt.Errorf("resume: %w", err)
	}
	for i, r := range idle {
		if used[i] {
			continue
		}
		if err := s.unmap(r); err != nil {
			return done, err
		}
		done = append(done, fmt.Sprintf("%s %s level %d (region %#x): no thread uses it any more; unmapped it", r.State, r.PatchID, r.Level, r.Addr))
	}
	return done, nil
}

// rollForwardSwitch completes a switch that was interrupted: every site that
// does not jump to r yet is switched, provided it holds either the original
// bytes or the replaced level's jump.
func (s *session) rollForwardSwitch(r, old *region) (int, error) {
	// Only the sites still to write must be idle; they are read again once
	// the world is stopped.
	var block []busyRange
	for i := range r.Sites {
		rec := &r.Sites[i]
		cur := make([]byte, len(rec.Jump))
		if err := s.mem.ReadAt(cur, rec.jumpAt()); err == nil && bytes.Equal(cur, rec.Jump) {
			continue
		}
		var o *siteRec
		var oldBase uint64
		if old != nil {
			o, oldBase = old.siteAt(rec.Site), old.Addr
		}
		block = append(block, blockRanges(rec, r.Addr, o, oldBase)...)
	}
	if old != nil {
		for i := range old.Sites {
			if !hasSite(r.Sites, old.Sites[i].Site) {
				block = append(block, blockRanges(&old.Sites[i], old.Addr, nil, 0)...)
			}
		}
	}
	if _, err := s.stopIdle(block, nil); err != nil {
		return 0, err
	}
	var writes []siteWrite
	for i := range r.Sites {
		rec := &r.Sites[i]
		size := len(rec.Jump)
		var o *siteRec
		if old != nil {
			if o = old.siteAt(rec.Site); o != nil && int(o.JumpOff)+len(o.Jump) > int(rec.JumpOff)+size {
				size = int(o.JumpOff) + len(o.Jump) - int(rec.JumpOff)
			}
		}
		cur := make([]byte, size)
		if err := s.mem.ReadAt(cur, rec.jumpAt()); err != nil {
			s.resume()
			return 0, fmt.Errorf("read site of %s at %#x: %w", rec.Name, rec.jumpAt(), err)
		}
		switch {
		case bytes.HasPrefix(cur, rec.Jump):
			continue
		case bytes.HasPrefix(cur, rec.Saved),
			o != nil && o.JumpOff == rec.JumpOff && bytes.HasPrefix(cur, o.Jump):
		default:
			s.resume()
			return 0, fmt.Errorf("function %s at %#x holds neither its original bytes nor a hotfleet jump: something else rewrote it; the region stays in state switching", rec.Name, rec.Site)
		}
		writes = append(writes, siteWrite{addr: rec.jumpAt(), b: rec.Jump, name: rec.Name})
	}
	n, err := s.writeSites(writes)
	if err != nil {
		s.resume()
		return n, err
	}
	if err := s.completeSwitch(r.Addr, r.Sites, old); err != nil {
		s.resume()
		return n, err
	}
	r.State = stateApplied
	if _, err := s.t.Resume(); err != nil {
		return n, fmt.Errorf("resume: %w", err)
	}
	return n, nil
}

// restore stops the world until the sites of r are idle and writes back the
// original bytes of every site still jumping to r. strict refuses when a site
// does not hold the jump (a fresh revert); otherwise sites already restored
// are skipped (finishing an interrupted revert). It returns the number of
// sites restored.
func (s *session) restore(r *region, strict bool) (int, error) {
	n, _, err := s.restoreWatch(r, strict)
	if err != nil {
		return n, err
	}
	if _, err := s.t.Resume(); err != nil {
		return n, fmt.Errorf("resume: %w", err)
	}
	return n, nil
}

// restoreWatch is restore leaving the world stopped on success, so the
// caller can take the pause from Resume; it also tells whether the region was
// in use during the stop.
func (s *session) restoreWatch(r *region, strict bool) (int, bool, error) {
	var block []busyRange
	for i := range r.Sites {
		rec := &r.Sites[i]
		block = append(block, busyRange{lo: rec.jumpAt() + 1, hi: rec.jumpAt() + uint64(rec.JumpLen), fn: rec.Name})
		if rec.quiescent() {
			block = append(block, busyRange{lo: rec.New, hi: rec.New + uint64(rec.NewSize), fn: rec.Name})
		}
	}
	used, err := s.stopIdle(block, []*region{r})
	if err != nil {
		return 0, false, err
	}
	fail := func(err error) (int, bool, error) {
		s.resume()
		return 0, false, err
	}
	spans := make([]span, len(r.Sites))
	cur := make([][]byte, len(r.Sites))
	for i := range r.Sites {
		cur[i] = make([]byte, len(r.Sites[i].Jump))
		spans[i] = span{addr: r.Sites[i].jumpAt(), b: cur[i]}
	}
	if err := readSpans(s.pid, s.mem, spans); err != nil {
		return fail(fmt.Errorf("read the sites of %s: %w", r.PatchID, err))
	}
	for i := range r.Sites {
		rec := &r.Sites[i]
		if bytes.Equal(cur[i], rec.Jump) || (!strict && bytes.Equal(cur[i], rec.Saved)) {
			continue
		}
		return fail(fmt.Errorf("function %s at %#x no longer holds the jump %s level %d wrote: something else rewrote it; refusing to restore over it", rec.Name, rec.Site, r.PatchID, r.Level))
	}
	if err := s.setState(r.Addr, stateReverting); err != nil {
		return fail(err)
	}
	s.opts.failpoint("reverting")
	// Switched off, every stub runs the original code again at once; the
	// sites then get their original bytes back, which changes nothing a
	// thread can see.
	if hasStubs(r.Sites) {
		if err := s.setSwitch(r.Addr, false); err != nil {
			return fail(err)
		}
	}
	var writes []siteWrite
	for i := range r.Sites {
		rec := &r.Sites[i]
		if bytes.Equal(cur[i], rec.Jump) {
			writes = append(writes, siteWrite{addr: rec.jumpAt(), b: rec.Saved, name: rec.Name})
		}
	}
	n, err := s.writeSites(writes)
	if err != nil {
		s.resume()
		return n, false, fmt.Errorf("restore the original code (the region stays in state reverting; the next run finishes it): %w", err)
	}
	if err := s.setState(r.Addr, stateReverted); err != nil {
		s.resume()
		return n, false, err
	}
	r.State = stateReverted
	return n, used[0], nil
}

// removeLeftovers undoes what an apply killed while naming its region by a
// memfd left: a hotfleet-named mapping without a header (never switched to)
// is unmapped, and memfds of hotfleet still open in the target are closed
// (a mapping of one holds its own reference, so closing is always safe).
func (s *session) removeLeftovers() ([]string, error) {
	var done []string
	maps, err := proc.ReadMaps(s.pid)
	if err != nil {
		return nil, err
	}
	for _, m := range findLeftovers(s.mem, maps) {
		if _, err := s.t.StopOne(s.ctx); err != nil {
			return done, fmt.Errorf("unmap leftover mapping %#x: stop a thread: %w", m.Start, err)
		}
		_, err := s.remote(syscall.SYS_MUNMAP, m.Start, m.End-m.Start)
		if _, rerr := s.t.Resume(); err == nil && rerr != nil {
			err = rerr
		}
		if err != nil {
			return done, fmt.Errorf("unmap leftover mapping %#x (%s): %w", m.Start, m.Path, err)
		}
		done = append(done, fmt.Sprintf("mapping %#x (%s): an apply was interrupted before writing its header; removed it", m.Start, m.Path))
	}
	if len(leakedMemfds(s.pid)) == 0 {
		return done, nil
	}
	// Every thread stays stopped from the second look at the fds to the
	// close: no thread can close one and open something else under its number.
	if err := s.t.StopAll(s.ctx); err != nil {
		return done, fmt.Errorf("close leaked memfds: stop the threads: %w", err)
	}
	var closed []string
	for _, fd := range leakedMemfds(s.pid) {
		if _, err := s.remote(syscall.SYS_CLOSE, uint64(fd)); err != nil {
			s.resume()
			return done, fmt.Errorf("close leaked memfd %d: %w", fd, err)
		}
		closed = append(closed, strconv.Itoa(fd))
	}
	if _, err := s.t.Resume(); err != nil {
		return done, fmt.Errorf("resume after closing leaked memfds: %w", err)
	}
	if len(closed) > 0 {
		done = append(done, fmt.Sprintf("fd %s: an apply was interrupted while naming its region; closed the memfd it left open", strings.Join(closed, ", ")))
	}
	return done, nil
}

// leakedMemfds lists the target's fds open on a memfd hotfleet created.
// Unreadable entries are skipped: fds come and go while the target runs.
func leakedMemfds(pid int) []int {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range entries {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if link, err := os.Readlink(dir + "/" + e.Name()); err == nil && strings.HasPrefix(link, memfdNamePrefix) {
			out = append(out, fd)
		}
	}
	return out
}
