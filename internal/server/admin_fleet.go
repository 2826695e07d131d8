package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"hotfleet/internal/api"
	"hotfleet/internal/rollout"
	"hotfleet/internal/store"
)

// Limits on fleet requests, each with its reason.
const (
	// maxTokenTTL: an enrollment token is for one rollout of machines; a
	// token valid for longer is a standing secret, which should be an
	// admin's decision made again each quarter.
	maxTokenTTL = 90 * 24 * time.Hour
	// maxTokenUses: a token enrolls a batch of machines, not a fleet.
	maxTokenUses = 100000
	// maxTokenLabels, maxLabelLen: labels are matched by ring rules and
	// shown in tables.
	maxTokenLabels = 32
	maxLabelLen    = 128
	// maxAdminName: token names are shown in the audit log.
	maxAdminName = 64
	// maxAuditPage bounds one page of the audit log.
	maxAuditPage = 1000
	// defaultAuditPage is a page when the client asks for none.
	defaultAuditPage = 100
	// maxOverrides bounds pins plus label rules; each is checked per device.
	maxOverrides = 10000
)

func (s *Server) adminGetRings(w http.ResponseWriter, r *http.Request, _ store.AdminToken) error {
	rs, err := s.rings(r.Context())
	if err != nil {
		return err
	}
	b, err := rollout.EncodeRings(rs)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, err = w.Write(append(b, '\n'))
	return err
}

func (s *Server) adminPutRings(w http.ResponseWriter, r *http.Request, tok store.AdminToken) error {
	body, err := readBody(r, api.MaxAdminBody)
	if err != nil {
		return err
	}
	if err := checkDepth(body); err != nil {
		return err
	}
	rs, err := rollout.DecodeRings(body)
	if err != nil {
		var ce *rollout.ConfigError
		if errors.As(err, &ce) {
			field := "rings"
			if ce.Index >= 0 && ce.Field != "" {
				field = fmt.Sprintf("rings[%d].%s", ce.Index, ce.Field)
			}
			return badRequest(field, "%v", err)
		}
		return badRequest("", "%v", err)
	}
	srs := make([]store.Ring, len(rs))
	for i, ring := range rs {
		if ring.Share != math.Trunc(ring.Share) {
			return badRequest(fmt.Sprintf("rings[%d].share", i), "ring %q: share %g is not a whole percent; the server stores whole percents", ring.Name, ring.Share)
		}
		srs[i] = store.Ring{Name: ring.Name, Position: i, Percent: int(ring.Share), PinnedOnly: ring.PinnedOnly,
			Deferral: ring.Policy.Deferral, Deadline: ring.Policy.Deadline, Grace: ring.Policy.Grace}
	}
	o, err := s.overrides(r.Context())
	if err != nil {
		return err
	}
	if err := o.Validate(rs); err != nil {
		return statusError(http.StatusConflict, "%v; change the ring overrides (settings/overrides) first", err)
	}
	if err := s.st.ReplaceRings(r.Context(), srs, tok.Actor()); err != nil {
		return storeError(err)
	}
	return s.adminGetRings(w, r, tok)
}

func (s *Server) adminRingPause(w http.ResponseWriter, r *http.Request, tok store.AdminToken) error {
	var req api.ReasonRequest
	if err := decodeAdmin(r, &req, false); err != nil {
		return err
	}
	if err := checkReason(req.Reason, true); err != nil {
		return err
	}
	ring, err := s.ringName(r.Context(), r.PathValue("name"))
	if err != nil {
		return &httpError{status: http.StatusNotFound, field: "name", msg: err.Error()}
	}
	p, err := s.st.AddPause(r.Context(), store.Pause{Ring: ring, Actor: tok.Actor(), Reason: req.Reason})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, api.Pause{ID: p.ID, Ring: p.Ring, Actor: p.Actor, Reason: p.Reason, CreatedAt: p.CreatedAt})
}

