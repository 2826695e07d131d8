package server

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"hotfleet/internal/api"
	"hotfleet/internal/bundle"
	"hotfleet/internal/rollout"
	"hotfleet/internal/store"
)

// Limits on a release as an admin writes it, each with its reason.
const (
	// maxReleaseName: names are shown in tables, notices and the motd.
	maxReleaseName = 128
	// maxReleaseBundles: one release fixes one problem across the module
	// builds in a fleet; hundreds of bundles are a mistake.
	maxReleaseBundles = 256
	// maxCVEs: a release covering more CVEs than this is a baseline, and
	// the list is shown to users.
	maxCVEs = 64
	// maxNotes bounds free-text notes shown to admins.
	maxNotes = 64 << 10
	// maxReason bounds a pause, rollback or revoke reason; it goes into
	// notices every device of the fleet receives.
	maxReason = 1024
	// statusActions bounds the automatic actions listed in a status.
	statusActions = 100
	// forecastHistory is how far back check-ins feed the forecast: enough
	// to see a device's weekly rhythm.
	forecastHistory = 30 * 24 * time.Hour
)

var (
	cvePattern    = regexp.MustCompile(`^[A-Z][A-Z0-9]*-[0-9]{4}-[0-9]{1,12}$`)
	severities    = []string{"low", "moderate", "important", "critical"}
	sha256Pattern = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

func (s *Server) adminUploadBundle(w http.ResponseWriter, r *http.Request, tok store.AdminToken) error {
	data, err := readBody(r, api.MaxBundle)
	if err != nil {
		return err
	}
	b, err := bundle.Decode(data)
	if err != nil {
		return badRequest("", "the body is not a valid hotfleet patch bundle (.hfp): %v; build it with 'hotfleet patch build'", err)
	}
	sha, created, err := s.st.PutBundle(r.Context(), data)
	if err != nil {
		return err
	}
	if created {
		if err := s.st.AppendAudit(r.Context(), store.AuditEntry{Actor: tok.Actor(), Action: "bundle.upload", Target: "bundle/" + sha,
			Details: map[string]any{"id": b.ID, "level": b.Level, "size": len(data)}}); err != nil {
			return err
		}
	}
	out := api.BundleUpload{SHA256: sha, ID: b.ID, Level: b.Level, Size: int64(len(data)), Created: created, BuildIDs: []string{}}
	for _, m := range b.Modules {
		out.BuildIDs = append(out.BuildIDs, hex.EncodeToString(m.BuildID))
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	return writeJSON(w, status, out)
}

func releaseJSON(r store.Release) api.Release {
	out := api.Release{ID: r.ID, Name: r.Name, Kind: r.Kind, Severity: r.Severity, CVEs: r.CVEs, Notes: r.Notes, State: r.State,
		CreatedBy: r.CreatedBy, CreatedAt: r.CreatedAt, PublishedAt: timePtr(r.PublishedAt), ExpeditedAt: timePtr(r.ExpeditedAt),
		AutoRollback: r.AutoRollback, Bundles: []api.ReleaseBundle{}}
	if out.CVEs == nil {
		out.CVEs = []string{}
	}
	for b, sha := range r.Bundles {
		out.Bundles = append(out.Bundles, api.ReleaseBundle{BuildID: b, SHA256: sha})
	}
	sort.Slice(out.Bundles, func(i, j int) bool { return out.Bundles[i].BuildID < out.Bundles[j].BuildID })
	return out
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

func (s *Server) adminListReleases(w http.ResponseWriter, r *http.Request, _ store.AdminToken) error {
	rs, err := s.st.Releases(r.Context())
	if err != nil {
		return err
	}
	out := api.ReleaseList{Releases: []api.Release{}}
	for _, rel := range rs {
		out.Releases = append(out.Releases, releaseJSON(rel))
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) release(ctx context.Context, r *http.Request) (store.Release, error) {
	id, err := pathID(r, "id")
	if err != nil {
		return store.Release{}, err
	}
	rel, err := s.st.Release(ctx, id)
	return rel, storeError(err)
}

func (s *Server) adminGetRelease(w http.ResponseWriter, r *http.Request, _ store.AdminToken) error {
	rel, err := s.release(r.Context(), r)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, releaseJSON(rel))
}

// checkReleaseRequest refuses a release request with the first bad field.
func checkReleaseRequest(req api.ReleaseRequest) error {
	switch {
	case strings.TrimSpace(req.Name) == "":
		return badRequest("name", "name is empty; name the release, e.g. \"2026-11 libexpat\"")
	case len(req.Name) > maxReleaseName:
		return badRequest("name", "name is %d bytes, at most %d", len(req.Name), maxReleaseName)
	case req.Kind != store.KindHotpatch && req.Kind != store.KindBaseline:
		return badRequest("kind", "kind %q: want hotpatch or baseline", req.Kind)
	case !contains(severities, req.Severity):
		return badRequest("severity", "severity %q: want one of %s", req.Severity, strings.Join(severities, ", "))
	case len(req.CVEs) > maxCVEs:
		return badRequest("cves", "%d CVEs, at most %d", len(req.CVEs), maxCVEs)
	case len(req.Notes) > maxNotes:
		return badRequest("notes", "notes are %d bytes, at most %d", len(req.Notes), maxNotes)
	case len(req.Bundles) == 0:
		return badRequest("bundles", "no bundles; upload each .hfp (POST %s%s) and list their sha256", api.PathAdmin, api.AdminBundles)
	case len(req.Bundles) > maxReleaseBundles:
		return badRequest("bundles", "%d bundles, at most %d", len(req.Bundles), maxReleaseBundles)
	}
	for i, c := range req.CVEs {
		if !cvePattern.MatchString(c) {
			return badRequest(fmt.Sprintf("cves[%d]", i), "%q is not a CVE id such as CVE-2024-45490", c)
		}
	}
	for i, sha := range req.Bundles {
		if !sha256Pattern.MatchString(sha) {
			return badRequest(fmt.Sprintf("bundles[%d]", i), "%q is not a bundle's SHA-256 (64 lowercase hex digits)", sha)
		}
	}
	return nil
}

func contains(list []string, v string) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

func (s *Server) adminCreateRelease(w http.ResponseWriter, r *http.Request, tok store.AdminToken) error {
	var req api.ReleaseRequest
	if err := decodeAdmin(r, &req, false); err != nil {
		return err
	}
	if err := checkReleaseRequest(req); err != nil {
		return err
	}
	// The server reads each bundle to learn its build-ids: the release
	// maps build-ids to bundles, and two bundles for one module cannot
	// both apply.
	byBuildID := map[string]string{}
	where := map[string]int{}
	for i, sha := range req.Bundles {
		field := fmt.Sprintf("bundles[%d]", i)
		data, err := s.st.Bundle(r.Context(), sha)
		if errors.Is(err, store.ErrNotFound) {
			return badRequest(field, "bundle %s was not uploaded; upload it first (POST %s%s)", sha, api.PathAdmin, api.AdminBundles)
		}
		if err != nil {
			return err
		}
		b, err := bundle.Decode(data)
		if err != nil {
			return badRequest(field, "stored bundle %s does not decode: %v; upload a valid bundle", sha, err)
		}
		for _, m := range b.Modules {
			id := hex.EncodeToString(m.BuildID)
			if prev, dup := byBuildID[id]; dup {
				if prev == sha {
					return badRequest(field, "bundle %s is listed twice (bundles[%d]); list it once", sha, where[id])
				}
				return badRequest(field, "bundle %s and bundles[%d] (%s) both patch build-id %s; a release has one bundle per build-id, keep the higher level",
					sha, where[id], prev, id)
			}
			byBuildID[id], where[id] = sha, i
		}
	}
	rel, err := s.st.CreateRelease(r.Context(), store.NewRelease{Name: req.Name, Kind: req.Kind, Severity: req.Severity, CVEs: req.CVEs,
		Notes: req.Notes, Bundles: byBuildID, CreatedBy: tok.Actor(), AutoRollback: req.AutoRollback})
	if err != nil {
		return storeError(err)
	}
	return writeJSON(w, http.StatusCreated, releaseJSON(rel))
}

// transition runs a store state change on the release in the path and
// answers the release as it is afterwards.
func (s *Server) transition(w http.ResponseWriter, r *http.Request, fn func(ctx context.Context, id int64) error) error {
	id, err := pathID(r, "id")
	if err != nil {
		return err
	}
	if err := fn(r.Context(), id); err != nil {
		return storeError(err)
	}
	rel, err := s.st.Release(r.Context(), id)
	if err != nil {
		return storeError(err)
	}
	return writeJSON(w, http.StatusOK, releaseJSON(rel))
}

func (s *Server) adminPublish(w http.ResponseWriter, r *http.Request, tok store.AdminToken) error {
	var req api.PublishRequest
	if err := decodeAdmin(r, &req, true); err != nil {
		return err
	}
	return s.transition(w, r, func(ctx context.Context, id int64) error {
		return s.st.PublishRelease(ctx, id, tok.Actor(), req.Expedite)
	})
}

func (s *Server) adminExpedite(w http.ResponseWriter, r *http.Request, tok store.AdminToken) error {
	var req struct{}
	if err := decodeAdmin(r, &req, true); err != nil {
		return err
	}
	return s.transition(w, r, func(ctx context.Context, id int64) error {
		return s.st.ExpediteRelease(ctx, id, tok.Actor())
	})
}

func checkReason(reason string, required bool) error {
	switch {
	case required && strings.TrimSpace(reason) == "":
		return badRequest("reason", "reason is empty; say why, it is shown to admins and in device notices")
	case len(reason) > maxReason:
		return badRequest("reason", "reason is %d bytes, at most %d", len(reason), maxReason)
	}
	return nil
}

// ringName resolves a ring name as admins type it (any case) to the
// configured name.
func (s *Server) ringName(ctx context.Context, name string) (string, error) {
	rs, err := s.rings(ctx)
	if err != nil {
		return "", err
	}
	i := rs.Index(name)
	if i < 0 {
		names := make([]string, len(rs))
		for j, r := range rs {
			names[j] = r.Name
		}
		return "", badRequest("ring", "ring %q does not exist; use one of %s", name, strings.Join(names, ", "))
	}
	return rs[i].Name, nil
}

func (s *Server) adminPause(w http.ResponseWriter, r *http.Request, tok store.AdminToken) error {
	var req api.PauseRequest
	if err := decodeAdmin(r, &req, false); err != nil {
		return err
	}
	if err := checkReason(req.Reason, true); err != nil {
		return err
	}
	ring := ""
	if req.Ring != "" {
		var err error
		if ring, err = s.ringName(r.Context(), req.Ring); err != nil {
			return err
		}
	}
	return s.transition(w, r, func(ctx context.Context, id int64) error {
		_, err := s.st.PauseRelease(ctx, id, ring, tok.Actor(), req.Reason)
		return err
	})
}

func (s *Server) adminResume(w http.ResponseWriter, r *http.Request, tok store.AdminToken) error {
	var req api.ResumeRequest
	if err := decodeAdmin(r, &req, true); err != nil {
		return err
	}
	return s.transition(w, r, func(ctx context.Context, id int64) error {
		_, err := s.st.ResumeRelease(ctx, id, req.Ring, tok.Actor())
		return err
	})
}

func (s *Server) adminRollback(w http.ResponseWriter, r *http.Request, tok store.AdminToken) error {
	var req api.ReasonRequest
	if err := decodeAdmin(r, &req, false); err != nil {
		return err
	}
	if err := checkReason(req.Reason, true); err != nil {
		return err
	}
	return s.transition(w, r, func(ctx context.Context, id int64) error {
		return s.st.SetReleaseState(ctx, id, tok.Actor(), store.ReleaseRolledBack, req.Reason)
	})
}

// plan is a release's schedule at now, with every pause that concerns it.
func (s *Server) plan(ctx context.Context, rel store.Release, rs rollout.Rings, now time.Time) (rollout.Schedule, []store.PauseRecord, error) {
	ps, err := s.st.ReleasePauses(ctx, rel.ID)
	if err != nil {
		return rollout.Schedule{}, nil, err
	}
	rr := rollout.Release{Published: rel.PublishedAt, Kind: rollout.Kind(rel.Kind), Expedited: rel.ExpeditedAt}
	if rr.Published.IsZero() {
		rr.Published = now // a draft: as if published now
	}
	for _, p := range ps {
		rr.Pauses = append(rr.Pauses, rollout.Pause{Ring: p.Ring, From: p.CreatedAt, Until: p.ResumedAt, Reason: p.Reason, By: p.Actor})
	}
	return rollout.Plan(rr, rs, now), ps, nil
}

// statusStates are the device states a status counts, in table order.
var statusStates = []string{
	rollout.Assigned.String(), rollout.Applied.String(), rollout.Failed.String(),
	rollout.NotApplicable.String(), rollout.NeedsRestart.String(), rollout.Offline.String(),
}

func (s *Server) adminStatus(w http.ResponseWriter, r *http.Request, _ store.AdminToken) error {
	ctx := r.Context()
	rel, err := s.release(ctx, r)
	if err != nil {
		return err
	}
	rs, err := s.rings(ctx)
	if err != nil {
		return err
	}
	now := s.now()
	sched, pauses, err := s.plan(ctx, rel, rs, now)
	if err != nil {
		return err
	}
	counts, err := s.st.Counts(ctx, rel.ID)
	if err != nil {
		return err
	}
	// Offline is judged on the store's clock, which stamps last_seen.
	offline, err := s.st.OfflineCounts(ctx, rel.ID, time.Now().Add(-s.cfg.OfflineAfter))
	if err != nil {
		return err
	}
	out := api.ReleaseStatus{Release: releaseJSON(rel), At: now.UTC(), Rings: []api.RingStatus{}}
	seen := map[string]bool{}
	addRing := func(name string, rsch *rollout.RingSchedule) {
		seen[strings.ToLower(name)] = true
		st := api.RingStatus{Ring: name, Counts: map[string]int64{}}
		for _, state := range statusStates {
			st.Counts[state] = 0
		}
		for ring, byState := range counts {
			if !strings.EqualFold(ring, name) {
				continue
			}
			for state, n := range byState {
				st.Counts[state] += n
				st.Total += n
			}
		}
		for ring, n := range offline {
			if strings.EqualFold(ring, name) {
				n = min(n, st.Counts[rollout.Assigned.String()])
				st.Counts[rollout.Assigned.String()] -= n
				st.Counts[rollout.Offline.String()] += n
			}
		}
		if rsch != nil && rel.State != store.ReleaseDraft {
			st.Eligible, st.Deadline, st.GraceEnd = timePtr(rsch.Eligible), timePtr(rsch.Deadline), timePtr(rsch.GraceEnd)
		}
		if rsch != nil {
			st.Held, st.Paused = rsch.Held, rsch.Paused
		}
		out.Rings = append(out.Rings, st)
	}
	for i := range sched.Rings {
		addRing(sched.Rings[i].Ring, &sched.Rings[i])
	}
	// Devices counted in a ring that has since been removed still count.
	var gone []string
	for ring := range counts {
		if !seen[strings.ToLower(ring)] {
			gone = append(gone, ring)
		}
	}
	sort.Strings(gone)
	for _, ring := range gone {
		addRing(ring, nil)
	}
	for _, p := range pauses {
		if p.ResumedAt.IsZero() {
			out.Pauses = append(out.Pauses, api.Pause{ID: p.ID, Release: p.ReleaseID, Ring: p.Ring, Actor: p.Actor, Reason: p.Reason, CreatedAt: p.CreatedAt})
		}
	}
	acts, err := s.st.AuditOf(ctx, fmt.Sprintf("release/%d", rel.ID), "rollout", statusActions)
	if err != nil {
		return err
	}
	for _, e := range acts {
		out.Actions = append(out.Actions, auditJSON(e))
	}
	return writeJSON(w, http.StatusOK, out)
}

func auditJSON(e store.AuditEntry) api.AuditEntry {
	d, _ := json.Marshal(e.Details)
	return api.AuditEntry{ID: e.ID, At: e.At, Actor: e.Actor, Action: e.Action, Target: e.Target, Details: d, RemoteAddr: e.RemoteAddr}
}

// releaseModules are the build-ids a release patches and the file names
// of those modules, from its bundles.
func (s *Server) releaseModules(ctx context.Context, rel store.Release) (buildIDs, names []string, err error) {
	shas := map[string]bool{}
	for b, sha := range rel.Bundles {
		buildIDs = append(buildIDs, b)
		shas[sha] = true
	}
	seen := map[string]bool{}
	for sha := range shas {
		data, err := s.st.Bundle(ctx, sha)
		if err != nil {
			return nil, nil, err
		}
		b, err := bundle.Decode(data)
		if err != nil {
			return nil, nil, fmt.Errorf("decode bundle %s of release %d: %w", sha, rel.ID, err)
		}
		for _, m := range b.Modules {
			if m.Name != "" && !seen[m.Name] {
				seen[m.Name] = true
				names = append(names, m.Name)
			}
		}
	}
	sort.Strings(buildIDs)
	sort.Strings(names)
	return buildIDs, names, nil
}

func (s *Server) adminForecast(w http.ResponseWriter, r *http.Request, _ store.AdminToken) error {
	ctx := r.Context()
	rel, err := s.release(ctx, r)
	if err != nil {
		return err
	}
	rs, err := s.rings(ctx)
	if err != nil {
		return err
	}
	o, err := s.overrides(ctx)
	if err != nil {
		return err
	}
	now := s.now()
	sched, _, err := s.plan(ctx, rel, rs, now)
	if err != nil {
		return err
	}
	buildIDs, names, err := s.releaseModules(ctx, rel)
	if err != nil {
		return err
	}
	mapping, err := s.st.DevicesMapping(ctx, buildIDs, names)
	if err != nil {
		return err
	}
	checkIns, err := s.st.DeviceCheckIns(ctx, now.Add(-forecastHistory))
	if err != nil {
		return err
	}
	var hist []rollout.DeviceHistory
	hosts := map[string]string{}
	for after := int64(0); ; {
		ds, err := s.st.ListDevices(ctx, after, 0, false)
		if err != nil {
			return err
		}
		if len(ds) == 0 {
			break
		}
		for _, d := range ds {
			id := strconv.FormatInt(d.ID, 10)
			hosts[id] = d.Hostname
			hist = append(hist, rollout.DeviceHistory{ID: id, Ring: placement(d.Device, rs, o).Ring,
				Applicable: mapping[d.ID], CheckIns: checkIns[d.ID]})
		}
		after = ds[len(ds)-1].ID
	}
	f := rollout.ForecastRelease(sched, hist, now)
	out := api.Forecast{Release: rel.ID, Published: sched.Published.UTC(), At: now.UTC(), NotApplicable: f.NotApplicable,
		Devices: []api.DeviceForecast{}, Curve: []api.CurvePoint{}}
	for _, d := range f.Devices {
		id, _ := strconv.ParseInt(d.ID, 10, 64)
		out.Devices = append(out.Devices, api.DeviceForecast{DeviceID: id, Hostname: hosts[d.ID], Ring: d.Ring,
			Eligible: timePtr(d.Eligible), Expected: timePtr(d.Expected), Away: d.Away, Unknown: d.Unknown})
	}
	for _, p := range f.Curve {
		out.Curve = append(out.Curve, api.CurvePoint{OffsetS: p.Offset.Seconds(), Compliant: p.Compliant})
	}
	return writeJSON(w, http.StatusOK, out)
}
