package agent

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"time"

	"hotfleet/internal/bundle"
	"hotfleet/internal/inventory"
	"hotfleet/internal/livepatch"
	"hotfleet/internal/proc"
)

func (a *Agent) worker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case pid := <-a.sched.work:
			a.budget.wait(ctx)
			a.check(ctx, pid)
			a.sched.done(pid)
		}
	}
}

// sweep looks at every process: it refreshes the inventory, queues the
// affected processes (and those that may hold a withdrawn patch) for a check
// and watches the directories of their libraries for opens.
func (a *Agent) sweep(ctx context.Context, why string) {
	t0 := time.Now()
	procs, err := a.inv.Scan(ctx)
	if err != nil {
		a.log.Warn("scan processes", "err", err)
		return
	}
	a.mu.Lock()
	a.lastSweep = t0
	a.sweepAt = time.Time{}
	pl, wd := a.plan, a.withdrawn
	alive := make(map[int]bool, len(procs))
	var todo []int
	dirs := map[string]bool{}
	for i := range procs {
		p := &procs[i]
		alive[p.Pid] = true
		v := a.view(p.Pid, p.StartTime, p.Comm)
		ids := moduleIDs(p)
		if affects(pl, wd, ids) {
			v.affected = true
			v.need = needSHAs(pl, ids)
			todo = append(todo, p.Pid)
		} else {
			v.affected, v.need = false, nil
			v.status, v.detail = StateNotAffected, ""
		}
		for _, m := range p.Modules {
			dirs[libDir(p, m.Path)] = true
		}
	}
	// A process that started after the scan began is not in it, and is
	// not gone.
	for pid, v := range a.views {
		if !alive[pid] && v.execAt.Before(t0) && v.checked.Before(t0) {
			delete(a.views, pid)
		}
	}
	for k, r := range a.st.Processes {
		if v := a.views[r.Pid]; v == nil || (v.start != r.Start && v.start != 0) {
			delete(a.st.Processes, k)
			a.markDirty()
		}
	}
	hash := inventory.Hash(a.device, procs)
	invChanged := hash != a.invHash
	a.invHash = hash
	if invChanged {
		a.apiInv = apiInventory(a.device, procs)
	}
	a.mu.Unlock()

	now := time.Now()
	for _, pid := range todo {
		a.sched.at(pid, now)
	}
	a.watchDirs(dirs)
	if invChanged {
		a.report(Report{Kind: KindInventory, Detail: mustJSON(inventoryDoc(a.device, procs))})
	}
	a.log.Debug("swept processes", "why", why, "processes", len(procs), "affected", len(todo), "took", time.Since(t0))
}

// libDir is the directory of a module as the agent can reach it: through
// the process's root for a process in another mount namespace.
func libDir(p *inventory.Process, path string) string {
	path = strings.TrimSuffix(path, " (deleted)")
	dir := filepath.Dir(path)
	if p.Container {
		return fmt.Sprintf("/proc/%d/root%s", p.Pid, dir)
	}
	return dir
}

func moduleIDs(p *inventory.Process) []string {
	ids := make([]string, 0, len(p.Modules))
	for _, m := range p.Modules {
		if m.BuildID != "" {
			ids = append(ids, m.BuildID)
		}
	}
	return ids
}

func affects(pl *plan, wd map[string][]string, ids []string) bool {
	for _, id := range ids {
		if pl.byModule[id] != nil || len(wd[id]) > 0 {
			return true
		}
	}
	return false
}

// view returns the live record of a process, replacing one of an earlier
// process with the same pid. Called with a.mu held.
func (a *Agent) view(pid int, start uint64, comm string) *procView {
	v := a.views[pid]
	if v == nil || (v.start != start && v.start != 0) {
		v = &procView{pid: pid, start: start, comm: comm, status: StatePending, patches: map[string]time.Time{}}
		a.views[pid] = v
	}
	if v.start == 0 {
		v.start = start // a view made at exec, before the process was scanned
	}
	if comm != "" {
		v.comm = comm
	}
	return v
}

// rec returns the durable record of a process. Called with a.mu held.
func (a *Agent) rec(pid int, start uint64, comm string) *procRec {
	k := procKey(pid, start)
	r := a.st.Processes[k]
	if r == nil {
		r = &procRec{Pid: pid, Start: start, Comm: comm}
		a.st.Processes[k] = r
		a.markDirty()
	}
	return r
}

