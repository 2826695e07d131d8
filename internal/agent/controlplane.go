package agent

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"hotfleet/internal/api"
	"hotfleet/internal/atomicfile"
	"hotfleet/internal/bundle"
	"hotfleet/internal/outbox"
)

// Control plane timing, each with its reason.
const (
	// backoffMin and backoffMax bound the wait after a failed request to a
	// server that is down; the wait is drawn at random below the doubling
	// bound (full jitter), so a fleet does not come back in one wave.
	backoffMin = time.Second
	backoffMax = 5 * time.Minute
	// revokedRetry: a revoked device asks again this rarely, in case an
	// admin undoes the revocation; it keeps enforcing meanwhile.
	revokedRetry = 10 * time.Minute
	// outcomeDebounce: a burst of outcomes (a mass apply) becomes one
	// check-in, still soon enough that the server sees results quickly.
	outcomeDebounce = time.Second
	// watchTimeout is what the agent asks a watch to be held for; below
	// api.MaxWatch so the server's bound never cuts it.
	watchTimeout = 50 * time.Second
	// watchSlack is added to the watch's own timeout for the request.
	watchSlack = 15 * time.Second
	// watchMinGap: a watch that returns at once without a change (a
	// misbehaving proxy) is not repeated faster than this.
	watchMinGap = time.Second
	// requestTimeout bounds a check-in, a report post and the enrollment.
	requestTimeout = 30 * time.Second
	// downloadTimeout bounds one bundle download (a bundle is at most
	// bundle.MaxBundleSize, usually kilobytes).
	downloadTimeout = 2 * time.Minute
	// minCheckIn and maxCheckIn bound the server's NextCheckInS, so a bad
	// answer neither hammers the server nor silences the device.
	minCheckIn = time.Second
	maxCheckIn = 6 * time.Hour
	// defaultCheckIn is used when the server names no interval.
	defaultCheckIn = time.Minute
)

// ControlPlaneConfig says how to reach the control plane.
type ControlPlaneConfig struct {
	Server       string // base URL, e.g. https://hotfleet.example.com
	StateDir     string // holds device.key, identity.json, assignments.json, bundles/
	EnrollToken  string // needed only until the device is enrolled
	Hostname     string // sent at enrollment; default: the kernel's hostname
	Labels       map[string]string
	AgentVersion string
	Client       *http.Client // nil: a default client
	Log          *slog.Logger
}

// ControlPlane is the managed agent's Source and Sender: it enrolls the
// device, checks in, watches for changes, downloads bundles and posts
// reports. Its last answer is kept on disk, so an agent restarted without
// network keeps enforcing what it was assigned.
type ControlPlane struct {
	cfg    ControlPlaneConfig
	server string
	key    ed25519.PrivateKey
	client *http.Client
	log    *slog.Logger

	changedC chan struct{} // a new answer: read the assignments now
	nowC     chan struct{} // the watch saw a change: check in now
	doneC    chan struct{} // a check-in attempt ended

	mu       sync.Mutex
	id       identity
	st       cpState
	bundles  map[string]*bundle.Bundle // sha256 → decoded, for assigned bundles
	fetchErr map[string]string         // sha256 → why it is not on disk
	// While an answer's new bundles download: which ones, and the
	// assignments of the previous answer they replace (see take).
	downloading map[string]bool
	interim     []api.Assignment
	last        checkInResult
	revoked     bool
	bo          backoff // check-ins
	dlbo        backoff // bundle downloads
}

// cpState is assignments.json: the last answer and what the server has.
type cpState struct {
	DeviceID      int64               `json:"device_id"`
	Answer        api.CheckInResponse `json:"answer"`
	At            time.Time           `json:"at"`
	InventoryHash string              `json:"inventory_hash,omitempty"` // the last inventory the server got
}

type checkInResult struct {
	at   time.Time
	err  string
	next time.Time
}

