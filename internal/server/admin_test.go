package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"hotfleet/internal/api"
	"hotfleet/internal/bundle"
	"hotfleet/internal/store"
	"hotfleet/internal/testenv"
)

// adminEnv is a server on a real store with a token of each role.
type adminEnv struct {
	t      *testing.T
	st     *store.Store
	srv    *Server
	url    string
	tokens map[string]string // role → secret
	off    atomic.Int64      // nanoseconds the policy clock runs ahead of real time
}

func newAdminEnv(t *testing.T, dsn string) *adminEnv {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &adminEnv{t: t, st: st, tokens: map[string]string{}}
	e.srv = New(Config{Store: st, Now: func() time.Time { return time.Now().Add(time.Duration(e.off.Load())) }})
	hs := httptest.NewServer(e.srv.Handler())
	t.Cleanup(hs.Close)
	e.url = hs.URL
	for _, role := range []string{store.RoleViewer, store.RoleOperator, store.RoleAdmin} {
		name := map[string]string{store.RoleViewer: "dash", store.RoleOperator: "ci", store.RoleAdmin: "alice"}[role]
		secret, _, err := st.CreateAdminToken(ctx, name, role, 0, "test")
		if err != nil {
			t.Fatal(err)
		}
		e.tokens[role] = secret
	}
	return e
}