// check brings one process to what is assigned: it applies what is missing
// and reverts what was withdrawn, trusting only what the process says about
// itself.
func (a *Agent) check(ctx context.Context, pid int) {
	p, err := a.inv.Process(ctx, pid)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			a.forget(pid)
		}
		return
	}
	ids := moduleIDs(&p)
	a.mu.Lock()
	pl, wd, gen := a.plan, a.withdrawn, a.planGen
	v := a.view(pid, p.StartTime, p.Comm)
	v.checked = time.Now()
	if !affects(pl, wd, ids) {
		v.affected, v.need = false, nil
		v.status, v.detail = StateNotAffected, ""
		a.mu.Unlock()
		return
	}
	v.affected = true
	v.need = needSHAs(pl, ids)
	r := a.rec(pid, p.StartTime, p.Comm)
	now := time.Now()
	if r.Quarantined.After(now) {
		v.status, v.detail = StateQuarantined, fmt.Sprintf("%s (until %s)", r.LastError, r.Quarantined.Format(time.RFC3339))
		a.mu.Unlock()
		return
	}
	if r.RetryAt.After(now) {
		a.mu.Unlock()
		a.sched.at(pid, r.RetryAt)
		return
	}
	need := pl.forModules(ids)
	// The directory an affected module was loaded from is where the next
	// process will load it from: watch it, so that process is caught at
	// the open, not at a later recheck.
	dirs := map[string]bool{}
	for _, m := range p.Modules {
		if pl.byModule[m.BuildID] != nil {
			if d := libDir(&p, m.Path); !a.watched[d] {
				dirs[d] = true
			}
		}
	}
	var withdrawn []string
	seen := map[string]bool{}
	for _, id := range ids {
		for _, w := range wd[id] {
			if !seen[w] {
				seen[w] = true
				withdrawn = append(withdrawn, w)
			}
		}
	}
	a.mu.Unlock()
	if len(dirs) > 0 {
		a.watchDirs(dirs)
	}

	applied, err := livepatch.Status(ctx, pid)
	if err != nil {
		if errors.Is(err, proc.ErrExited) || errors.Is(err, fs.ErrNotExist) {
			a.forget(pid)
			return
		}
		a.failed(pid, p.StartTime, "", "", fmt.Errorf("read what is applied in pid %d: %w", pid, err), gen)
		return
	}
	live := map[string]livepatch.Applied{} // build-id → the applied region
	for _, ap := range applied {
		if ap.State == "applied" {
			live[hex.EncodeToString(ap.BuildID)] = ap
		}
	}
	// Withdrawn patches first, so that a lower level still assigned can be
	// applied after.
	for _, id := range withdrawn {
		holds := false
		for _, ap := range live {
			if ap.PatchID == id {
				holds = true
			}
		}
		if !holds {
			continue
		}
		if !a.revert(ctx, &p, id) {
			return
		}
		// What is live changed: read it again on the next round.
		a.sched.at(pid, time.Now())
		return
	}
	for _, as := range need {
		if done, found := isApplied(as.Bundle, ids, live); done {
			a.found(&p, as, found)
			continue
		}
		if a.permanent(pid, p.StartTime, as) {
			continue
		}
		if !a.apply(ctx, &p, as, gen) {
			return
		}
	}
	a.mu.Lock()
	v = a.view(pid, p.StartTime, p.Comm)
	if v.status != StateFailed {
		v.status, v.detail = StatePatched, ""
	}
	if len(need) == 0 {
		v.status, v.detail = StateNotAffected, ""
	}
	a.mu.Unlock()
}

// isApplied tells whether b is applied to every module of it the process
// maps, and returns the applied regions it found.
func isApplied(b *bundle.Bundle, ids []string, live map[string]livepatch.Applied) (bool, []livepatch.Applied) {
	mapped := map[string]bool{}
	for _, id := range ids {
		mapped[id] = true
	}
	var found []livepatch.Applied
	for _, m := range b.Modules {
		k := hex.EncodeToString(m.BuildID)
		if !mapped[k] {
			continue
		}
		ap, ok := live[k]
		if !ok || ap.PatchID != b.ID || ap.Level != b.Level {
			return false, nil
		}
		found = append(found, ap)
	}
	return true, found
}