// OpenControlPlane loads the device identity, enrolling the device with its
// bootstrap token first if it has none. A refused token is returned as
// ErrEnrollRefused with the server's reason.
func OpenControlPlane(ctx context.Context, cfg ControlPlaneConfig) (*ControlPlane, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("control plane: no state directory given (--state-dir)")
	}
	server, err := normalizeServer(cfg.Server)
	if err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, bundlesDir), 0o700); err != nil {
		return nil, fmt.Errorf("create the state directory: %w", err)
	}
	cp := &ControlPlane{
		cfg: cfg, server: server, client: cfg.Client, log: cfg.Log,
		changedC: make(chan struct{}, 1), nowC: make(chan struct{}, 1), doneC: make(chan struct{}, 1),
		bundles: map[string]*bundle.Bundle{}, fetchErr: map[string]string{},
	}
	if cp.client == nil {
		cp.client = &http.Client{Transport: http.DefaultTransport}
	}
	if cp.key, err = loadOrCreateKey(cfg.StateDir); err != nil {
		return nil, err
	}
	err = atomicfile.ReadJSON(filepath.Join(cfg.StateDir, identityFile), &cp.id)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := cp.enroll(ctx); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("read the device identity: %w", err)
	case cp.id.Server != server:
		return nil, fmt.Errorf("this device is enrolled with %s, not %s: pass --server %s, or move %s and %s aside to enroll with the new server",
			cp.id.Server, server, cp.id.Server, filepath.Join(cfg.StateDir, identityFile), filepath.Join(cfg.StateDir, deviceKeyFile))
	case cp.id.DeviceID <= 0:
		return nil, fmt.Errorf("%s holds no device id: move it aside to enroll again", filepath.Join(cfg.StateDir, identityFile))
	}
	var st cpState
	err = atomicfile.ReadJSON(filepath.Join(cfg.StateDir, assignmentsFile), &st)
	switch {
	case err == nil && st.DeviceID == cp.id.DeviceID:
		cp.st = st
	case err == nil:
		cp.log.Warn("ignoring assignments saved for another device id", "file", assignmentsFile, "saved_for", st.DeviceID, "device", cp.id.DeviceID)
	case !errors.Is(err, fs.ErrNotExist):
		// A damaged file loses the offline copy only; the next check-in
		// brings the assignments back.
		cp.log.Error("read the saved assignments; waiting for the server", "err", err)
	}
	cp.st.DeviceID = cp.id.DeviceID
	return cp, nil
}

// DeviceID is the id the control plane gave this device.
func (cp *ControlPlane) DeviceID() int64 { return cp.id.DeviceID }

// Assignments returns the bundles of the last answer that are on disk. An
// assigned bundle that could not be downloaded is a problem until it is.
func (cp *ControlPlane) Assignments(ctx context.Context) ([]Assignment, []Problem, error) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	var order []string
	origins := map[string][]string{}
	all := make([]api.Assignment, 0, len(cp.st.Answer.Assignments)+len(cp.interim))
	all = append(append(all, cp.st.Answer.Assignments...), cp.interim...)
	for _, as := range all {
		if _, ok := origins[as.SHA256]; !ok {
			order = append(order, as.SHA256)
		}
		origins[as.SHA256] = append(origins[as.SHA256], fmt.Sprintf("release %s (#%d)", as.ReleaseName, as.Release))
	}
	var out []Assignment
	var probs []Problem
	for _, sha := range order {
		origin := strings.Join(origins[sha], ", ")
		b := cp.bundles[sha]
		if b == nil {
			var err error
			if b, err = cp.loadBundle(sha, -1); err != nil {
				if cp.downloading[sha] {
					continue // not a problem yet: it comes in a moment
				}
				why := cp.fetchErr[sha]
				if why == "" {
					why = err.Error()
				}
				probs = append(probs, Problem{Origin: origin, Error: fmt.Sprintf("bundle %s is not on the device: %s; retried at the next check-in", sha, why)})
				continue
			}
			cp.bundles[sha] = b
		}
		out = append(out, Assignment{Bundle: b, SHA256: sha, Origin: origin})
	}
	return out, probs, nil
}

func (cp *ControlPlane) bundlePath(sha string) string {
	return filepath.Join(cp.cfg.StateDir, bundlesDir, sha+".hfp")
}

// validSHA accepts a lowercase hex SHA-256 only: it becomes a file name.
func validSHA(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// loadBundle reads a cached bundle and checks it is the bytes named by sha
// (and size, when size >= 0). Called with cp.mu held.
func (cp *ControlPlane) loadBundle(sha string, size int64) (*bundle.Bundle, error) {
	if !validSHA(sha) {
		return nil, fmt.Errorf("the server named bundle %q: not a SHA-256", sha)
	}
	f, err := os.Open(cp.bundlePath(sha))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, bundle.MaxBundleSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", cp.bundlePath(sha), err)
	}
	return checkBundle(data, sha, size)
}

