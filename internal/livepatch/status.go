package livepatch

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"time"

	"hotfleet/internal/bundle"
	"hotfleet/internal/proc"
)

// Revert restores the original code of every site of the applied patch id in
// the process, in one stop of the world.
func Revert(ctx context.Context, pid int, id string, opts Options) (Result, error) {
	res := Result{Pid: pid, PatchID: id}
	wrap := func(err error) error { return fmt.Errorf("revert %s in pid %d: %w", id, pid, err) }
	s, err := attach(ctx, pid, opts)
	if err != nil {
		return res, wrap(err)
	}
	defer s.close()
	// A revert of this very patch that an earlier run left half done is
	// finished by recover: then this revert has succeeded, not failed.
	var interrupted []*region
	if before, err := s.regions(); err == nil {
		for _, r := range before {
			if r.PatchID == id && r.State == stateReverting {
				interrupted = append(interrupted, r)
			}
		}
	}
	res.Recovered, err = s.recover()
	if err != nil {
		return res, wrap(fmt.Errorf("finish what an earlier run left: %w", err))
	}
	regions, err := s.regions()
	if err != nil {
		return res, wrap(err)
	}
	var todo []*region
	for _, r := range regions {
		if r.PatchID == id && r.State == stateApplied {
			todo = append(todo, r)
		}
	}
	if len(todo) == 0 && len(interrupted) > 0 {
		for _, r := range interrupted {
			res.Level = r.Level
			res.Functions += len(r.Sites)
		}
		return res, nil
	}
	if len(todo) == 0 {
		return res, newErr(ErrNotApplied, "patch %s is not applied in pid %d", id, pid)
	}
	for _, r := range todo {
		res.Level = r.Level
		var n int
		var used bool
		var pause time.Duration
		var resumeErr error
		// As in Apply: stop, scan, restore and resume on the tracer's thread.
		release := noGC()
		err := s.t.Run(s.ctx, func() error {
			var err error
			if n, used, err = s.restoreWatch(r, true); err != nil {
				return err
			}
			pause, resumeErr = s.t.Resume()
			return nil
		})
		release()
		if err != nil {
			return res, wrap(err)
		}
		res.Functions += n
		res.Pause += pause
		if resumeErr != nil {
			return res, wrap(fmt.Errorf("resume after the revert (the patch is reverted): %w", resumeErr))
		}
		s.opts.failpoint("reverted")
		s.dropIfUnused(r, used)
	}
	return res, nil
}

// Status reports every hotfleet region in the process from its memory and
// maps alone, without stopping it.
func Status(ctx context.Context, pid int) ([]Applied, error) {
	maps, err := proc.ReadMaps(pid)
	if err != nil {
		return nil, fmt.Errorf("status of pid %d: %w", pid, err)
	}
	mem, err := proc.OpenMem(pid)
	if err != nil {
		return nil, fmt.Errorf("status of pid %d: %w", pid, err)
	}
	defer mem.Close()
	regions, err := findRegions(mem, maps)
	if err != nil {
		return nil, fmt.Errorf("status of pid %d: %w", pid, err)
	}
	out := make([]Applied, 0, len(regions))
	for _, r := range regions {
		a := Applied{
			Pid: pid, PatchID: r.PatchID, Level: r.Level, BuildID: r.BuildID,
			Module: r.Module, State: r.State.String(), Region: r.Addr, Mapping: r.Mapping, AppliedAt: appliedAt(r.AppliedNs),
		}
		jumps, active := 0, 0
		for i := range r.Sites {
			rec := &r.Sites[i]
			cur := make([]byte, len(rec.Jump))
			jumped := mem.ReadAt(cur, rec.jumpAt()) == nil && bytes.Equal(cur, rec.Jump)
			on := jumped && (rec.Stub == 0 || r.Switch == 1)
			if jumped {
				jumps++
			}
			if on {
				active++
			}
			a.Functions = append(a.Functions, AppliedFunc{Name: rec.Name, Site: rec.Site, New: rec.New, Active: on})
		}
		a.Consistent, a.Problem = judge(r, jumps, active)
		out = append(out, a)
	}
	return out, nil
}

// judge tells whether a region's state agrees with its sites: jumps counts
// the sites holding the region's jump, active those running its new code.
func judge(r *region, jumps, active int) (bool, string) {
	n := len(r.Sites)
	const next = "the next apply, revert or 'hotfleet patch status --recover' finishes it"
	runs := "old"
	if active == n {
		runs = "new"
	} else if active > 0 {
		runs = "partly new"
	}
	switch r.State {
	case stateApplied:
		if active == n {
			return true, ""
		}
		return false, fmt.Sprintf("applied, but only %d of %d sites run the new code: something else rewrote the code; restart the process to get a known state", active, n)
	case statePrepared:
		if jumps == 0 {
			return false, "an apply was interrupted before switching: nothing jumps to this region; " + next
		}
	case stateSwitching:
		return false, fmt.Sprintf("interrupted while switching: %d of %d sites written, the process runs the %s code; %s", jumps, n, runs, next)
	case stateReverting:
		return false, fmt.Sprintf("interrupted while reverting: %d of %d sites still jump to the patch, the process runs the %s code; %s", jumps, n, runs, next)
	case stateReverted, stateSuperseded:
		if jumps == 0 {
			return true, ""
		}
	default:
		return false, "unknown state: written by a newer hotfleet?"
	}
	return false, fmt.Sprintf("%s, but %d of %d sites still jump to this region: something else rewrote the code", r.State, jumps, n)
}

// Targets lists the processes that map any module of b, found by the
// build-ids in their memory. hotfleet itself and processes that vanish or
// cannot be read are skipped.
func Targets(ctx context.Context, b *bundle.Bundle) ([]int, error) {
	var out []int
	err := eachProcess(ctx, func(pid int) {
		mods, err := proc.Modules(pid)
		if err != nil {
			return
		}
		for _, m := range mods {
			if b.Module(m.BuildID) != nil {
				out = append(out, pid)
				return
			}
		}
	})
	return out, err
}

// Patched lists the processes holding at least one hotfleet region, or a
// hotfleet-named mapping an interrupted apply left without a header (so that
// a recover over all of them removes it).
func Patched(ctx context.Context) ([]int, error) {
	var out []int
	err := eachProcess(ctx, func(pid int) {
		maps, err := proc.ReadMaps(pid)
		if err != nil {
			return
		}
		var cand []proc.Mapping
		for _, m := range maps {
			if named(m) {
				out = append(out, pid)
				return
			}
			if candidate(m) {
				cand = append(cand, m)
			}
		}
		if len(cand) == 0 {
			return
		}
		mem, err := proc.OpenMem(pid)
		if err != nil {
			return
		}
		defer mem.Close()
		if rs, err := findRegions(mem, cand); err == nil && len(rs) > 0 {
			out = append(out, pid)
		}
	})
	return out, err
}

// eachProcess calls fn for every process but this one, in pid order.
func eachProcess(ctx context.Context, fn func(pid int)) error {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return fmt.Errorf("list processes: %w", err)
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil && pid != self {
			pids = append(pids, pid)
		}
	}
	sort.Ints(pids)
	for _, pid := range pids {
		if err := ctx.Err(); err != nil {
			return err
		}
		fn(pid)
	}
	return nil
}

// appliedAt is when the region was applied, zero if it never was.
func appliedAt(ns uint64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, int64(ns))
}
