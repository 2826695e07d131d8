// Package agent is the daemon on each device: it turns "these bundles are
// assigned to this device" into "every process that maps an affected module
// runs the fixed code", and tells the truth about it.
//
// The agent's loop: learn the assignments (a patch directory, or the control
// plane: one Source interface, one code path), sweep every process, watch
// execs, exits and library opens to reach new processes and late dlopen()s,
// and hand each process that needs work to a bounded pool of workers that
// apply or revert with package livepatch. What is applied is never taken
// from the agent's own records: each process says it (its region headers),
// so a restarted agent neither re-applies nor forgets anything. The agent's
// records hold only what processes cannot tell: retries, quarantines, which
// outcomes were reported. Reports go through a durable outbox.
//
// Trust: the agent runs as root with CAP_SYS_PTRACE. Bundles are trusted to
// be authentic by the time a Source returns them; livepatch still checks each
// against the target (build-id, old bytes). The agent never executes anything
// it received.
package agent

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"hotfleet/internal/api"
	"hotfleet/internal/inventory"
	"hotfleet/internal/notify"
	"hotfleet/internal/outbox"
	"hotfleet/internal/procwatch"
	"hotfleet/internal/readiness"
)

// Defaults, each with its reason.
const (
	// defaultRescan is the safety net behind the event-driven paths: a
	// process the events missed is found within this time.
	defaultRescan = 60 * time.Second
	// defaultReadiness: readiness changes with admin actions (sysctl,
	// capabilities), rarely; a check costs a probe child.
	defaultReadiness = 5 * time.Minute
	// defaultCrashWindow: a fatal signal this soon after a patch counts
	// against the patch; later ones are the program's own.
	defaultCrashWindow = 10 * time.Minute
	// defaultMaxFailures failed attempts quarantine a process.
	defaultMaxFailures = 5
	// defaultQuarantine: how long a quarantined process is left alone.
	defaultQuarantine = time.Hour
	// defaultCPUBudget: share of one core the agent's patch work may use on
	// average, so a mass apply never becomes the disruption it removes.
	defaultCPUBudget = 0.5
	// defaultApplyDeadline: how long one attempt waits for a busy function
	// before giving the worker back; the process is retried with backoff.
	defaultApplyDeadline = 2 * time.Second
	// retryBase doubles per failure up to retryMax.
	retryBase = time.Second
	retryMax  = 5 * time.Minute
	// sourcePoll: how often the patch directory is looked at; a dropped
	// bundle takes effect within this.
	sourcePoll = 2 * time.Second
	// saveDebounce: state writes are batched; a crash loses at most this
	// much, and what it loses the processes themselves still tell.
	saveDebounce = 200 * time.Millisecond
	// youngFor: a process this young may still be loading libraries; a
	// library open then rechecks it.
	youngFor = 2 * time.Second
	// sweepMinGap bounds the full rescans a burst of library opens causes.
	sweepMinGap = 2 * time.Second
	// maxWatchDirs bounds the library directories watched for opens.
	maxWatchDirs = 512
)

// execRechecks are when a new process is looked at after its exec: at once
// for patches to the executable, then while the dynamic loader maps its
// libraries. When library opens are watched (see watchOpens), the open of an
// affected library brings the check at the right moment, and only two late
// checks remain as a safety net; each check of an unaffected process costs
// a read of its maps, and busy machines exec hundreds of processes a second.
var (
	execRechecks          = []time.Duration{0, 2 * time.Millisecond, 10 * time.Millisecond, 50 * time.Millisecond, 500 * time.Millisecond}
	execRechecksWithOpens = []time.Duration{0, 50 * time.Millisecond, 500 * time.Millisecond}
)