func (s *Server) adminRingResume(w http.ResponseWriter, r *http.Request, tok store.AdminToken) error {
	var req struct{}
	if err := decodeAdmin(r, &req, true); err != nil {
		return err
	}
	n, err := s.st.ResumeRing(r.Context(), r.PathValue("name"), tok.Actor())
	if err != nil {
		return storeError(err)
	}
	return writeJSON(w, http.StatusOK, map[string]int{"resumed": n})
}

func (s *Server) thresholds(r *http.Request) (rollout.Thresholds, error) {
	t := rollout.DefaultThresholds()
	_, err := s.st.Setting(r.Context(), store.SettingThresholds, &t)
	return t, err
}

func (s *Server) adminGetThresholds(w http.ResponseWriter, r *http.Request, _ store.AdminToken) error {
	t, err := s.thresholds(r)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, api.Thresholds{MinFailures: t.MinFailures, MaxFailurePercent: t.MaxFailurePercent, Rollback: t.Rollback})
}

func (s *Server) adminPutThresholds(w http.ResponseWriter, r *http.Request, tok store.AdminToken) error {
	var req api.Thresholds
	if err := decodeAdmin(r, &req, false); err != nil {
		return err
	}
	t := rollout.Thresholds{MinFailures: req.MinFailures, MaxFailurePercent: req.MaxFailurePercent, Rollback: req.Rollback}
	if err := t.Validate(); err != nil {
		field := "max_failure_percent"
		if strings.Contains(err.Error(), "min_failures") {
			field = "min_failures"
		}
		return badRequest(field, "%v", err)
	}
	if err := s.st.PutSetting(r.Context(), store.SettingThresholds, t, tok.Actor()); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, req)
}

func (s *Server) adminGetOverrides(w http.ResponseWriter, r *http.Request, _ store.AdminToken) error {
	o, err := s.overrides(r.Context())
	if err != nil {
		return err
	}
	out := api.Overrides{Pins: o.Pins}
	for _, l := range o.Labels {
		out.Labels = append(out.Labels, api.LabelRule{Label: l.Label, Ring: l.Ring})
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) adminPutOverrides(w http.ResponseWriter, r *http.Request, tok store.AdminToken) error {
	var req api.Overrides
	if err := decodeAdmin(r, &req, false); err != nil {
		return err
	}
	if len(req.Pins)+len(req.Labels) > maxOverrides {
		return badRequest("pins", "%d pins and label rules, at most %d; use label rules for groups of devices", len(req.Pins)+len(req.Labels), maxOverrides)
	}
	o := rollout.Overrides{Pins: req.Pins}
	for dev := range req.Pins {
		if id, err := strconv.ParseInt(dev, 10, 64); err != nil || id <= 0 {
			return badRequest("pins", "pin key %q is not a device id", dev)
		}
	}
	for _, l := range req.Labels {
		o.Labels = append(o.Labels, rollout.LabelRule{Label: l.Label, Ring: l.Ring})
	}
	rs, err := s.rings(r.Context())
	if err != nil {
		return err
	}
	if err := o.Validate(rs); err != nil {
		field := "labels"
		if strings.Contains(err.Error(), "pinned") {
			field = "pins"
		}
		return badRequest(field, "%v", err)
	}
	if err := s.st.PutSetting(r.Context(), store.SettingOverrides, o, tok.Actor()); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, req)
}

func deviceJSON(d store.DeviceSummary, rs rollout.Rings, o rollout.Overrides) api.Device {
	p := placement(d.Device, rs, o)
	out := api.Device{ID: d.ID, Hostname: d.Hostname, Ring: p.Ring, PlacedBy: string(p.By), PlacedLabel: p.Label, State: string(d.State),
		Ready: d.Ready, LastSeen: timePtr(d.LastSeen), EnrolledAt: d.EnrolledAt, Labels: d.Labels, AgentVersion: d.AgentVersion}
	if d.Readiness != "" {
		// Stored as the device sent it; a device's bad JSON only loses
		// the readiness detail in this listing.
		json.Unmarshal([]byte(d.Readiness), &out.Readiness)
	}
	return out
}