// found records a patch the process already holds, and reports it when no
// report of it was queued (an earlier agent applied it and died first).
func (a *Agent) found(p *inventory.Process, as *Assignment, regions []livepatch.Applied) {
	b := as.Bundle
	key := fmt.Sprintf("%s:%d", b.ID, b.Level)
	a.mu.Lock()
	v := a.view(p.Pid, p.StartTime, p.Comm)
	at := time.Now()
	for _, r := range regions {
		if !r.AppliedAt.IsZero() {
			at = r.AppliedAt
		}
	}
	if _, ok := v.patches[key]; !ok {
		v.patches[key] = at
	}
	r := a.rec(p.Pid, p.StartTime, p.Comm)
	report := !r.reported(b.ID, b.Level)
	if report {
		r.markReported(b.ID, b.Level)
		a.markDirty()
	}
	a.mu.Unlock()
	if report {
		fns := 0
		for _, r := range regions {
			fns += len(r.Functions)
		}
		a.report(Report{Kind: KindApplied, Pid: p.Pid, Start: p.StartTime, Comm: p.Comm, PatchID: b.ID, Level: b.Level, Bundle: as.SHA256, Functions: fns, Found: true})
	}
}

// permanent tells whether the last failure of this exact bundle in this
// process cannot go away by retrying.
func (a *Agent) permanent(pid int, start uint64, as *Assignment) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := a.st.Processes[procKey(pid, start)]
	if r == nil || !r.Permanent || r.ErrorPatch != as.SHA256 {
		return false
	}
	if v := a.views[pid]; v != nil {
		v.status, v.detail = StateFailed, r.LastError
	}
	return true
}

// apply applies one assignment to one process; false when the process needs
// no more work now (it failed, or is gone).
func (a *Agent) apply(ctx context.Context, p *inventory.Process, as *Assignment, gen uint64) bool {
	b := as.Bundle
	t0 := time.Now()
	a.failpoint("before-apply")
	res, err := livepatch.Apply(ctx, p.Pid, b, livepatch.Options{Deadline: a.cfg.Deadline, Log: a.log, Failpoint: a.cfg.Failpoint})
	a.failpoint("after-apply")
	if err != nil {
		if errors.Is(err, proc.ErrExited) {
			a.forget(p.Pid)
			return false
		}
		a.failed(p.Pid, p.StartTime, b.ID, as.SHA256, err, gen)
		return false
	}
	now := time.Now()
	key := fmt.Sprintf("%s:%d", b.ID, b.Level)
	a.mu.Lock()
	v := a.view(p.Pid, p.StartTime, p.Comm)
	v.patches[key] = now
	var lat time.Duration
	if !v.execAt.IsZero() && v.latency == 0 {
		lat = now.Sub(v.execAt)
		v.latency = lat
		a.lat.add(lat)
	}
	r := a.rec(p.Pid, p.StartTime, p.Comm)
	r.Failures, r.RetryAt, r.LastError, r.Permanent, r.ErrorPatch = 0, time.Time{}, "", false, ""
	r.markReported(b.ID, b.Level)
	a.markDirty()
	first := !a.st.Notified
	a.mu.Unlock()
	a.applied.Add(1)
	rep := Report{Kind: KindApplied, Pid: p.Pid, Start: p.StartTime, Comm: p.Comm, PatchID: b.ID, Level: b.Level, Bundle: as.SHA256,
		Functions: res.Functions, PauseUS: res.Pause.Microseconds(), Replaced: res.Replaced, Found: res.AlreadyApplied, LatencyUS: lat.Microseconds()}
	a.report(rep)
	a.log.Info("patched", "pid", p.Pid, "comm", p.Comm, "patch", b.ID, "level", b.Level, "functions", res.Functions, "pause", res.Pause, "apply_took", now.Sub(t0), "exec_to_patched", lat)
	if first {
		a.notifyFirst(ctx)
	}
	return true
}