// do sends an admin request with the role's token; body is JSON-encoded
// unless it is []byte. It returns the status and the raw answer.
func (e *adminEnv) do(role, method, path string, body any) (int, []byte) {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.url+api.PathAdmin+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if secret, ok := e.tokens[role]; ok {
		req.Header.Set("Authorization", "Bearer "+secret)
	} else if role != "" {
		req.Header.Set("Authorization", "Bearer "+role)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// ok sends a request that must succeed and decodes its answer into v.
func (e *adminEnv) ok(role, method, path string, body, v any) {
	e.t.Helper()
	code, out := e.do(role, method, path, body)
	if code/100 != 2 {
		e.t.Fatalf("%s %s as %s: %d %s", method, path, role, code, out)
	}
	if v != nil {
		if err := json.Unmarshal(out, v); err != nil {
			e.t.Fatalf("%s %s: decode %s: %v", method, path, out, err)
		}
	}
}

// refused sends a request that must fail with status and returns the
// error body.
func (e *adminEnv) refused(status int, role, method, path string, body any) api.Error {
	e.t.Helper()
	code, out := e.do(role, method, path, body)
	var ae api.Error
	if err := json.Unmarshal(out, &ae); err != nil {
		e.t.Fatalf("%s %s: answer %q is not an api.Error: %v", method, path, out, err)
	}
	if code != status {
		e.t.Fatalf("%s %s as %s: got %d %q, want %d", method, path, role, code, out, status)
	}
	return ae
}

func (e *adminEnv) generation() int64 {
	n, err := e.st.Generation(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// testBundle is a valid bundle patching the given build-ids (one byte
// repeated 20 times each) of a module named name.
func adminBundle(t *testing.T, id string, level uint32, name string, buildIDBytes ...byte) []byte {
	t.Helper()
	h := sha256.Sum256([]byte("old"))
	b := &bundle.Bundle{ID: id, Level: level}
	for _, x := range buildIDBytes {
		b.Modules = append(b.Modules, bundle.Module{BuildID: bytes.Repeat([]byte{x}, 20), Name: name, Code: make([]byte, 32),
			Funcs: []bundle.Func{{Name: "f", Site: 0x1139, OldSize: 32, OldHash: h[:], Offset: 0, Size: 32}}})
	}
	data, err := bundle.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func adminBuildID(x byte) string { return strings.Repeat(fmt.Sprintf("%02x", x), 20) }

func (e *adminEnv) upload(data []byte) api.BundleUpload {
	e.t.Helper()
	var up api.BundleUpload
	e.ok(store.RoleAdmin, "POST", api.AdminBundles, data, &up)
	return up
}

func (e *adminEnv) createRelease(name string, shas ...string) api.Release {
	e.t.Helper()
	var rel api.Release
	e.ok(store.RoleAdmin, "POST", api.AdminReleases, api.ReleaseRequest{Name: name, Kind: "hotpatch", Severity: "important",
		CVEs: []string{"CVE-2024-45490"}, Bundles: shas}, &rel)
	return rel
}

func (e *adminEnv) releases() []api.Release {
	var l api.ReleaseList
	e.ok(store.RoleViewer, "GET", api.AdminReleases, nil, &l)
	return l.Releases
}

func TestAdminRoles(t *testing.T) {
	e := newAdminEnv(t, filepath.Join(t.TempDir(), "server.db"))
	up := e.upload(adminBundle(t, "fix-1", 1, "libexpat.so.1", 0xa1))
	rel := e.createRelease("expat", up.SHA256)
	id := fmt.Sprint(rel.ID)

	// A viewer reads but cannot change anything.
	if got := e.releases(); len(got) != 1 || got[0].Name != "expat" {
		t.Fatalf("viewer lists %+v, want the expat release", got)
	}
	ae := e.refused(http.StatusForbidden, store.RoleViewer, "POST", "releases/"+id+"/pause", api.PauseRequest{Reason: "x"})
	if !strings.Contains(ae.Error, "viewer token 'dash' cannot pause releases") {
		t.Errorf("viewer pausing: %q", ae.Error)
	}
	// An operator cannot publish.
	ae = e.refused(http.StatusForbidden, store.RoleOperator, "POST", "releases/"+id+"/publish", nil)
	if ae.Error != "operator token 'ci' cannot publish; publishing needs an admin token" {
		t.Errorf("operator publishing: %q", ae.Error)
	}
	if e.releases()[0].State != store.ReleaseDraft {
		t.Fatal("a refused publish changed the release")
	}
	// ... but pauses once an admin has published.
	e.ok(store.RoleAdmin, "POST", "releases/"+id+"/publish", nil, nil)
	e.ok(store.RoleOperator, "POST", "releases/"+id+"/pause", api.PauseRequest{Reason: "crash reports"}, nil)

	// Missing, unknown, revoked and expired tokens are 401.
	e.refused(http.StatusUnauthorized, "", "GET", api.AdminReleases, nil)
	e.refused(http.StatusUnauthorized, "not-a-token", "GET", api.AdminReleases, nil)
	var made api.AdminTokenResponse
	e.ok(store.RoleAdmin, "POST", api.AdminAdminTokens, api.AdminTokenRequest{Name: "temp", Role: "viewer", TTL: "1h"}, &made)
	e.tokens["temp"] = made.Token
	e.ok("temp", "GET", api.AdminReleases, nil, nil)
	e.ok(store.RoleAdmin, "DELETE", fmt.Sprintf("admin-tokens/%d", made.ID), nil, nil)
	if ae := e.refused(http.StatusUnauthorized, "temp", "GET", api.AdminReleases, nil); !strings.Contains(ae.Error, "revoked") {
		t.Errorf("revoked token: %q", ae.Error)
	}
	secret, _, err := e.st.CreateAdminToken(context.Background(), "short", store.RoleAdmin, time.Hour, "test")
	if err != nil {
		t.Fatal(err)
	}
	e.tokens["short"] = secret
	e.ok("short", "GET", api.AdminReleases, nil, nil)
	e.st.SetClock(func() time.Time { return time.Now().Add(2 * time.Hour) })
	if ae := e.refused(http.StatusUnauthorized, "short", "GET", api.AdminReleases, nil); !strings.Contains(ae.Error, "expired") {
		t.Errorf("expired token: %q", ae.Error)
	}
}

func TestAdminBadBodies(t *testing.T) {
	e := newAdminEnv(t, filepath.Join(t.TempDir(), "server.db"))
	a := e.upload(adminBundle(t, "fix-a", 1, "libexpat.so.1", 0xa1, 0xa2))
	b := e.upload(adminBundle(t, "fix-b", 2, "libexpat.so.1", 0xa2))
	good := map[string]any{"name": "r", "kind": "hotpatch", "severity": "low", "bundles": []string{a.SHA256}}
	with := func(k string, v any) map[string]any {
		m := map[string]any{}
		for k, v := range good {
			m[k] = v
		}
		m[k] = v
		return m
	}
	gen := e.generation()
	for _, c := range []struct {
		name   string
		path   string
		body   any
		status int
		field  string
	}{
		{"unknown field", api.AdminReleases, with("severty", "low"), 400, "severty"},
		{"wrong type", api.AdminReleases, with("bundles", "abc"), 400, "bundles"},
		{"bad kind", api.AdminReleases, with("kind", "hotfix"), 400, "kind"},
		{"bad cve", api.AdminReleases, with("cves", []string{"CVE-24"}), 400, "cves[0]"},
		{"bad sha", api.AdminReleases, with("bundles", []string{"xyz"}), 400, "bundles[0]"},
		{"unknown bundle", api.AdminReleases, with("bundles", []string{strings.Repeat("0", 64)}), 400, "bundles[0]"},
		{"two bundles one build-id", api.AdminReleases, with("bundles", []string{a.SHA256, b.SHA256}), 400, "bundles[1]"},
		{"huge", api.AdminReleases, with("notes", strings.Repeat("x", api.MaxAdminBody)), 413, ""},
		{"deep", api.AdminReleases, []byte(strings.Repeat("[", 100) + strings.Repeat("]", 100)), 400, ""},
		{"trailing", api.AdminReleases, []byte(`{"name":"r"} {}`), 400, ""},
		{"not a bundle", api.AdminBundles, []byte("HFPATCH\x00garbage"), 400, ""},
		{"thresholds", api.AdminThresholds, api.Thresholds{MinFailures: 0, MaxFailurePercent: 5}, 400, "min_failures"},
		{"overrides", api.AdminOverrides, api.Overrides{Labels: []api.LabelRule{{Label: "db", Ring: "Nope"}}}, 400, "labels"},
		{"token ttl", api.AdminTokens, api.TokenRequest{TTL: "forever", MaxUses: 1}, 400, "ttl"},
	} {
		t.Run(c.name, func(t *testing.T) {
			method := "POST"
			if strings.HasPrefix(c.path, "settings/") {
				method = "PUT"
			}
			ae := e.refused(c.status, store.RoleAdmin, method, c.path, c.body)
			if ae.Field != c.field {
				t.Errorf("field %q, want %q (%s)", ae.Field, c.field, ae.Error)
			}
			if ae.Error == "" {
				t.Error("no message")
			}
		})
	}
	if rs := e.releases(); len(rs) != 0 {
		t.Errorf("refused requests stored releases: %+v", rs)
	}
	if g := e.generation(); g != gen {
		t.Errorf("refused requests bumped the generation from %d to %d", gen, g)
	}
	es, err := e.st.Audit(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range es {
		if en.Action != "bundle.upload" && en.Action != "admin-token.create" {
			t.Errorf("refused request audited: %+v", en)
		}
	}
}

func TestReleaseLifecycle(t *testing.T) {
	for _, b := range []struct {
		name string
		dsn  func(t *testing.T) string
	}{
		{"sqlite", func(t *testing.T) string { return filepath.Join(t.TempDir(), "server.db") }},
		{"postgres", func(t *testing.T) string { return testenv.PostgreSQL(t) }},
	} {
		t.Run(b.name, func(t *testing.T) { testReleaseLifecycle(t, newAdminEnv(t, b.dsn(t))) })
	}
}

func testReleaseLifecycle(t *testing.T, e *adminEnv) {
	up := e.upload(adminBundle(t, "fix-1", 1, "libexpat.so.1", 0xa1, 0xa2))
	if up.ID != "fix-1" || up.Level != 1 || len(up.BuildIDs) != 2 || up.BuildIDs[0] != adminBuildID(0xa1) || !up.Created {
		t.Fatalf("upload answered %+v", up)
	}
	if again := e.upload(adminBundle(t, "fix-1", 1, "libexpat.so.1", 0xa1, 0xa2)); again.Created || again.SHA256 != up.SHA256 {
		t.Fatalf("second upload of the same bytes: %+v", again)
	}
	rel := e.createRelease("expat", up.SHA256)
	if rel.State != "draft" || len(rel.Bundles) != 2 || rel.CreatedBy != "admin:alice" {
		t.Fatalf("created %+v", rel)
	}
	id := fmt.Sprint(rel.ID)
	step := func(role, path string, body any, wantState string) api.Release {
		t.Helper()
		gen := e.generation()
		var got api.Release
		e.ok(role, "POST", "releases/"+id+"/"+path, body, &got)
		if got.State != wantState {
			t.Fatalf("%s: state %s, want %s", path, got.State, wantState)
		}
		if g := e.generation(); g <= gen {
			t.Errorf("%s did not bump the generation (%d)", path, g)
		}
		return got
	}
	if got := step(store.RoleAdmin, "publish", nil, "published"); got.PublishedAt == nil || got.ExpeditedAt != nil {
		t.Errorf("published %+v", got)
	}
	e.refused(http.StatusConflict, store.RoleAdmin, "POST", "releases/"+id+"/publish", nil)
	step(store.RoleOperator, "pause", api.PauseRequest{Reason: "crashes in First", Ring: "first"}, "published")
	step(store.RoleOperator, "pause", api.PauseRequest{Reason: "investigating"}, "paused")
	var st api.ReleaseStatus
	e.ok(store.RoleViewer, "GET", "releases/"+id+"/status", nil, &st)
	if len(st.Pauses) != 2 || !st.Rings[1].Paused || st.Rings[1].Ring != "First" {
		t.Errorf("status while paused: pauses %+v, rings %+v", st.Pauses, st.Rings)
	}
	step(store.RoleOperator, "resume", nil, "published")
	if got := step(store.RoleOperator, "expedite", nil, "published"); got.ExpeditedAt == nil {
		t.Error("expedite did not set expedited_at")
	}
	step(store.RoleOperator, "rollback", api.ReasonRequest{Reason: "bad fix"}, "rolled-back")
	e.refused(http.StatusConflict, store.RoleOperator, "POST", "releases/"+id+"/resume", nil)
	e.refused(http.StatusNotFound, store.RoleViewer, "GET", "releases/999", nil)

	var audit api.AuditList
	e.ok(store.RoleViewer, "GET", "audit?limit=1000", nil, &audit)
	var actions []string
	for _, en := range audit.Entries {
		if en.Target == "release/"+id {
			actions = append(actions, en.Actor+" "+en.Action)
			if en.RemoteAddr == "" {
				t.Errorf("audit entry %d has no remote address", en.ID)
			}
		}
	}
	want := []string{"admin:alice release.create", "admin:alice release.publish", "admin:ci pause.add", "admin:ci pause.add",
		"admin:ci release.paused", "admin:ci pause.resume", "admin:ci release.published", "admin:ci release.expedite",
		"admin:ci release.reason", "admin:ci release.rolled-back"}
	if strings.Join(actions, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit of the release:\n%s\nwant:\n%s", strings.Join(actions, "\n"), strings.Join(want, "\n"))
	}
}

func TestReleaseStatusCounts(t *testing.T) {
	e := newAdminEnv(t, filepath.Join(t.TempDir(), "server.db"))
	ctx := context.Background()
	up := e.upload(adminBundle(t, "fix-1", 1, "libexpat.so.1", 0xa1))
	rel := e.createRelease("expat", up.SHA256)
	e.ok(store.RoleAdmin, "POST", fmt.Sprintf("releases/%d/publish", rel.ID), nil, nil)
	e.off.Store(int64(25 * time.Hour)) // the policy clock: First is eligible, Fast not yet
	// Devices in First: two applied, one failed, one assigned and seen
	// now, one assigned and never seen (offline).
	for i, state := range []string{"applied", "applied", "failed", "assigned", "assigned"} {
		d, err := e.st.CreateDevice(ctx, store.NewDevice{PublicKey: []byte(fmt.Sprintf("key-%d", i)), Hostname: fmt.Sprintf("h%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		if i < 4 {
			if err := e.st.TouchDevice(ctx, d.ID, ""); err != nil {
				t.Fatal(err)
			}
		}
		if err := e.st.SetDeviceReleaseState(ctx, d.ID, rel.ID, "First", state, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.st.AppendAudit(ctx, store.AuditEntry{Actor: "rollout", Action: "release.halt", Target: fmt.Sprintf("release/%d", rel.ID),
		Details: map[string]any{"ring": "First", "failed": 1}}); err != nil {
		t.Fatal(err)
	}
	var st api.ReleaseStatus
	e.ok(store.RoleViewer, "GET", fmt.Sprintf("releases/%d/status", rel.ID), nil, &st)
	if len(st.Rings) != 5 || st.Rings[0].Ring != "Test" || st.Rings[4].Ring != "Last" {
		t.Fatalf("rings not in ring order: %+v", st.Rings)
	}
	first := st.Rings[1]
	want := map[string]int64{"assigned": 1, "applied": 2, "failed": 1, "not-applicable": 0, "needs-restart": 0, "offline": 1}
	for k, v := range want {
		if first.Counts[k] != v {
			t.Errorf("First %s = %d, want %d (%v)", k, first.Counts[k], v, first.Counts)
		}
	}
	if first.Total != 5 {
		t.Errorf("First total %d, want 5", first.Total)
	}
	if first.Eligible == nil || !first.Eligible.Equal(st.Release.PublishedAt.Add(24*time.Hour)) || st.Rings[2].Eligible == nil || !st.Rings[2].Eligible.After(st.At) {
		t.Errorf("First eligible %v, published %v", first.Eligible, st.Release.PublishedAt)
	}
	if len(st.Actions) != 1 || st.Actions[0].Action != "release.halt" || !strings.Contains(string(st.Actions[0].Details), `"failed":1`) {
		t.Errorf("automatic actions %+v", st.Actions)
	}
}

func TestForecast(t *testing.T) {
	e := newAdminEnv(t, filepath.Join(t.TempDir(), "server.db"))
	ctx := context.Background()
	up := e.upload(adminBundle(t, "fix-1", 1, "libexpat.so.1", 0xa1))
	rel := e.createRelease("expat", up.SHA256)
	// Three devices map the module (one by an older build of the same
	// file), one maps something else.
	mods := [][]store.ModuleRow{
		{{BuildID: adminBuildID(0xa1), Name: "libexpat.so.1"}},
		{{BuildID: adminBuildID(0xa1), Name: "libexpat.so.1"}},
		{{BuildID: adminBuildID(0x99), Name: "libexpat.so.1"}},
		{{BuildID: adminBuildID(0x55), Name: "libc.so.6"}},
	}
	for i, ms := range mods {
		d, err := e.st.CreateDevice(ctx, store.NewDevice{PublicKey: []byte(fmt.Sprintf("key-%d", i)), Hostname: fmt.Sprintf("h%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := e.st.RecordCheckIn(ctx, d.ID, store.CheckInRecord{Readiness: []byte("[]"), State: []byte("{}"), InventoryHash: fmt.Sprint(i), Modules: ms}); err != nil {
			t.Fatal(err)
		}
	}
	var f api.Forecast
	e.ok(store.RoleViewer, "GET", fmt.Sprintf("releases/%d/forecast", rel.ID), nil, &f)
	if len(f.Devices) != 3 || f.NotApplicable != 1 {
		t.Fatalf("forecast for %d devices (%d not applicable), want 3 and 1: %+v", len(f.Devices), f.NotApplicable, f)
	}
	for _, d := range f.Devices {
		if d.Hostname == "" || d.Ring == "" || d.Unknown || d.Expected == nil || d.Eligible == nil || d.Expected.Before(*d.Eligible) {
			t.Errorf("device forecast %+v", d)
		}
	}
	if n := len(f.Curve); n == 0 || f.Curve[n-1].Compliant != 1 {
		t.Errorf("the curve does not reach every applicable device: %+v", f.Curve)
	}
}

func TestRingsConfig(t *testing.T) {
	e := newAdminEnv(t, filepath.Join(t.TempDir(), "server.db"))
	ctx := context.Background()
	var cur map[string]any
	e.ok(store.RoleViewer, "GET", api.AdminRings, nil, &cur)
	if rs := cur["rings"].([]any); len(rs) != 5 {
		t.Fatalf("default rings: %v", cur)
	}
	bad := `{"rings":[{"name":"A","share":60,"deferral_days":0,"deadline_days":1,"grace_days":1},{"name":"B","share":30,"deferral_days":2,"deadline_days":1,"grace_days":1}]}`
	if ae := e.refused(400, store.RoleAdmin, "PUT", api.AdminRings, bad); !strings.Contains(ae.Error, "sum to 90") {
		t.Errorf("shares summing to 90: %+v", ae)
	}
	typo := `{"rings":[{"name":"A","shares":100,"deferral_days":0,"deadline_days":1,"grace_days":1}]}`
	e.refused(400, store.RoleAdmin, "PUT", api.AdminRings, typo)
	neg := `{"rings":[{"name":"A","share":100,"deferral_days":-1,"deadline_days":1,"grace_days":1}]}`
	if ae := e.refused(400, store.RoleAdmin, "PUT", api.AdminRings, neg); ae.Field != "rings[0].deferral" {
		t.Errorf("negative deferral: field %q (%s)", ae.Field, ae.Error)
	}
	e.refused(403, store.RoleOperator, "PUT", api.AdminRings, bad)

	// A device pinned to Test keeps Test from being removed.
	if _, err := e.st.CreateDevice(ctx, store.NewDevice{PublicKey: []byte("k"), RingPin: "Test"}); err != nil {
		t.Fatal(err)
	}
	two := `{"rings":[{"name":"Early","share":10,"deferral_days":0,"deadline_days":1,"grace_days":1},{"name":"Broad","share":90,"deferral_days":2,"deadline_days":1,"grace_days":1}]}`
	if ae := e.refused(409, store.RoleAdmin, "PUT", api.AdminRings, two); !strings.Contains(ae.Error, `ring "Test"`) {
		t.Errorf("removing a ring with a pinned device: %q", ae.Error)
	}
	keep := `{"rings":[{"name":"Test","pinned_only":true,"deferral_days":0,"deadline_days":0,"grace_days":0},` +
		`{"name":"Broad","share":90,"deferral_days":2,"deadline_days":1,"grace_days":1},{"name":"Early","share":10,"deferral_days":0,"deadline_days":1,"grace_days":1}]}`
	gen := e.generation()
	e.ok(store.RoleAdmin, "PUT", api.AdminRings, keep, nil)
	rs, err := e.st.Rings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range rs {
		names = append(names, fmt.Sprintf("%s:%d", r.Name, r.Percent))
	}
	if got := strings.Join(names, " "); got != "Test:0 Broad:90 Early:10" {
		t.Errorf("stored rings %s", got)
	}
	if e.generation() <= gen {
		t.Error("changing rings did not bump the generation")
	}
	// Ring pause and resume by an operator.
	e.ok(store.RoleOperator, "POST", "rings/early/pause", api.ReasonRequest{Reason: "holiday"}, nil)
	e.ok(store.RoleOperator, "POST", "rings/Early/resume", nil, nil)
	e.refused(404, store.RoleOperator, "POST", "rings/Early/resume", nil)
	e.refused(404, store.RoleOperator, "POST", "rings/Nope/pause", api.ReasonRequest{Reason: "x"})
}

func TestDevicesAndTokens(t *testing.T) {
	e := newAdminEnv(t, filepath.Join(t.TempDir(), "server.db"))
	var tok api.TokenResponse
	e.ok(store.RoleAdmin, "POST", api.AdminTokens, api.TokenRequest{TTL: "24h", MaxUses: 2, Ring: "test", Labels: map[string]string{"site": "fra"}}, &tok)
	if tok.Token == "" || tok.ExpiresAt.IsZero() {
		t.Fatalf("token %+v", tok)
	}
	d, err := e.st.Enroll(context.Background(), tok.Token, store.NewDevice{PublicKey: []byte("key"), Hostname: "web1"})
	if err != nil {
		t.Fatal(err)
	}
	var l api.DeviceList
	e.ok(store.RoleViewer, "GET", api.AdminDevices, nil, &l)
	if len(l.Devices) != 1 || l.Devices[0].Ring != "Test" || l.Devices[0].PlacedBy != "pin" || l.Devices[0].Labels["site"] != "fra" {
		t.Fatalf("devices %+v", l.Devices)
	}
	var dd api.DeviceDetail
	e.ok(store.RoleViewer, "GET", fmt.Sprintf("devices/%d", d.ID), nil, &dd)
	if dd.Hostname != "web1" || dd.Modules == nil {
		t.Errorf("device detail %+v", dd)
	}
	e.refused(400, store.RoleAdmin, "POST", fmt.Sprintf("devices/%d/revoke", d.ID), api.ReasonRequest{})
	var got api.Device
	e.ok(store.RoleAdmin, "POST", fmt.Sprintf("devices/%d/revoke", d.ID), api.ReasonRequest{Reason: "stolen"}, &got)
	if got.State != "revoked" {
		t.Errorf("revoked device is %s", got.State)
	}
	e.refused(409, store.RoleAdmin, "POST", fmt.Sprintf("devices/%d/retire", d.ID), nil)
	e.refused(404, store.RoleAdmin, "POST", "devices/999/retire", nil)
	e.refused(400, store.RoleAdmin, "POST", "devices/abc/retire", nil)
}

func TestBootstrap(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(t.TempDir(), "server.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := New(Config{Store: st})
	dir := t.TempDir()
	path, err := s.Bootstrap(ctx, dir)
	if err != nil || path != filepath.Join(dir, "admin-token") {
		t.Fatalf("Bootstrap = %q, %v", path, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file %v, %v", fi, err)
	}
	b, _ := os.ReadFile(path)
	tok, err := st.AuthenticateAdmin(ctx, strings.TrimSpace(string(b)))
	if err != nil || tok.Role != store.RoleAdmin || tok.Actor() != "admin:bootstrap" {
		t.Fatalf("bootstrap token: %+v, %v", tok, err)
	}
	if again, err := s.Bootstrap(ctx, dir); again != "" || err != nil {
		t.Errorf("second Bootstrap = %q, %v; want nothing done", again, err)
	}
}