// checkBundle verifies downloaded or cached bytes against the assignment.
func checkBundle(data []byte, sha string, size int64) (*bundle.Bundle, error) {
	if size >= 0 && int64(len(data)) != size {
		return nil, fmt.Errorf("bundle %s: got %d bytes, the assignment says %d", sha, len(data), size)
	}
	sum := sha256.Sum256(data)
	if got := hex.EncodeToString(sum[:]); got != sha {
		return nil, fmt.Errorf("bundle %s: the bytes hash to %s: refused", sha, got)
	}
	b, err := bundle.Decode(data)
	if err != nil {
		return nil, fmt.Errorf("bundle %s: %w", sha, err)
	}
	return b, nil
}

// fetch makes sure an assigned bundle is on disk and decoded. Called
// without cp.mu: a download takes time.
func (cp *ControlPlane) fetch(ctx context.Context, as api.Assignment) error {
	if !validSHA(as.SHA256) {
		return fmt.Errorf("release %s: the server named bundle %q: not a lowercase hex SHA-256", as.ReleaseName, as.SHA256)
	}
	if as.Size <= 0 || as.Size > bundle.MaxBundleSize {
		return fmt.Errorf("bundle %s of release %s: size %d is not a bundle's (1 byte to %d MiB)", as.SHA256, as.ReleaseName, as.Size, bundle.MaxBundleSize>>20)
	}
	cp.mu.Lock()
	if cp.bundles[as.SHA256] != nil {
		cp.mu.Unlock()
		return nil
	}
	b, err := cp.loadBundle(as.SHA256, as.Size)
	if err == nil {
		cp.bundles[as.SHA256] = b
		cp.mu.Unlock()
		return nil
	}
	cp.mu.Unlock()
	if !errors.Is(err, fs.ErrNotExist) {
		cp.log.Warn("cached bundle is damaged; downloading it again", "sha256", as.SHA256, "err", err)
		os.Remove(cp.bundlePath(as.SHA256))
	}
	ref := as.URL
	if ref == "" {
		ref = api.PathBundles + as.SHA256
	}
	base, _ := url.Parse(cp.server + "/")
	u, err := base.Parse(ref)
	if err != nil {
		return fmt.Errorf("bundle %s: the server gave URL %q: %w", as.SHA256, as.URL, err)
	}
	ctx, cancel := context.WithTimeout(ctx, downloadTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := cp.client.Do(req)
	if err != nil {
		return fmt.Errorf("download bundle %s: %w", as.SHA256, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("download bundle %s from %s: %s", as.SHA256, u, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, as.Size+1))
	if err != nil {
		return fmt.Errorf("download bundle %s: %w", as.SHA256, err)
	}
	b, err = checkBundle(data, as.SHA256, as.Size)
	if err != nil {
		return fmt.Errorf("downloaded %w; not kept", err)
	}
	if err := atomicfile.WriteFile(cp.bundlePath(as.SHA256), data, 0o600); err != nil {
		return fmt.Errorf("keep bundle %s: %w", as.SHA256, err)
	}
	cp.mu.Lock()
	cp.bundles[as.SHA256] = b
	cp.mu.Unlock()
	cp.log.Info("bundle downloaded", "sha256", as.SHA256, "id", b.ID, "level", b.Level, "release", as.ReleaseName)
	return nil
}

// deviceState is what the agent tells the control plane; *Agent provides it.
type deviceState interface {
	checkInState() deviceReport
	// outcomes signals that something was applied, failed or reverted.
	outcomes() <-chan struct{}
}

// deviceReport is the agent's part of a check-in.
type deviceReport struct {
	Ready         bool
	Readiness     []api.Problem
	InventoryHash string
	Inventory     *api.Inventory
	Bundles       []api.BundleState
	Problems      []api.Problem
}

// changed signals a new answer to the agent's loop.
func (cp *ControlPlane) changed() <-chan struct{} { return cp.changedC }

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// run checks in and watches until ctx ends.
func (cp *ControlPlane) run(ctx context.Context, dev deviceState) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); cp.watchLoop(ctx) }()
	defer wg.Wait()

	timer := time.NewTimer(0)
	defer timer.Stop()
	var debounce <-chan time.Time
	waiting := false // after a failure, only the timer may start the next try
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-cp.nowC:
			if waiting {
				continue
			}
		case <-dev.outcomes():
			if debounce == nil && !waiting {
				debounce = time.After(outcomeDebounce)
			}
			continue
		case <-debounce:
		}
		debounce = nil
		wait, ok := cp.checkIn(ctx, dev)
		waiting = !ok
		signal(cp.doneC)
		timer.Reset(wait)
	}
}

