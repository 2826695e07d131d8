package server

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"hotfleet/internal/api"
	"hotfleet/internal/store"
)

// Limits on what a device sends, each with its reason.
const (
	// maxEnrollBody bounds an enrollment: a key, a hostname and a few labels.
	maxEnrollBody = 64 << 10
	// maxHostname is DNS's limit on a name.
	maxHostname = 253
	// maxLabels, maxLabelKey and maxLabelValue keep labels what they are
	// for, short tags that ring rules match, not a place for documents.
	maxLabels     = 32
	maxLabelKey   = 63
	maxLabelValue = 255
	// maxAgentVersion bounds a version string shown in device listings.
	maxAgentVersion = 128
	// maxProblems bounds readiness and refusal lists: an agent has a
	// handful of checks and one problem per assigned bundle at most.
	maxProblems = 1024
	// maxCheckInBundles bounds bundle states: one per assigned bundle.
	maxCheckInBundles = 4096
	// maxModules bounds an inventory: a busy host maps a few thousand
	// distinct modules.
	maxModules = 65536
	// maxBuildID bounds a build-id in hex (GNU build-ids are 20 bytes;
	// bundle.MaxBuildIDLen allows 64).
	maxBuildID = 128
	// maxReportItems bounds one report post; the agent sends 200 at a time.
	maxReportItems = 1000
	// checkInJitter spreads a fleet's check-ins: ±25 % of the interval.
	checkInJitter = 0.25
)

func (s *Server) deviceRoutes() {
	s.mux.HandleFunc("POST "+api.PathEnroll, s.handle(s.enroll))
	s.mux.HandleFunc("POST "+api.PathCheckIn, s.handle(s.checkIn))
	s.mux.HandleFunc("POST "+api.PathReports, s.handle(s.reports))
	s.mux.HandleFunc("GET "+api.PathWatch, s.handle(s.watch))
	s.mux.HandleFunc("GET "+api.PathBundles+"{sha}", s.handle(s.bundle))
}

// device authenticates a signed device request: it reads the body (at most
// limit bytes), checks the signature against the claimed device's key with
// the real clock (the policy clock may be shifted by days in tests and
// time-scaled rollouts; the signature's freshness is about wall time), and
// refuses devices that were retired or revoked.
func (s *Server) device(r *http.Request, limit int64) (store.Device, []byte, error) {
	body, err := readBody(r, limit)
	if err != nil {
		return store.Device{}, nil, err
	}
	id, err := api.SignedDevice(r)
	if err != nil {
		return store.Device{}, nil, statusError(http.StatusUnauthorized, "%v", err)
	}
	d, err := s.st.Device(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Device{}, nil, statusError(http.StatusUnauthorized, "device %d is not enrolled; enroll the agent with a token", id)
	}
	if err != nil {
		return store.Device{}, nil, err
	}
	if err := api.Verify(r, ed25519.PublicKey(d.PublicKey), body, time.Now()); err != nil {
		return store.Device{}, nil, statusError(http.StatusUnauthorized, "device %d: %v", id, err)
	}
	switch d.State {
	case store.DeviceRevoked:
		return store.Device{}, nil, statusError(http.StatusForbidden, "device %d is revoked; re-enroll it with a new token", id)
	case store.DeviceRetired:
		return store.Device{}, nil, statusError(http.StatusForbidden, "device %d is retired; re-enroll it with a new token to bring it back", id)
	}
	return d, body, nil
}

func (s *Server) enroll(w http.ResponseWriter, r *http.Request) error {
	body, err := readBody(r, maxEnrollBody)
	if err != nil {
		return err
	}
	var req api.EnrollRequest
	if err := decodeJSON(body, &req); err != nil {
		return err
	}
	if err := checkEnroll(req); err != nil {
		return err
	}
	d, err := s.st.Enroll(r.Context(), req.Token, store.NewDevice{PublicKey: req.PublicKey, Hostname: req.Hostname, Labels: req.Labels})
	switch {
	case errors.Is(err, store.ErrTokenUnknown):
		return statusError(http.StatusUnauthorized, "enrollment token unknown: check it was copied whole, or create one with 'hotfleet token create'")
	case errors.Is(err, store.ErrTokenExpired), errors.Is(err, store.ErrTokenUsedUp):
		msg := err.Error()
		if i := strings.Index(msg, "enrollment token"); i >= 0 {
			msg = msg[i:] // drop the store's "enroll device ...:" prefix, keep the why
		}
		return statusError(http.StatusUnauthorized, "%s", msg)
	case errors.Is(err, store.ErrConflict):
		return statusError(http.StatusConflict, "this public key is already enrolled; the agent must generate a new key to enroll again")
	case err != nil:
		return err
	}
	rs, err := s.rings(r.Context())
	if err != nil {
		return err
	}
	o, err := s.overrides(r.Context())
	if err != nil {
		return err
	}
	p := placement(d, rs, o)
	actor := fmt.Sprintf("device/%d", d.ID)
	if err := s.st.AppendAudit(r.Context(), store.AuditEntry{Actor: actor, Action: "device.enroll", Target: actor, RemoteAddr: r.RemoteAddr,
		Details: map[string]any{"hostname": d.Hostname, "token": d.TokenID, "ring": p.Ring, "placed_by": p.By}}); err != nil {
		return err
	}
	s.log.Info("device enrolled", "device", d.ID, "hostname", d.Hostname, "ring", p.Ring, "token", d.TokenID)
	return writeJSON(w, http.StatusOK, api.EnrollResponse{DeviceID: d.ID, Ring: p.Ring})
}