// Config configures an agent.
type Config struct {
	StateDir    string // state.json and the report queue; created if missing
	Source      Source
	Sender      Sender // nil: reports stay queued (standalone)
	Socket      string // status socket; "" for none
	Workers     int
	CPUBudget   float64
	Rescan      time.Duration
	Readiness   time.Duration
	CrashWindow time.Duration
	MaxFailures int
	Quarantine  time.Duration
	Deadline    time.Duration // per attempt
	WatchMode   string        // procwatch mode: "", "netlink", "poll"
	Notify      notify.Config
	Packages    bool // look up which package owns each module
	Log         *slog.Logger
	// Failpoint is called at named points (tests of crash consistency).
	Failpoint func(name string)
}

func (c *Config) defaults() {
	if c.Workers <= 0 {
		c.Workers = max(2, runtime.NumCPU())
	}
	if c.CPUBudget <= 0 {
		c.CPUBudget = defaultCPUBudget
	}
	if c.Rescan <= 0 {
		c.Rescan = defaultRescan
	}
	if c.Readiness <= 0 {
		c.Readiness = defaultReadiness
	}
	if c.CrashWindow <= 0 {
		c.CrashWindow = defaultCrashWindow
	}
	if c.MaxFailures <= 0 {
		c.MaxFailures = defaultMaxFailures
	}
	if c.Quarantine <= 0 {
		c.Quarantine = defaultQuarantine
	}
	if c.Deadline <= 0 {
		c.Deadline = defaultApplyDeadline
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// Agent is one running agent.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	inv    *inventory.Scanner
	out    *outbox.Outbox
	device inventory.Device
	sched  *scheduler
	budget *budget
	opens  *procwatch.FileOpens

	mu         sync.Mutex
	st         *state
	dirty      bool
	saveC      chan struct{}
	plan       *plan
	planGen    uint64
	withdrawn  map[string][]string // build-id → withdrawn patch ids
	views      map[int]*procView
	ready      readiness.Report
	rechecking bool
	problems   []Problem
	watchMode  string
	invHash    string
	watched    map[string]bool
	libIDs     map[string]string // watched library file → build-id hex ("" if none)
	lastSweep  time.Time
	sweepAt    time.Time // a sweep is pending at this time
	lat        latencies
	started    time.Time
	apiInv     *api.Inventory // the inventory as the control plane takes it
	outcomeC   chan struct{}  // something was applied, failed or reverted

	sent      atomic.Uint64
	applied   atomic.Uint64
	notifying atomic.Bool
}

// procView is the agent's live picture of one process.
type procView struct {
	pid      int
	start    uint64
	comm     string
	status   string // patched, pending, busy, quarantined, failed, not affected
	detail   string
	execAt   time.Time            // when its exec was seen; zero if it predates the agent
	patches  map[string]time.Time // "id:level" → applied at
	affected bool
	need     []string      // SHA-256 of the assignments it needs, as of its last look
	latency  time.Duration // exec → patched, once
	checked  time.Time
}

// Process states shown by 'hotfleet agent status'.
const (
	StatePatched     = "patched"
	StatePending     = "pending"
	StateBusy        = "busy"
	StateQuarantined = "quarantined"
	StateFailed      = "failed"
	StateNotAffected = "not affected"
)

// New prepares an agent: it loads the state and opens the report queue.
func New(cfg Config) (*Agent, error) {
	cfg.defaults()
	if cfg.StateDir == "" {
		return nil, errors.New("agent: no state directory given (--state-dir)")
	}
	if cfg.Source == nil {
		return nil, errors.New("agent: no source of assignments (--patch-dir or a control plane)")
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create the state directory: %w", err)
	}
	st, err := loadState(cfg.StateDir, readBootID())
	if err != nil {
		return nil, err
	}
	ob, err := outbox.Open(filepath.Join(cfg.StateDir, "outbox"), outbox.Options{Log: cfg.Log})
	if err != nil {
		return nil, fmt.Errorf("open the report queue: %w", err)
	}
	dev, err := inventory.ReadDevice()
	if err != nil {
		cfg.Log.Warn("read the device's identity", "err", err)
	}
	a := &Agent{
		cfg: cfg, log: cfg.Log, out: ob, device: dev, st: st,
		inv:       inventory.NewScanner(inventory.Options{Packages: cfg.Packages, Log: cfg.Log}),
		budget:    newBudget(cfg.CPUBudget),
		plan:      &plan{byModule: map[string]*Assignment{}, ids: map[string]bool{}},
		withdrawn: map[string][]string{},
		views:     map[int]*procView{},
		watched:   map[string]bool{},
		started:   time.Now(),
		saveC:     make(chan struct{}, 1),
		outcomeC:  make(chan struct{}, 1),
	}
	a.sched = newScheduler()
	return a, nil
}

// Run enforces until ctx ends, then saves the state.
func (a *Agent) Run(ctx context.Context) error {
	defer a.out.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	a.checkReadiness(ctx)
	if err := a.loadAssignments(ctx, true); err != nil {
		return err
	}

	w, err := procwatch.Open(ctx, procwatch.Options{Mode: a.cfg.WatchMode, Log: a.log, IgnoreSelf: true})
	if err != nil {
		a.log.Warn("no exec/exit events; new processes are found by rescans only", "err", err)
	} else {
		a.mu.Lock()
		a.watchMode = w.Mode()
		a.mu.Unlock()
		defer w.Close()
	}
	if fo, err := procwatch.NewFileOpens(); err != nil {
		a.log.Warn("no library-open events; dlopen()ed libraries are found by rescans only", "err", err)
	} else {
		a.opens = fo
		defer fo.Close()
	}

	var wg sync.WaitGroup
	start := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	for range a.cfg.Workers {
		start(a.worker)
	}
	start(a.sched.run)
	start(a.sendLoop)
	start(a.saveLoop)
	if a.cfg.Socket != "" {
		srv, err := a.serveStatus(a.cfg.Socket)
		if err != nil {
			cancel()
			wg.Wait()
			return err
		}
		defer srv.Close()
	}
	if w != nil {
		start(func(ctx context.Context) { a.watchEvents(ctx, w) })
	}
	if a.opens != nil {
		start(a.watchOpens)
	}
	a.sweep(ctx, "start")
	// The control plane's loops start after the first sweep, so the first
	// check-in carries the inventory and the state of every process.
	var sourceChanged <-chan struct{}
	if cp, ok := a.cfg.Source.(*ControlPlane); ok {
		sourceChanged = cp.changed()
		start(func(ctx context.Context) { cp.run(ctx, a) })
	}
	a.log.Info("agent running", "state_dir", a.cfg.StateDir, "workers", a.cfg.Workers, "events", a.watchMode)

	tickSource := time.NewTicker(sourcePoll)
	defer tickSource.Stop()
	tickRescan := time.NewTicker(a.cfg.Rescan)
	defer tickRescan.Stop()
	tickReady := time.NewTicker(a.cfg.Readiness)
	defer tickReady.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tickSource.C:
			if err := a.loadAssignments(ctx, false); err != nil {
				a.log.Warn("read assignments", "err", err)
			}
		case <-sourceChanged:
			// A new answer (a pause, a rollback) takes effect now, not at
			// the next poll.
			if err := a.loadAssignments(ctx, false); err != nil {
				a.log.Warn("read assignments", "err", err)
			}
		case <-tickRescan.C:
			a.sweep(ctx, "periodic")
		case <-tickReady.C:
			a.checkReadiness(ctx)
		case <-a.sched.sweepC:
			a.sweep(ctx, "library opened")
		}
	}
	cancel()
	wg.Wait()
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.st.save(a.cfg.StateDir); err != nil {
		return fmt.Errorf("save agent state: %w", err)
	}
	return nil
}