// checkIn sends one check-in and takes the answer; it returns when to check
// in next and whether it worked.
func (cp *ControlPlane) checkIn(ctx context.Context, dev deviceState) (time.Duration, bool) {
	r := dev.checkInState()
	cp.mu.Lock()
	ci := api.CheckIn{
		AgentVersion: cp.cfg.AgentVersion, Ready: r.Ready, Readiness: r.Readiness, InventoryHash: r.InventoryHash,
		Bundles: r.Bundles, Problems: r.Problems, Generation: cp.st.Answer.Generation,
	}
	if r.Inventory != nil && (r.InventoryHash != cp.st.InventoryHash || cp.st.Answer.NeedInventory) {
		ci.Inventory = r.Inventory
	}
	cp.mu.Unlock()
	body, err := json.Marshal(ci)
	if err != nil {
		cp.log.Error("encode the check-in", "err", err)
		return backoffMax, false
	}
	var ans api.CheckInResponse
	err = cp.call(ctx, http.MethodPost, api.PathCheckIn, body, true, &ans, requestTimeout)
	if ctx.Err() != nil {
		return 0, false
	}
	if err != nil {
		return cp.failed("check-in", err), false
	}
	cp.ok()
	if err := cp.take(ctx, ans, ci.Inventory != nil, r.InventoryHash); err != nil {
		cp.log.Error("keep the check-in answer", "err", err)
	}
	next := defaultCheckIn
	if ans.NextCheckInS > 0 {
		next = min(max(time.Duration(ans.NextCheckInS*float64(time.Second)), minCheckIn), maxCheckIn)
	}
	if ans.NeedInventory && ci.Inventory == nil && r.Inventory != nil {
		next = 0 // it asked for what we have: send it now
	}
	cp.mu.Lock()
	if len(cp.fetchErr) > 0 {
		// A bundle did not download: try again sooner than the interval,
		// backing off while it keeps failing.
		next = min(next, cp.dlbo.next(0))
	} else {
		cp.dlbo.reset()
	}
	cp.last = checkInResult{at: time.Now(), next: time.Now().Add(next)}
	cp.mu.Unlock()
	return next, true
}

// failed logs a failed request and returns how long to wait.
func (cp *ControlPlane) failed(what string, err error) time.Duration {
	var se *statusError
	cp.mu.Lock()
	defer cp.mu.Unlock()
	var wait time.Duration
	if errors.As(err, &se) && se.Status == http.StatusForbidden {
		if !cp.revoked {
			cp.log.Error("the control plane refuses this device; enforcing the last assignments", "device", cp.id.DeviceID, "err", se.Msg,
				"action", "re-enroll: move identity.json and device.key aside and restart with a new --enroll-token")
		}
		cp.revoked = true
		wait = revokedRetry
	} else {
		wait = cp.bo.next(retryAfterOf(err))
		cp.log.Warn(what+" failed; enforcing the last assignments", "retry_in", wait.Round(time.Millisecond), "err", err)
	}
	cp.last = checkInResult{at: time.Now(), err: err.Error(), next: time.Now().Add(wait)}
	return wait
}

func (cp *ControlPlane) ok() {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.bo.reset()
	if cp.revoked {
		cp.log.Info("the control plane accepts this device again", "device", cp.id.DeviceID)
	}
	cp.revoked = false
}

