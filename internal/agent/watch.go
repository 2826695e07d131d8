package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"hotfleet/internal/inventory"
	"hotfleet/internal/notify"
	"hotfleet/internal/procwatch"
)

// watchEvents follows execs and exits.
func (a *Agent) watchEvents(ctx context.Context, w *procwatch.Watcher) {
	lost := w.Lost()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.Events():
			if !ok {
				return
			}
			switch ev.Kind {
			case procwatch.Exec:
				a.onExec(ev)
			case procwatch.Exit:
				a.onExit(ev)
			case procwatch.Overflow:
				a.requestSweep(time.Now())
			}
			if n := w.Lost(); n != lost {
				// Events were dropped: some new process may be unseen.
				lost = n
				a.requestSweep(time.Now())
			}
		}
	}
}

func (a *Agent) onExec(ev procwatch.Event) {
	if ev.Pid == os.Getpid() {
		return
	}
	a.mu.Lock()
	if len(a.plan.all) == 0 && len(a.withdrawn) == 0 {
		a.mu.Unlock()
		return // nothing assigned: no new process can need work
	}
	// An exec replaces the program: whatever was known of the pid is void.
	old := a.views[ev.Pid]
	if old != nil {
		delete(a.st.Processes, procKey(ev.Pid, old.start))
	}
	v := &procView{pid: ev.Pid, status: StatePending, execAt: ev.Time, patches: map[string]time.Time{}}
	a.views[ev.Pid] = v
	a.mu.Unlock()
	checks := execRechecks
	if a.opens != nil {
		checks = execRechecksWithOpens
	}
	for _, d := range checks {
		a.sched.at(ev.Pid, ev.Time.Add(d))
	}
}

// fatalSignals are the signals by which a process crashes on its own,
// rather than being stopped by someone (SIGKILL, SIGTERM, SIGINT, ...).
var fatalSignals = map[syscall.Signal]bool{
	syscall.SIGSEGV: true, syscall.SIGBUS: true, syscall.SIGILL: true, syscall.SIGFPE: true,
	syscall.SIGABRT: true, syscall.SIGTRAP: true, syscall.SIGSYS: true,
}

// onExit forgets a process and reports it when it crashed soon after a
// patch: the signal that halts a bad rollout.
func (a *Agent) onExit(ev procwatch.Event) {
	a.mu.Lock()
	v := a.views[ev.Pid]
	if v == nil {
		a.mu.Unlock()
		return
	}
	delete(a.views, ev.Pid)
	delete(a.st.Processes, procKey(ev.Pid, v.start))
	a.markDirty()
	var last time.Time
	var patches []string
	for k, t := range v.patches {
		patches = append(patches, k)
		if t.After(last) {
			last = t
		}
	}
	a.mu.Unlock()
	if !ev.Exact || !fatalSignals[ev.Signal] || len(patches) == 0 {
		return
	}
	since := ev.Time.Sub(last)
	if since > a.cfg.CrashWindow {
		return
	}
	sort.Strings(patches)
	id, level := splitKey(patches[len(patches)-1])
	for _, k := range patches {
		if t := v.patches[k]; t.Equal(last) {
			id, level = splitKey(k)
		}
	}
	a.log.Error("patched process crashed", "pid", ev.Pid, "comm", v.comm, "signal", ev.Signal, "patch", id, "since_patch", since)
	a.report(Report{
		Kind: KindCrash, Pid: ev.Pid, Start: v.start, Comm: v.comm, PatchID: id, Level: level,
		Signal: signalName(ev.Signal), SignalNumber: int(ev.Signal), CoreDumped: ev.CoreDumped,
		SinceApplyS: since.Seconds(), Patches: patches, Bundles: a.bundlesOf(patches),
	})
}

func splitKey(k string) (string, uint32) {
	i := strings.LastIndexByte(k, ':')
	if i < 0 {
		return k, 0
	}
	var lv uint32
	fmt.Sscan(k[i+1:], &lv)
	return k[:i], lv
}

func signalName(s syscall.Signal) string {
	names := map[syscall.Signal]string{
		syscall.SIGSEGV: "SIGSEGV", syscall.SIGBUS: "SIGBUS", syscall.SIGILL: "SIGILL", syscall.SIGFPE: "SIGFPE",
		syscall.SIGABRT: "SIGABRT", syscall.SIGTRAP: "SIGTRAP", syscall.SIGSYS: "SIGSYS",
	}
	if n, ok := names[s]; ok {
		return n
	}
	return fmt.Sprintf("signal %d", int(s))
}

// watchDirs watches the directories libraries are loaded from, so that a
// library opened by the dynamic loader (at start or by dlopen) is seen.
func (a *Agent) watchDirs(dirs map[string]bool) {
	if a.opens == nil {
		return
	}
	list := make([]string, 0, len(dirs))
	for d := range dirs {
		list = append(list, d)
	}
	sort.Strings(list)
	for _, d := range list {
		a.mu.Lock()
		known, full := a.watched[d], len(a.watched) >= maxWatchDirs
		a.mu.Unlock()
		if known || full {
			continue
		}
		if err := a.opens.Watch(d); err != nil {
			a.log.Debug("watch library directory", "dir", d, "err", err)
			continue
		}
		a.mu.Lock()
		a.watched[d] = true
		a.mu.Unlock()
	}
}