// revert takes a withdrawn patch out of one process.
func (a *Agent) revert(ctx context.Context, p *inventory.Process, id string) bool {
	a.mu.Lock()
	sha := a.st.Withdrawn[id].SHA256
	a.mu.Unlock()
	res, err := livepatch.Revert(ctx, p.Pid, id, livepatch.Options{Deadline: a.cfg.Deadline, Log: a.log, Failpoint: a.cfg.Failpoint})
	if err != nil && !errors.Is(err, livepatch.ErrNotApplied) {
		if errors.Is(err, proc.ErrExited) {
			a.forget(p.Pid)
			return false
		}
		a.failed(p.Pid, p.StartTime, id, sha, err, 0)
		return false
	}
	a.mu.Lock()
	v := a.view(p.Pid, p.StartTime, p.Comm)
	for k := range v.patches {
		if strings.HasPrefix(k, id+":") {
			delete(v.patches, k)
		}
	}
	a.mu.Unlock()
	a.report(Report{Kind: KindReverted, Pid: p.Pid, Start: p.StartTime, Comm: p.Comm, PatchID: id, Bundle: sha, Level: res.Level, Functions: res.Functions, PauseUS: res.Pause.Microseconds()})
	a.log.Info("reverted withdrawn patch", "pid", p.Pid, "comm", p.Comm, "patch", id)
	return true
}

// permanentErrs cannot go away by trying again: the process runs other code
// than the bundle was built for, or holds a higher level put there by hand.
var permanentErrs = []error{
	livepatch.ErrBuildIDMismatch, livepatch.ErrOldBytes, livepatch.ErrTooSmall,
	livepatch.ErrLevel, bundle.ErrMalformed,
}

func isPermanent(err error) bool {
	for _, e := range permanentErrs {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// failed records a failed attempt: a permanent failure leaves the process
// alone until the assignment changes; others are retried with a doubling
// wait, and after MaxFailures the process is quarantined.
func (a *Agent) failed(pid int, start uint64, patchID, bundleSHA string, err error, gen uint64) {
	now := time.Now()
	a.mu.Lock()
	r := a.rec(pid, start, "")
	v := a.view(pid, start, "")
	r.LastError, r.ErrorPatch = err.Error(), bundleSHA
	perm := isPermanent(err)
	var rep Report
	switch {
	case perm:
		r.Permanent = true
		v.status, v.detail = StateFailed, err.Error()
		rep = Report{Kind: KindFailed, Permanent: true}
	default:
		r.Failures++
		if r.Failures >= a.cfg.MaxFailures {
			r.Quarantined = now.Add(a.cfg.Quarantine)
			r.Failures = 0
			v.status, v.detail = StateQuarantined, err.Error()
			rep = Report{Kind: KindQuarantined, Attempts: a.cfg.MaxFailures}
		} else {
			wait := min(retryBase<<(r.Failures-1), retryMax)
			r.RetryAt = now.Add(wait)
			v.status, v.detail = StateBusy, fmt.Sprintf("%v; retrying in %s", err, wait)
			if !errors.Is(err, livepatch.ErrBusy) {
				v.status = StatePending
			}
			rep = Report{Kind: KindFailed, Attempts: r.Failures}
		}
	}
	retryAt := r.RetryAt
	comm := v.comm
	a.markDirty()
	a.mu.Unlock()
	rep.Pid, rep.Start, rep.Comm, rep.PatchID, rep.Error, rep.Time = pid, start, comm, patchID, err.Error(), now.UTC()
	rep.Bundle = bundleSHA
	a.report(rep)
	a.log.Warn("patch attempt failed", "pid", pid, "comm", comm, "patch", patchID, "kind", rep.Kind, "err", err)
	if !perm && retryAt.After(now) {
		a.sched.at(pid, retryAt)
	}
	if !perm && !errors.Is(err, livepatch.ErrBusy) {
		a.recheckReadiness()
	}
}

// forget drops a process that is gone.
func (a *Agent) forget(pid int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if v := a.views[pid]; v != nil {
		delete(a.st.Processes, procKey(pid, v.start))
		a.markDirty()
	}
	delete(a.views, pid)
}

// readinessRecheckGap: a failure that is not the target's own (busy,
// another build) may mean the device changed (a sysctl, a lost capability),
// so readiness is checked again, at most this often.
const readinessRecheckGap = time.Minute

func (a *Agent) recheckReadiness() {
	a.mu.Lock()
	if time.Since(a.ready.At) < readinessRecheckGap || a.rechecking {
		a.mu.Unlock()
		return
	}
	a.rechecking = true
	a.mu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		a.checkReadiness(ctx)
		a.mu.Lock()
		a.rechecking = false
		a.mu.Unlock()
	}()
}