func checkEnroll(req api.EnrollRequest) error {
	if req.Token == "" {
		return badRequest("token", "token is empty; pass the enrollment token an admin created")
	}
	if len(req.PublicKey) != ed25519.PublicKeySize {
		return badRequest("public_key", "public_key is %d bytes; want a %d-byte Ed25519 public key in base64", len(req.PublicKey), ed25519.PublicKeySize)
	}
	if len(req.Hostname) > maxHostname {
		return badRequest("hostname", "hostname is %d characters; at most %d", len(req.Hostname), maxHostname)
	}
	if len(req.Labels) > maxLabels {
		return badRequest("labels", "%d labels; at most %d", len(req.Labels), maxLabels)
	}
	for k, v := range req.Labels {
		if k == "" || len(k) > maxLabelKey || strings.ContainsAny(k, "=\x00") {
			return badRequest("labels", "label key %q: want 1 to %d characters without '='", k, maxLabelKey)
		}
		if len(v) > maxLabelValue {
			return badRequest("labels."+k, "label %q value is %d characters; at most %d", k, len(v), maxLabelValue)
		}
	}
	return nil
}

func (s *Server) checkIn(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	d, body, err := s.device(r, api.MaxDeviceBody)
	if err != nil {
		return err
	}
	var ci api.CheckIn
	if err := decodeJSON(body, &ci); err != nil {
		return err
	}
	if err := checkCheckIn(ci); err != nil {
		return err
	}
	rec := store.CheckInRecord{Ready: ci.Ready, AgentVersion: ci.AgentVersion}
	if rec.Readiness, err = json.Marshal(nonNil(ci.Readiness)); err != nil {
		return err
	}
	if rec.State, err = json.Marshal(struct {
		Bundles  []api.BundleState `json:"bundles"`
		Problems []api.Problem     `json:"problems"`
	}{nonNil(ci.Bundles), nonNil(ci.Problems)}); err != nil {
		return err
	}
	if ci.Inventory != nil {
		rec.InventoryHash = ci.InventoryHash
		rec.Modules = make([]store.ModuleRow, 0, len(ci.Inventory.Modules))
		for _, m := range ci.Inventory.Modules {
			rec.Modules = append(rec.Modules, store.ModuleRow{BuildID: strings.ToLower(m.BuildID), Name: m.Name, Package: m.Package, Processes: m.Processes})
		}
	}
	stored, err := s.st.RecordCheckIn(ctx, d.ID, rec)
	if err != nil {
		return err
	}
	d.InventoryHash = stored
	resp := api.CheckInResponse{DeviceID: d.ID, Assignments: []api.Assignment{},
		NeedInventory: ci.Inventory == nil && ci.InventoryHash != stored}
	a, err := s.assign(ctx, d, ci.Bundles)
	if err != nil {
		return err
	}
	resp.Ring, resp.Held = a.ring, a.held
	if a.assignments != nil {
		resp.Assignments = a.assignments
	}
	if resp.Generation, err = s.st.Generation(ctx); err != nil {
		return err
	}
	resp.NextCheckInS = jitter(s.cfg.CheckIn).Seconds()
	return writeJSON(w, http.StatusOK, resp)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// jitter returns d moved by up to ±checkInJitter at random.
func jitter(d time.Duration) time.Duration {
	f := 1 + checkInJitter*(2*rand.Float64()-1)
	return time.Duration(float64(d) * f)
}

func checkCheckIn(ci api.CheckIn) error {
	if len(ci.AgentVersion) > maxAgentVersion {
		return badRequest("agent_version", "agent_version is %d characters; at most %d", len(ci.AgentVersion), maxAgentVersion)
	}
	if len(ci.Readiness) > maxProblems {
		return badRequest("readiness", "%d readiness problems; at most %d", len(ci.Readiness), maxProblems)
	}
	if len(ci.Problems) > maxProblems {
		return badRequest("problems", "%d problems; at most %d", len(ci.Problems), maxProblems)
	}
	if len(ci.Bundles) > maxCheckInBundles {
		return badRequest("bundles", "%d bundle states; at most %d", len(ci.Bundles), maxCheckInBundles)
	}
	for i, b := range ci.Bundles {
		if !isSHA256(b.SHA256) {
			return badRequest(fmt.Sprintf("bundles[%d].sha256", i), "bundles[%d].sha256 %q: want 64 lowercase hex digits", i, b.SHA256)
		}
	}
	if ci.Inventory != nil {
		if len(ci.Inventory.Modules) > maxModules {
			return badRequest("inventory.modules", "%d modules; at most %d", len(ci.Inventory.Modules), maxModules)
		}
		for i, m := range ci.Inventory.Modules {
			if m.BuildID == "" || len(m.BuildID) > maxBuildID || !isHex(m.BuildID) {
				return badRequest(fmt.Sprintf("inventory.modules[%d].build_id", i), "inventory.modules[%d].build_id %q: want 1 to %d hex digits", i, m.BuildID, maxBuildID)
			}
		}
	}
	return nil
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// isSHA256 reports a bundle address: 64 lowercase hex digits.
func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func (s *Server) reports(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	d, body, err := s.device(r, api.MaxDeviceBody)
	if err != nil {
		return err
	}
	var req api.Reports
	if err := decodeJSON(body, &req); err != nil {
		return err
	}
	if len(req.Reports) > maxReportItems {
		return &httpError{status: http.StatusRequestEntityTooLarge, field: "reports",
			msg: fmt.Sprintf("%d reports in one post; send at most %d at a time", len(req.Reports), maxReportItems)}
	}
	for i, it := range req.Reports {
		if it.Seq <= 0 {
			return badRequest(fmt.Sprintf("reports[%d].seq", i), "reports[%d].seq is %d; want a positive sequence number", i, it.Seq)
		}
		if t := strings.TrimSpace(string(it.Report)); !strings.HasPrefix(t, "{") {
			return badRequest(fmt.Sprintf("reports[%d].report", i), "reports[%d].report: want a JSON object", i)
		}
	}
	var resp api.ReportsResponse
	rc := &reportContext{s: s, d: d}
	for _, it := range req.Reports {
		dup, err := s.st.InsertReport(ctx, d.ID, it.Seq, it.Report)
		if err != nil {
			return err
		}
		if dup {
			resp.Duplicates++
			continue
		}
		resp.Accepted++
		if err := rc.act(ctx, it.Seq, it.Report); err != nil {
			return err
		}
	}
	if err := rc.evaluate(ctx); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, resp)
}

func (s *Server) watch(w http.ResponseWriter, r *http.Request) error {
	if _, _, err := s.device(r, 0); err != nil {
		return err
	}
	q := r.URL.Query()
	known, err := strconv.ParseInt(q.Get("generation"), 10, 64)
	if err != nil || known < 0 {
		return badRequest("generation", "generation %q: want the generation of the last check-in answer", q.Get("generation"))
	}
	timeout := api.MaxWatch
	if t := q.Get("timeout"); t != "" {
		secs, err := strconv.ParseFloat(t, 64)
		if err != nil || secs <= 0 || secs > api.MaxWatch.Seconds() {
			return badRequest("timeout", "timeout %q: want seconds above 0 and at most %g", t, api.MaxWatch.Seconds())
		}
		timeout = time.Duration(secs * float64(time.Second))
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	// The generation only grows: when this replica's poller is behind the
	// device (it read the counter at check-in), wait for it to catch up
	// rather than wake the device for a generation it already has.
	n, cur := int64(0), known
	for {
		n = s.gen.wait(ctx, cur)
		if ctx.Err() != nil || n > known {
			break
		}
		cur = n
	}
	if n == 0 { // this replica has not polled the counter yet
		if n, err = s.st.Generation(context.WithoutCancel(r.Context())); err != nil {
			return err
		}
	}
	return writeJSON(w, http.StatusOK, api.WatchResponse{Generation: n, Changed: n > known})
}

// bundleCacheControl: a bundle's address is its hash, so its bytes never
// change and caches may keep them for good.
const bundleCacheControl = "public, max-age=31536000, immutable"

func (s *Server) bundle(w http.ResponseWriter, r *http.Request) error {
	sha := r.PathValue("sha")
	if !isSHA256(sha) {
		return badRequest("sha256", "bundle address %q: want the bundle's SHA-256 as 64 lowercase hex digits", sha)
	}
	etag := `"` + sha + `"`
	h := w.Header()
	// The ETag is the content's hash: a client holding it holds the bytes,
	// so a match needs no database read.
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatch(inm, etag) {
		h.Set("ETag", etag)
		h.Set("Cache-Control", bundleCacheControl)
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	data, err := s.st.Bundle(r.Context(), sha)
	if errors.Is(err, store.ErrNotFound) {
		return statusError(http.StatusNotFound, "bundle %s is not on this server; it may belong to a deleted release", sha)
	}
	if err != nil {
		return err
	}
	h.Set("ETag", etag)
	h.Set("Cache-Control", bundleCacheControl)
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(data)
	}
	return nil
}

func etagMatch(header, etag string) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == "*" || t == etag {
			return true
		}
	}
	return false
}