// take hands a new answer to enforcement at once, keeps it on disk, then
// downloads the bundles it does not have yet and hands those over as they
// come. So a pause or a rollback is never delayed by a download, while an
// assignment being replaced by a bundle still downloading (a higher level
// for the same module) stays until its successor is on hand: the process
// goes from one level to the next in one step, never through unpatched.
func (cp *ControlPlane) take(ctx context.Context, ans api.CheckInResponse, sentInv bool, invHash string) error {
	keep := map[string]bool{}
	for _, as := range ans.Assignments {
		keep[as.SHA256] = true
	}
	cp.mu.Lock()
	var missing []api.Assignment
	missingMods := map[string]bool{}
	for _, as := range ans.Assignments {
		if cp.bundles[as.SHA256] != nil || !validSHA(as.SHA256) {
			continue
		}
		if b, err := cp.loadBundle(as.SHA256, as.Size); err == nil {
			cp.bundles[as.SHA256] = b
			continue
		}
		missing = append(missing, as)
		missingMods[strings.ToLower(as.BuildID)] = true
	}
	cp.downloading = map[string]bool{}
	for _, as := range missing {
		cp.downloading[as.SHA256] = true
	}
	cp.interim = nil
	for _, as := range cp.st.Answer.Assignments {
		if !keep[as.SHA256] && missingMods[strings.ToLower(as.BuildID)] && cp.bundles[as.SHA256] != nil {
			cp.interim = append(cp.interim, as)
		}
	}
	cp.st.Answer = ans
	cp.st.At = time.Now().UTC()
	if sentInv {
		cp.st.InventoryHash = invHash
	}
	if ans.NeedInventory && !sentInv {
		cp.st.InventoryHash = ""
	}
	cp.pruneBundles(keep)
	st := cp.st
	ringChanged := ans.Ring != "" && ans.Ring != cp.id.Ring
	if ringChanged {
		cp.id.Ring = ans.Ring
	}
	id := cp.id
	cp.mu.Unlock()
	signal(cp.changedC)
	err := atomicfile.WriteJSON(filepath.Join(cp.cfg.StateDir, assignmentsFile), st, 0o600)
	if err != nil {
		err = fmt.Errorf("save the assignments (kept in memory; an agent restarted offline would enforce older ones): %w", err)
	}
	if ringChanged {
		if werr := atomicfile.WriteJSON(filepath.Join(cp.cfg.StateDir, identityFile), id, 0o600); werr != nil {
			cp.log.Warn("save the device's new ring", "err", werr)
		}
	}

	errs := map[string]string{}
	for _, as := range missing {
		if err := cp.fetch(ctx, as); err != nil {
			errs[as.SHA256] = err.Error()
			cp.log.Warn("assigned bundle not downloaded", "release", as.ReleaseName, "sha256", as.SHA256, "err", err)
		}
	}
	cp.mu.Lock()
	for _, as := range ans.Assignments {
		if !validSHA(as.SHA256) {
			errs[as.SHA256] = fmt.Sprintf("release %s: the server named bundle %q: not a lowercase hex SHA-256", as.ReleaseName, as.SHA256)
		}
	}
	cp.fetchErr = errs
	cp.downloading, cp.interim = nil, nil
	cp.pruneBundles(keep)
	cp.mu.Unlock()
	if len(missing) > 0 {
		signal(cp.changedC)
	}
	cp.removeStale(keep)
	return err
}

// pruneBundles forgets decoded bundles neither assigned nor kept in the
// interim. Called with cp.mu held.
func (cp *ControlPlane) pruneBundles(keep map[string]bool) {
	interim := map[string]bool{}
	for _, as := range cp.interim {
		interim[as.SHA256] = true
	}
	for sha := range cp.bundles {
		if !keep[sha] && !interim[sha] {
			delete(cp.bundles, sha)
		}
	}
}

// removeStale deletes cached bundles no longer assigned.
func (cp *ControlPlane) removeStale(keep map[string]bool) {
	dir := filepath.Join(cp.cfg.StateDir, bundlesDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		sha, ok := strings.CutSuffix(e.Name(), ".hfp")
		if ok && !keep[sha] {
			if err := os.Remove(filepath.Join(dir, e.Name())); err == nil {
				cp.log.Info("bundle no longer assigned; removed from the cache", "sha256", sha)
			}
		}
	}
}