// queryInt reads an optional non-negative integer query parameter.
func queryInt(r *http.Request, name string) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, badRequest(name, "query parameter %s=%q is not a non-negative integer", name, v)
	}
	return n, nil
}

func (s *Server) adminListDevices(w http.ResponseWriter, r *http.Request, _ store.AdminToken) error {
	after, err := queryInt(r, "after")
	if err != nil {
		return err
	}
	limit, err := queryInt(r, "limit")
	if err != nil {
		return err
	}
	all := r.URL.Query().Get("all") == "true"
	rs, err := s.rings(r.Context())
	if err != nil {
		return err
	}
	o, err := s.overrides(r.Context())
	if err != nil {
		return err
	}
	ds, err := s.st.ListDevices(r.Context(), after, int(min(limit, math.MaxInt32)), all)
	if err != nil {
		return err
	}
	out := api.DeviceList{Devices: []api.Device{}}
	for _, d := range ds {
		out.Devices = append(out.Devices, deviceJSON(d, rs, o))
	}
	if limit > 0 && int64(len(ds)) == limit {
		out.Next = ds[len(ds)-1].ID
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) deviceDetail(r *http.Request, id int64) (api.DeviceDetail, error) {
	ctx := r.Context()
	d, err := s.st.DeviceSummary(ctx, id)
	if err != nil {
		return api.DeviceDetail{}, storeError(err)
	}
	rs, err := s.rings(ctx)
	if err != nil {
		return api.DeviceDetail{}, err
	}
	o, err := s.overrides(ctx)
	if err != nil {
		return api.DeviceDetail{}, err
	}
	out := api.DeviceDetail{Device: deviceJSON(d, rs, o), Modules: []api.Module{}, Releases: []api.DeviceRelease{}}
	ms, err := s.st.DeviceModules(ctx, id)
	if err != nil {
		return api.DeviceDetail{}, err
	}
	for _, m := range ms {
		out.Modules = append(out.Modules, api.Module{BuildID: m.BuildID, Name: m.Name, Package: m.Package, Processes: m.Processes})
	}
	states, err := s.st.DeviceReleaseStates(ctx, id)
	if err != nil {
		return api.DeviceDetail{}, err
	}
	for _, st := range states {
		out.Releases = append(out.Releases, api.DeviceRelease{Release: st.ReleaseID, Ring: st.Ring, State: st.State, Reason: st.Reason, UpdatedAt: st.UpdatedAt})
	}
	sort.Slice(out.Releases, func(i, j int) bool { return out.Releases[i].Release > out.Releases[j].Release })
	return out, nil
}

func (s *Server) adminGetDevice(w http.ResponseWriter, r *http.Request, _ store.AdminToken) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	d, err := s.deviceDetail(r, id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, d)
}

func (s *Server) adminRetireDevice(w http.ResponseWriter, r *http.Request, tok store.AdminToken) error {
	return s.setDeviceState(w, r, tok, false)
}

func (s *Server) adminRevokeDevice(w http.ResponseWriter, r *http.Request, tok store.AdminToken) error {
	return s.setDeviceState(w, r, tok, true)
}

func (s *Server) setDeviceState(w http.ResponseWriter, r *http.Request, tok store.AdminToken, revoke bool) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	var req api.ReasonRequest
	if err := decodeAdmin(r, &req, !revoke); err != nil {
		return err
	}
	if err := checkReason(req.Reason, revoke); err != nil {
		return err
	}
	if revoke {
		err = s.st.RevokeDevice(r.Context(), id, tok.Actor(), req.Reason)
	} else {
		err = s.st.RetireDevice(r.Context(), id, tok.Actor(), req.Reason)
	}
	if err != nil {
		return storeError(err)
	}
	d, err := s.deviceDetail(r, id)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, d.Device)
}

// parseTTL reads a duration field; "" is zero.
func parseTTL(field, v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, badRequest(field, "%s %q is not a duration such as 24h or 30m", field, v)
	}
	return d, nil
}