func (a *Agent) failpoint(name string) {
	if a.cfg.Failpoint != nil {
		a.cfg.Failpoint(name)
	}
}

// markDirty notes that the state changed; called with a.mu held.
func (a *Agent) markDirty() {
	a.dirty = true
	select {
	case a.saveC <- struct{}{}:
	default:
	}
}

// saveLoop writes the state when it changed, at most every saveDebounce. It
// sleeps while nothing changes: an idle agent does not wake up for it.
func (a *Agent) saveLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.saveC:
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(saveDebounce):
		}
		a.mu.Lock()
		if a.dirty {
			if err := a.st.save(a.cfg.StateDir); err != nil {
				a.log.Error("save agent state", "err", err)
			} else {
				a.dirty = false
			}
		}
		a.mu.Unlock()
	}
}

// loadAssignments reads the source and, when the set changed, replans:
// patches no longer assigned are withdrawn (reverted), and every process is
// looked at again.
func (a *Agent) loadAssignments(ctx context.Context, first bool) error {
	as, probs, err := a.cfg.Source.Assignments(ctx)
	if err != nil {
		return err
	}
	p, planProbs := newPlan(as)
	probs = append(probs, planProbs...)

	a.mu.Lock()
	changed := first || !samePlan(a.plan, p)
	newProbs := !sameProblems(a.problems, probs)
	a.problems = probs
	if !changed {
		a.mu.Unlock()
		if newProbs {
			a.reportProblems(probs)
		}
		return nil
	}
	now := time.Now().UTC()
	for id, was := range a.st.Assigned {
		if !p.ids[id] {
			a.st.Withdrawn[id] = was
			delete(a.st.Assigned, id)
			a.log.Info("patch withdrawn: reverting it everywhere", "patch", id)
		}
	}
	for _, as := range p.all {
		id := as.Bundle.ID
		delete(a.st.Withdrawn, id)
		var mods []string
		for _, m := range as.Bundle.Modules {
			mods = append(mods, hex.EncodeToString(m.BuildID))
		}
		if prev, ok := a.st.Assigned[id]; !ok || prev.Level != as.Bundle.Level || prev.SHA256 != as.SHA256 {
			a.st.Assigned[id] = assignedID{Level: as.Bundle.Level, BuildIDs: mods, Since: now, SHA256: as.SHA256}
		}
	}
	trimWithdrawn(a.st.Withdrawn)
	a.withdrawn = map[string][]string{}
	for id, w := range a.st.Withdrawn {
		for _, m := range w.BuildIDs {
			a.withdrawn[m] = append(a.withdrawn[m], id)
		}
	}
	a.plan = p
	a.planGen++
	a.markDirty()
	a.mu.Unlock()
	if newProbs {
		a.reportProblems(probs)
	}
	if !first {
		a.log.Info("assignments changed", "patches", len(p.all))
		a.sweep(ctx, "assignments changed")
	}
	return nil
}