// watchOpens reacts to library opens: a new process loading an affected
// library is checked at once, and a dlopen() in an older process triggers a
// (rate-limited) sweep.
func (a *Agent) watchOpens(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case path, ok := <-a.opens.Events():
			if !ok {
				return
			}
			if !a.affectedFile(path) {
				continue
			}
			now := time.Now()
			a.mu.Lock()
			var young []int
			for pid, v := range a.views {
				if !v.execAt.IsZero() && now.Sub(v.execAt) < youngFor {
					young = append(young, pid)
				}
			}
			a.mu.Unlock()
			// The loader maps the file right after opening it.
			for _, pid := range young {
				a.sched.at(pid, now.Add(500*time.Microsecond))
				a.sched.at(pid, now.Add(3*time.Millisecond))
			}
			a.requestSweep(now.Add(20 * time.Millisecond))
		}
	}
}

// requestSweep asks for a sweep at t or, when one ran recently, as soon as
// sweepMinGap allows.
func (a *Agent) requestSweep(t time.Time) {
	a.mu.Lock()
	if !a.sweepAt.IsZero() {
		a.mu.Unlock()
		return
	}
	if next := a.lastSweep.Add(sweepMinGap); t.Before(next) {
		t = next
	}
	a.sweepAt = t
	a.mu.Unlock()
	time.AfterFunc(time.Until(t), func() {
		select {
		case a.sched.sweepC <- struct{}{}:
		default:
		}
	})
}

// affectedFile tells whether an opened file is a module some assignment
// patches (or a withdrawn patch patched). The inventory caches build-ids by
// file identity, so the many opens of common libraries cost one stat each.
func (a *Agent) affectedFile(path string) bool {
	// Shared libraries are named *.so or *.so.N; executables reach the
	// agent through exec events. Other opens in library directories (a
	// compiler reading headers, a shell reading scripts) cost nothing more.
	if !strings.Contains(filepath.Base(path), ".so") {
		return false
	}
	id := a.inv.FileBuildID(path)
	if id == "" {
		return false
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.plan.byModule[id] != nil || len(a.withdrawn[id]) > 0
}

// notifyFirst tells the logged-in users, once per device, that it was hot
// patched.
func (a *Agent) notifyFirst(ctx context.Context) {
	if !a.cfg.Notify.Enabled || !a.notifying.CompareAndSwap(false, true) {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		res, err := notify.Notify(ctx, a.cfg.Notify, a.log)
		if err != nil {
			a.log.Warn("tell logged-in users about the first hot patch", "err", err)
		}
		a.log.Info("told users about the first hot patch", "desktop", res.Desktop, "journal", res.Journal, "motd", res.Motd)
		a.mu.Lock()
		a.st.Notified = true
		a.markDirty()
		a.mu.Unlock()
	}()
}

// latencies keeps the exec→patched times of the newest processes.
type latencies struct {
	ring  []time.Duration
	next  int
	count int
}

// latencyKeep bounds the samples kept for percentiles.
const latencyKeep = 4096

func (l *latencies) add(d time.Duration) {
	if len(l.ring) < latencyKeep {
		l.ring = append(l.ring, d)
	} else {
		l.ring[l.next] = d
		l.next = (l.next + 1) % latencyKeep
	}
	l.count++
}

func (l *latencies) percentiles() (p50, p99, maxv time.Duration) {
	if len(l.ring) == 0 {
		return 0, 0, 0
	}
	s := append([]time.Duration(nil), l.ring...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return at(0.50), at(0.99), s[len(s)-1]
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		return json.RawMessage(fmt.Sprintf("%q", err.Error()))
	}
	return b
}

// inventoryModule is one module in the inventory report: the fleet needs
// which builds exist on the device, not every pid.
type inventoryModule struct {
	BuildID   string `json:"build_id"`
	Path      string `json:"path"`
	Package   string `json:"package,omitempty"`
	Processes int    `json:"processes"`
}

type inventoryReport struct {
	Device    inventory.Device  `json:"device"`
	Processes int               `json:"processes"`
	Modules   []inventoryModule `json:"modules"`
}

func inventoryDoc(d inventory.Device, procs []inventory.Process) inventoryReport {
	byID := map[string]*inventoryModule{}
	for i := range procs {
		for _, m := range procs[i].Modules {
			k := m.BuildID + "\x00" + filepath.Clean(strings.TrimSuffix(m.Path, " (deleted)"))
			im := byID[k]
			if im == nil {
				im = &inventoryModule{BuildID: m.BuildID, Path: m.Path, Package: m.Package}
				byID[k] = im
			}
			im.Processes++
		}
	}
	out := inventoryReport{Device: d, Processes: len(procs)}
	for _, im := range byID {
		out.Modules = append(out.Modules, *im)
	}
	sort.Slice(out.Modules, func(i, j int) bool { return out.Modules[i].Path < out.Modules[j].Path })
	return out
}