func (s *Server) adminCreateToken(w http.ResponseWriter, r *http.Request, tok store.AdminToken) error {
	var req api.TokenRequest
	if err := decodeAdmin(r, &req, false); err != nil {
		return err
	}
	ttl, err := parseTTL("ttl", req.TTL)
	if err != nil {
		return err
	}
	switch {
	case ttl <= 0 || ttl > maxTokenTTL:
		return badRequest("ttl", "ttl %q must be above 0 and at most %v; enrollment tokens are short-lived secrets", req.TTL, maxTokenTTL)
	case req.MaxUses <= 0 || req.MaxUses > maxTokenUses:
		return badRequest("max_uses", "max_uses %d must be between 1 and %d", req.MaxUses, maxTokenUses)
	case len(req.Labels) > maxTokenLabels:
		return badRequest("labels", "%d labels, at most %d", len(req.Labels), maxTokenLabels)
	}
	for k, v := range req.Labels {
		if k == "" || len(k) > maxLabelLen || len(v) > maxLabelLen || strings.ContainsAny(k, "=") {
			return badRequest("labels", "label %q=%q: keys must be 1-%d bytes without '=', values at most %d bytes", k, v, maxLabelLen, maxLabelLen)
		}
	}
	ring := ""
	if req.Ring != "" {
		if ring, err = s.ringName(r.Context(), req.Ring); err != nil {
			return err
		}
	}
	secret, t, err := s.st.CreateToken(r.Context(), store.NewToken{CreatedBy: tok.Actor(), TTL: ttl, MaxUses: req.MaxUses, Ring: ring, Labels: req.Labels})
	if err != nil {
		return err
	}
	if err := s.st.AppendAudit(r.Context(), store.AuditEntry{Actor: tok.Actor(), Action: "enrollment-token.create", Target: fmt.Sprintf("enrollment-token/%d", t.ID),
		Details: map[string]any{"ttl": ttl.String(), "max_uses": req.MaxUses, "ring": ring, "labels": req.Labels}}); err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, api.TokenResponse{Token: secret, ID: t.ID, ExpiresAt: t.ExpiresAt})
}

func (s *Server) adminCreateAdminToken(w http.ResponseWriter, r *http.Request, tok store.AdminToken) error {
	var req api.AdminTokenRequest
	if err := decodeAdmin(r, &req, false); err != nil {
		return err
	}
	switch {
	case strings.TrimSpace(req.Name) == "" || len(req.Name) > maxAdminName:
		return badRequest("name", "name %q must be 1-%d bytes; it names the holder in the audit log", req.Name, maxAdminName)
	case store.RoleRank(req.Role) == 0:
		return badRequest("role", "role %q: want viewer, operator or admin", req.Role)
	}
	ttl, err := parseTTL("ttl", req.TTL)
	if err != nil {
		return err
	}
	secret, t, err := s.st.CreateAdminToken(r.Context(), req.Name, req.Role, ttl, tok.Actor())
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, api.AdminTokenResponse{Token: secret, ID: t.ID, Name: t.Name, Role: t.Role, ExpiresAt: timePtr(t.ExpiresAt)})
}

func (s *Server) adminRevokeAdminToken(w http.ResponseWriter, r *http.Request, tok store.AdminToken) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	if err := s.st.RevokeAdminToken(r.Context(), id, tok.Actor()); err != nil {
		return storeError(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) adminAudit(w http.ResponseWriter, r *http.Request, _ store.AdminToken) error {
	after, err := queryInt(r, "after")
	if err != nil {
		return err
	}
	limit, err := queryInt(r, "limit")
	if err != nil {
		return err
	}
	if limit == 0 {
		limit = defaultAuditPage
	}
	if limit > maxAuditPage {
		return badRequest("limit", "limit %d is over %d; page with after=", limit, maxAuditPage)
	}
	es, err := s.st.Audit(r.Context(), after, int(limit))
	if err != nil {
		return err
	}
	out := api.AuditList{Entries: []api.AuditEntry{}}
	for _, e := range es {
		out.Entries = append(out.Entries, auditJSON(e))
	}
	if int64(len(es)) == limit {
		out.Next = es[len(es)-1].ID
	}
	return writeJSON(w, http.StatusOK, out)
}