// watchLoop long-polls for a new generation and asks for a check-in when
// one comes.
func (cp *ControlPlane) watchLoop(ctx context.Context) {
	var bo backoff
	for ctx.Err() == nil {
		cp.mu.Lock()
		gen := cp.st.Answer.Generation
		cp.mu.Unlock()
		t0 := time.Now()
		path := api.PathWatch + "?generation=" + strconv.FormatInt(gen, 10) + "&timeout=" + strconv.Itoa(int(watchTimeout/time.Second))
		var w api.WatchResponse
		err := cp.call(ctx, http.MethodGet, path, nil, true, &w, watchTimeout+watchSlack)
		if ctx.Err() != nil {
			return
		}
		var wait time.Duration
		var se *statusError
		switch {
		case err == nil:
			bo.reset()
			if w.Changed && w.Generation != gen {
				cp.log.Debug("control plane changed; checking in", "generation", w.Generation)
				// Wait for that check-in, so the next watch asks about
				// the new generation rather than returning at once; a
				// signal left by an earlier check-in does not count.
				select {
				case <-cp.doneC:
				default:
				}
				signal(cp.nowC)
				select {
				case <-ctx.Done():
					return
				case <-cp.doneC:
				case <-time.After(requestTimeout):
				}
			}
			wait = watchMinGap - time.Since(t0)
		case errors.As(err, &se) && se.Status == http.StatusForbidden:
			wait = revokedRetry
		default:
			wait = bo.next(retryAfterOf(err))
			cp.log.Debug("watch failed", "retry_in", wait, "err", err)
		}
		if wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
	}
}

// Send posts queued reports. The device is named by the signature; the
// device argument (the machine id) is not sent.
func (cp *ControlPlane) Send(ctx context.Context, _ string, items []outbox.Item) error {
	rs := api.Reports{Reports: make([]api.ReportItem, 0, len(items))}
	for _, it := range items {
		rs.Reports = append(rs.Reports, api.ReportItem{Seq: int64(it.Seq), Report: it.Body})
	}
	body, err := json.Marshal(rs)
	if err != nil {
		return err
	}
	var resp api.ReportsResponse
	err = cp.call(ctx, http.MethodPost, api.PathReports, body, true, &resp, requestTimeout)
	if err == nil {
		return nil
	}
	err = fmt.Errorf("send %d reports: %w", len(items), err)
	var se *statusError
	if errors.As(err, &se) && se.RetryAfter > 0 && (se.Status == http.StatusServiceUnavailable || se.Status == http.StatusTooManyRequests) {
		return &RetryAfterError{After: se.RetryAfter, Err: err}
	}
	return err
}

// ControlPlaneStatus is the control plane part of 'hotfleet agent status'.
type ControlPlaneStatus struct {
	Server      string       `json:"server"`
	DeviceID    int64        `json:"device_id"`
	Ring        string       `json:"ring"`
	LastCheckIn time.Time    `json:"last_checkin,omitzero"`
	LastError   string       `json:"last_error,omitempty"` // "" when the last check-in worked
	NextCheckIn time.Time    `json:"next_checkin,omitzero"`
	LastAnswer  time.Time    `json:"last_answer,omitzero"` // when the assignments enforced now came
	Generation  int64        `json:"generation"`
	Held        []api.Notice `json:"held,omitempty"`
	Assignments int          `json:"assignments"`
	Revoked     bool         `json:"revoked,omitempty"`
	Downloads   []string     `json:"download_errors,omitempty"`
}

func (cp *ControlPlane) status() *ControlPlaneStatus {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	s := &ControlPlaneStatus{
		Server: cp.server, DeviceID: cp.id.DeviceID, Ring: cp.id.Ring,
		LastCheckIn: cp.last.at, LastError: cp.last.err, NextCheckIn: cp.last.next, LastAnswer: cp.st.At,
		Generation: cp.st.Answer.Generation, Held: cp.st.Answer.Held, Assignments: len(cp.st.Answer.Assignments),
		Revoked: cp.revoked,
	}
	for sha, e := range cp.fetchErr {
		s.Downloads = append(s.Downloads, sha+": "+e)
	}
	sort.Strings(s.Downloads)
	return s
}

// backoff is an exponential backoff with full jitter.
type backoff struct{ n int }

func (b *backoff) next(retryAfter time.Duration) time.Duration {
	bound := backoffMax
	if b.n < 20 {
		bound = min(backoffMin<<b.n, backoffMax)
	}
	b.n++
	w := time.Duration(rand.Int64N(int64(bound)) + 1)
	return max(w, min(retryAfter, maxRetryAfter))
}

func (b *backoff) reset() { b.n = 0 }