func (a *Agent) reportProblems(probs []Problem) {
	for _, pr := range probs {
		a.log.Warn("assigned bundle refused", "origin", pr.Origin, "err", pr.Error)
		a.report(Report{Kind: KindRejected, Error: pr.Origin + ": " + pr.Error})
	}
}

func samePlan(a, b *plan) bool {
	if len(a.all) != len(b.all) {
		return false
	}
	for i := range a.all {
		if a.all[i].SHA256 != b.all[i].SHA256 {
			return false
		}
	}
	return true
}

func sameProblems(a, b []Problem) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// trimWithdrawn keeps the newest maxWithdrawn withdrawn patches.
func trimWithdrawn(w map[string]assignedID) {
	if len(w) <= maxWithdrawn {
		return
	}
	ids := make([]string, 0, len(w))
	for id := range w {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return w[ids[i]].Since.Before(w[ids[j]].Since) })
	for _, id := range ids[:len(ids)-maxWithdrawn] {
		delete(w, id)
	}
}

// checkReadiness re-checks the device and reports a change.
func (a *Agent) checkReadiness(ctx context.Context) {
	r := readiness.Run(ctx, readiness.Options{StateDir: a.cfg.StateDir, Probe: true})
	a.mu.Lock()
	prev := a.ready
	a.ready = r
	a.mu.Unlock()
	if prev.At.IsZero() || !prev.Equal(r) {
		for _, c := range r.Failing() {
			a.log.Warn("not hotpatch-ready", "check", c.Name, "reason", c.Reason, "action", c.Action)
		}
		a.report(Report{Kind: KindReadiness, Detail: mustJSON(r)})
	}
}
