package server

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"hotfleet/internal/api"
	"hotfleet/internal/bundle"
	"hotfleet/internal/rollout"
	"hotfleet/internal/store"
	"hotfleet/internal/testenv"
)

func TestMain(m *testing.M) { testenv.PostgreSQLMain(m) }

// onBoth runs fn against a fresh database of each dialect.
func onBoth(t *testing.T, fn func(t *testing.T, dsn string)) {
	t.Run("sqlite", func(t *testing.T) { fn(t, filepath.Join(t.TempDir(), "server.db")) })
	t.Run("postgres", func(t *testing.T) { fn(t, testenv.PostgreSQL(t)) })
}

// shiftClock is the policy clock of a test: real time plus an offset the
// test moves by days.
type shiftClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *shiftClock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return time.Now().Add(c.off) }
func (c *shiftClock) add(d time.Duration) { c.mu.Lock(); c.off += d; c.mu.Unlock() }

// fleet is a server over a real store, served by httptest.
type fleet struct {
	t     *testing.T
	st    *store.Store
	srv   *Server
	url   string
	clock *shiftClock
}

func newFleet(t *testing.T, dsn string) *fleet {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := store.Open(ctx, dsn, nil)
	if err != nil {
		t.Fatal(err)
	}
	clock := &shiftClock{}
	st.SetClock(clock.now)
	srv := New(Config{Store: st, Now: clock.now, CheckIn: time.Minute})
	hs := httptest.NewServer(srv.Handler())
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
		hs.Close()
		st.Close()
	})
	return &fleet{t: t, st: st, srv: srv, url: hs.URL, clock: clock}
}

// device is an enrolled test device.
type device struct {
	id   int64
	key  ed25519.PrivateKey
	ring string
}

// token creates an enrollment token pinning devices to ring.
func (f *fleet) token(ring string, uses int) string {
	f.t.Helper()
	secret, _, err := f.st.CreateToken(context.Background(), store.NewToken{CreatedBy: "alice", TTL: time.Hour, MaxUses: uses, Ring: ring})
	if err != nil {
		f.t.Fatal(err)
	}
	return secret
}

// enroll enrolls a new device with a new key in ring.
func (f *fleet) enroll(ring string) *device {
	f.t.Helper()
	pub, key, _ := ed25519.GenerateKey(nil)
	var resp api.EnrollResponse
	if code, body := f.call(nil, "POST", api.PathEnroll, api.EnrollRequest{Token: f.token(ring, 1), PublicKey: pub, Hostname: "host"}, &resp); code != 200 {
		f.t.Fatalf("enroll: %d %s", code, body)
	}
	if resp.Ring != ring {
		f.t.Fatalf("enrolled into ring %q, want %q", resp.Ring, ring)
	}
	return &device{id: resp.DeviceID, key: key, ring: ring}
}

// call sends body (JSON, or raw []byte) signed by d when d is not nil, and
// decodes a 200 answer into out.
func (f *fleet) call(d *device, method, path string, body, out any) (int, string) {
	f.t.Helper()
	var sign func(*http.Request, []byte)
	if d != nil {
		sign = func(r *http.Request, b []byte) { api.Sign(r, d.id, d.key, b, time.Now()) }
	}
	return f.send(method, path, body, sign, out)
}

func (f *fleet) send(method, path string, body any, sign func(*http.Request, []byte), out any) (int, string) {
	f.t.Helper()
	var b []byte
	switch v := body.(type) {
	case nil:
	case []byte:
		b = v
	default:
		var err error
		if b, err = json.Marshal(v); err != nil {
			f.t.Fatal(err)
		}
	}
	req, err := http.NewRequest(method, f.url+path, bytes.NewReader(b))
	if err != nil {
		f.t.Fatal(err)
	}
	if sign != nil {
		sign(req, b)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == 200 && out != nil {
		if err := json.Unmarshal(rb, out); err != nil {
			f.t.Fatalf("%s %s: decode %s: %v", method, path, rb, err)
		}
	}
	return resp.StatusCode, string(rb)
}

func (f *fleet) checkIn(d *device, ci api.CheckIn) api.CheckInResponse {
	f.t.Helper()
	var resp api.CheckInResponse
	if code, body := f.call(d, "POST", api.PathCheckIn, ci, &resp); code != 200 {
		f.t.Fatalf("check-in of device %d: %d %s", d.id, code, body)
	}
	return resp
}

// testBundle encodes a valid bundle patching one module.
func testBundle(t *testing.T, id string, level uint32, buildID, name string) []byte {
	t.Helper()
	bid, err := hex.DecodeString(buildID)
	if err != nil {
		t.Fatal(err)
	}
	old := sha256.Sum256([]byte("old bytes"))
	data, err := bundle.Marshal(&bundle.Bundle{ID: id, Level: level, Modules: []bundle.Module{{
		BuildID: bid, Name: name, Code: make([]byte, 32),
		Funcs: []bundle.Func{{Name: "parse", Site: 0x1139, OldSize: 32, OldHash: old[:], Offset: 0, Size: 32}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

const (
	nginxBuild    = "1111111111111111111111111111111111111111"
	nginxOldBuild = "2222222222222222222222222222222222222222"
	otherBuild    = "3333333333333333333333333333333333333333"
)

// release stores a bundle for nginxBuild and publishes a release of it.
func (f *fleet) release(name, kind string, expedite, autoRollback bool) (store.Release, string) {
	f.t.Helper()
	ctx := context.Background()
	sha, _, err := f.st.PutBundle(ctx, testBundle(f.t, "hf-"+name, 1, nginxBuild, "nginx"))
	if err != nil {
		f.t.Fatal(err)
	}
	r, err := f.st.CreateRelease(ctx, store.NewRelease{Name: name, Kind: kind, Severity: "critical", CVEs: []string{"CVE-2026-0001"},
		Bundles: map[string]string{nginxBuild: sha}, CreatedBy: "alice", AutoRollback: autoRollback})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.st.PublishRelease(ctx, r.ID, "alice", expedite); err != nil {
		f.t.Fatal(err)
	}
	r, _ = f.st.Release(ctx, r.ID)
	return r, sha
}

func inventoryOf(buildID, name string) *api.Inventory {
	return &api.Inventory{Hostname: "host", Processes: 1, Modules: []api.Module{{BuildID: buildID, Name: name, Processes: 1}}}
}

func releasesOf(resp api.CheckInResponse) []string {
	var out []string
	for _, a := range resp.Assignments {
		out = append(out, a.ReleaseName)
	}
	return out
}

func TestEnroll(t *testing.T) {
	onBoth(t, func(t *testing.T, dsn string) {
		f := newFleet(t, dsn)
		ctx := context.Background()
		pub, _, _ := ed25519.GenerateKey(nil)
		tok := f.token("First", 1)
		var resp api.EnrollResponse
		if code, body := f.call(nil, "POST", api.PathEnroll, api.EnrollRequest{Token: tok, PublicKey: pub, Hostname: "web1",
			Labels: map[string]string{"role": "web"}}, &resp); code != 200 || resp.Ring != "First" || resp.DeviceID == 0 {
			t.Fatalf("enroll: %d %s %+v", code, body, resp)
		}
		d, err := f.st.Device(ctx, resp.DeviceID)
		if err != nil || d.Hostname != "web1" || d.Labels["role"] != "web" || !bytes.Equal(d.PublicKey, pub) {
			t.Fatalf("stored device %+v, %v", d, err)
		}
		es, _ := f.st.Audit(ctx, 0, 100)
		found := false
		for _, e := range es {
			found = found || e.Action == "device.enroll" && e.Actor == fmt.Sprintf("device/%d", d.ID)
		}
		if !found {
			t.Fatalf("no device.enroll audit entry by device/%d in %+v", d.ID, es)
		}

		pub2, _, _ := ed25519.GenerateKey(nil)
		expired := f.token("First", 5)
		usedUp := f.token("First", 1)
		if code, body := f.call(nil, "POST", api.PathEnroll, api.EnrollRequest{Token: usedUp, PublicKey: pub2}, nil); code != 200 {
			t.Fatalf("enroll: %d %s", code, body)
		}
		pub3, _, _ := ed25519.GenerateKey(nil)
		for _, c := range []struct {
			name  string
			req   api.EnrollRequest
			shift time.Duration
			code  int
			want  string
		}{
			{"duplicate key", api.EnrollRequest{Token: f.token("First", 1), PublicKey: pub}, 0, 409, "already enrolled"},
			{"forged token", api.EnrollRequest{Token: "forged-token-forged-token", PublicKey: pub3}, 0, 401, "token unknown"},
			{"used-up token", api.EnrollRequest{Token: usedUp, PublicKey: pub3}, 0, 401, "used 1 of 1 times"},
			{"short key", api.EnrollRequest{Token: tok, PublicKey: pub3[:16]}, 0, 400, "public_key is 16 bytes"},
			{"long hostname", api.EnrollRequest{Token: tok, PublicKey: pub3, Hostname: strings.Repeat("h", 254)}, 0, 400, "hostname"},
			{"expired token", api.EnrollRequest{Token: expired, PublicKey: pub3}, 2 * time.Hour, 401, "expired"},
		} {
			f.clock.add(c.shift)
			code, body := f.call(nil, "POST", api.PathEnroll, c.req, nil)
			if code != c.code || !strings.Contains(body, c.want) {
				t.Errorf("%s: %d %s; want %d with %q", c.name, code, body, c.code, c.want)
			}
		}
		// The refused key enrolls fine with a good token: nothing was half written.
		f.clock.add(-2 * time.Hour)
		if code, body := f.call(nil, "POST", api.PathEnroll, api.EnrollRequest{Token: f.token("Test", 1), PublicKey: pub3}, nil); code != 200 {
			t.Fatalf("enroll after refusals: %d %s", code, body)
		}
	})
}

func TestCheckInAuthentication(t *testing.T) {
	onBoth(t, func(t *testing.T, dsn string) {
		f := newFleet(t, dsn)
		d := f.enroll("Test")
		other := f.enroll("Test")
		ci := api.CheckIn{AgentVersion: "1.0", Ready: true, InventoryHash: "h1", Inventory: inventoryOf(nginxBuild, "nginx")}
		resp := f.checkIn(d, ci)
		if resp.DeviceID != d.id || resp.Ring != "Test" || resp.Generation < 1 || resp.NeedInventory {
			t.Fatalf("check-in answer %+v", resp)
		}
		if s := resp.NextCheckInS; s < 45 || s > 75 {
			t.Fatalf("next check-in in %gs; want the 60 s interval ±25 %%", s)
		}
		dev, _ := f.st.Device(context.Background(), d.id)
		if dev.LastSeen.IsZero() || dev.InventoryHash != "h1" {
			t.Fatalf("device after check-in: %+v", dev)
		}

		for _, c := range []struct {
			name string
			sign func(*http.Request, []byte)
			code int
			want string
		}{
			{"unsigned", nil, 401, "missing Hotfleet-Device"},
			{"wrong key", func(r *http.Request, b []byte) { api.Sign(r, d.id, other.key, b, time.Now()) }, 401, "does not verify"},
			{"other device's id with my key", func(r *http.Request, b []byte) { api.Sign(r, other.id, d.key, b, time.Now()) }, 401, "does not verify"},
			{"unknown device", func(r *http.Request, b []byte) { api.Sign(r, 9999, d.key, b, time.Now()) }, 401, "not enrolled"},
			{"skewed clock", func(r *http.Request, b []byte) { api.Sign(r, d.id, d.key, b, time.Now().Add(-10*time.Minute)) }, 401, "correct the device's clock"},
		} {
			if code, body := f.send("POST", api.PathCheckIn, ci, c.sign, nil); code != c.code || !strings.Contains(body, c.want) {
				t.Errorf("%s: %d %s; want %d with %q", c.name, code, body, c.code, c.want)
			}
		}
		// The policy clock is not the signature's clock: a rollout days
		// ahead does not make every device's signature stale.
		f.clock.add(72 * time.Hour)
		f.checkIn(d, ci)

		// A body signed for another request does not pass either.
		tampered := func(r *http.Request, b []byte) { api.Sign(r, d.id, d.key, []byte(`{}`), time.Now()) }
		if code, body := f.send("POST", api.PathCheckIn, ci, tampered, nil); code != 401 {
			t.Errorf("tampered body: %d %s", code, body)
		}

		if err := f.st.RevokeDevice(context.Background(), d.id, "alice", "stolen"); err != nil {
			t.Fatal(err)
		}
		code, body := f.call(d, "POST", api.PathCheckIn, ci, nil)
		if code != 403 || !strings.Contains(body, fmt.Sprintf("device %d is revoked; re-enroll it with a new token", d.id)) {
			t.Fatalf("revoked device: %d %s", code, body)
		}
		if code, _ := f.call(d, "GET", api.PathWatch+"?generation=1&timeout=1", nil, nil); code != 403 {
			t.Fatalf("revoked device's watch: %d, want 403", code)
		}
	})
}

func TestNeedInventory(t *testing.T) {
	f := newFleet(t, filepath.Join(t.TempDir(), "server.db"))
	d := f.enroll("Test")
	if r := f.checkIn(d, api.CheckIn{InventoryHash: "h1"}); !r.NeedInventory {
		t.Fatal("a device whose inventory the server never got was not asked for it")
	}
	if r := f.checkIn(d, api.CheckIn{InventoryHash: "h1", Inventory: inventoryOf(nginxBuild, "nginx")}); r.NeedInventory {
		t.Fatal("asked for the inventory the device just sent")
	}
	if r := f.checkIn(d, api.CheckIn{InventoryHash: "h1"}); r.NeedInventory {
		t.Fatal("asked for an inventory whose hash did not change")
	}
	if r := f.checkIn(d, api.CheckIn{InventoryHash: "h2"}); !r.NeedInventory {
		t.Fatal("a changed hash without an inventory was not answered with NeedInventory")
	}
	ms, _ := f.st.DeviceModules(context.Background(), d.id)
	if len(ms) != 1 || ms[0].BuildID != nginxBuild || ms[0].Name != "nginx" {
		t.Fatalf("stored inventory %+v", ms)
	}
	code, body := f.call(d, "POST", api.PathCheckIn, api.CheckIn{Inventory: inventoryOf("not-hex", "x")}, nil)
	if code != 400 || !strings.Contains(body, "inventory.modules[0].build_id") {
		t.Fatalf("bad build-id: %d %s", code, body)
	}
}

func TestAssignmentsFollowRings(t *testing.T) {
	onBoth(t, func(t *testing.T, dsn string) {
		f := newFleet(t, dsn)
		devs := map[string]*device{}
		rings := []string{"Test", "First", "Fast", "Broad", "Last"}
		for _, r := range rings {
			devs[r] = f.enroll(r)
		}
		rel, sha := f.release("nginx-fix", store.KindHotpatch, false, false)
		f.release("nginx-baseline", store.KindBaseline, false, false)
		assigned := func() string {
			var got []string
			for _, r := range rings {
				if resp := f.checkIn(devs[r], api.CheckIn{}); len(resp.Assignments) > 0 {
					got = append(got, r)
				}
			}
			return strings.Join(got, ",")
		}
		for _, step := range []struct {
			shift time.Duration
			want  string
		}{
			{0, "Test"},
			{23 * time.Hour, "Test"},
			{2 * time.Hour, "Test,First"}, // First defers 1 day
			{5 * rollout.Day, "Test,First,Fast"},
			{3*rollout.Day - 2*time.Hour, "Test,First,Fast"},
			{2 * time.Hour, "Test,First,Fast,Broad,Last"}, // the stored Last ring defers 9 days, as Broad
		} {
			f.clock.add(step.shift)
			if got := assigned(); got != step.want {
				t.Fatalf("at +%v: assigned in %s, want %s", f.clock.off, got, step.want)
			}
		}
		resp := f.checkIn(devs["Broad"], api.CheckIn{})
		want := api.Assignment{Release: rel.ID, ReleaseName: "nginx-fix", BuildID: nginxBuild, SHA256: sha, URL: api.PathBundles + sha}
		data, _ := f.st.Bundle(context.Background(), sha)
		want.Size = int64(len(data))
		if len(resp.Assignments) != 1 || resp.Assignments[0] != want {
			t.Fatalf("assignments %+v, want only %+v (the baseline release assigns nothing)", resp.Assignments, want)
		}
	})
}

func TestExpediteAssignsEveryRing(t *testing.T) {
	f := newFleet(t, filepath.Join(t.TempDir(), "server.db"))
	var devs []*device
	for _, r := range []string{"Test", "First", "Fast", "Broad", "Last"} {
		devs = append(devs, f.enroll(r))
	}
	f.release("zero-day", store.KindHotpatch, true, false)
	for _, d := range devs {
		if got := releasesOf(f.checkIn(d, api.CheckIn{})); fmt.Sprint(got) != "[zero-day]" {
			t.Errorf("ring %s: assigned %v right after an expedited publish, want zero-day", d.ring, got)
		}
	}
}

func TestDeviceReleaseStates(t *testing.T) {
	onBoth(t, func(t *testing.T, dsn string) {
		f := newFleet(t, dsn)
		ctx := context.Background()
		rel, sha := f.release("nginx-fix", store.KindHotpatch, false, false)
		state := func(d *device) string {
			st, err := f.st.DeviceReleaseState(ctx, d.id, rel.ID)
			if err != nil {
				return err.Error()
			}
			return st.State + " " + st.Reason
		}
		patched, old, unaffected, failing := f.enroll("Test"), f.enroll("Test"), f.enroll("Test"), f.enroll("Test")
		f.checkIn(patched, api.CheckIn{InventoryHash: "a", Inventory: inventoryOf(nginxBuild, "nginx")})
		if got := state(patched); got != "assigned " {
			t.Fatalf("before applying: %q", got)
		}
		f.checkIn(patched, api.CheckIn{InventoryHash: "a", Bundles: []api.BundleState{{SHA256: sha, Applied: 2}}})
		f.checkIn(old, api.CheckIn{InventoryHash: "b", Inventory: inventoryOf(nginxOldBuild, "nginx")})
		f.checkIn(unaffected, api.CheckIn{InventoryHash: "c", Inventory: inventoryOf(otherBuild, "sshd")})
		f.checkIn(failing, api.CheckIn{InventoryHash: "a", Inventory: inventoryOf(nginxBuild, "nginx"),
			Bundles: []api.BundleState{{SHA256: sha, Failing: 1, Error: "old bytes differ at parse", Permanent: true}}})
		for _, c := range []struct {
			d    *device
			want string
		}{
			{patched, "applied "},
			{old, "needs-restart the device runs another build of a module the release patches; update its package and restart"},
			{unaffected, "not-applicable "},
			{failing, "failed old bytes differ at parse"},
		} {
			if got := state(c.d); got != c.want {
				t.Errorf("device %d: state %q, want %q", c.d.id, got, c.want)
			}
		}
		counts, _ := f.st.Counts(ctx, rel.ID)
		if fmt.Sprint(counts) != "map[Test:map[applied:1 failed:1 needs-restart:1 not-applicable:1]]" {
			t.Fatalf("aggregates %v", counts)
		}
	})
}

func TestPauseAndRollback(t *testing.T) {
	onBoth(t, func(t *testing.T, dsn string) {
		f := newFleet(t, dsn)
		ctx := context.Background()
		has, hasNot := f.enroll("Test"), f.enroll("Test")
		rel, sha := f.release("nginx-fix", store.KindHotpatch, false, false)
		f.checkIn(has, api.CheckIn{InventoryHash: "a", Inventory: inventoryOf(nginxBuild, "nginx")})
		f.checkIn(has, api.CheckIn{InventoryHash: "a", Bundles: []api.BundleState{{SHA256: sha, Applied: 1}}})
		gen0, _ := f.st.Generation(ctx)

		if _, err := f.st.AddPause(ctx, store.Pause{ReleaseID: rel.ID, Actor: "alice", Reason: "investigating a report"}); err != nil {
			t.Fatal(err)
		}
		r := f.checkIn(has, api.CheckIn{InventoryHash: "a", Bundles: []api.BundleState{{SHA256: sha, Applied: 1}}})
		if fmt.Sprint(releasesOf(r)) != "[nginx-fix]" || len(r.Held) != 0 {
			t.Fatalf("a pause took the release from a device that applied it: %+v", r)
		}
		r = f.checkIn(hasNot, api.CheckIn{})
		if len(r.Assignments) != 0 || len(r.Held) != 1 || r.Held[0].State != "paused" || !strings.Contains(r.Held[0].Reason, "investigating a report") {
			t.Fatalf("paused release for a device without it: %+v", r)
		}
		if r.Generation < gen0 {
			t.Fatalf("generation went back: %d < %d", r.Generation, gen0)
		}

		// A pause of the ring holds every release in it.
		ps, _ := f.st.ActivePauses(ctx)
		if err := f.st.ResumePause(ctx, ps[0].ID, "alice"); err != nil {
			t.Fatal(err)
		}
		if r := f.checkIn(hasNot, api.CheckIn{}); len(r.Assignments) != 1 {
			t.Fatalf("after resume: %+v", r)
		}
		if _, err := f.st.AddPause(ctx, store.Pause{Ring: "Test", Actor: "bob", Reason: "freeze"}); err != nil {
			t.Fatal(err)
		}
		// hasNot was assigned but has not applied it: the ring pause holds it.
		r = f.checkIn(hasNot, api.CheckIn{})
		if len(r.Assignments) != 0 || len(r.Held) != 1 || r.Held[0].Ring != "Test" || !strings.Contains(r.Held[0].Reason, "freeze") {
			t.Fatalf("ring pause: %+v", r)
		}

		if err := f.st.SetReleaseState(ctx, rel.ID, "alice", store.ReleaseRolledBack, "bad patch"); err != nil {
			t.Fatal(err)
		}
		for _, d := range []*device{has, hasNot} {
			r := f.checkIn(d, api.CheckIn{})
			if len(r.Assignments) != 0 || len(r.Held) != 1 || r.Held[0].State != "rolled-back" {
				t.Fatalf("device %d after rollback: %+v", d.id, r)
			}
		}
	})
}

// crashReport is an agent crash report as the agent writes it.
func crashReport(pid int, bundles, patches []string) json.RawMessage {
	b, _ := json.Marshal(map[string]any{"kind": "crash", "time": time.Now().UTC(), "pid": pid, "comm": "nginx", "signal": "SIGSEGV",
		"since_apply_s": 3.2, "bundles": bundles, "patches": patches})
	return b
}

func TestCrashReportsHaltTheRelease(t *testing.T) {
	for _, autoRollback := range []bool{false, true} {
		t.Run(fmt.Sprintf("auto-rollback=%v", autoRollback), func(t *testing.T) {
			onBoth(t, func(t *testing.T, dsn string) {
				f := newFleet(t, dsn)
				ctx := context.Background()
				if err := f.st.PutSetting(ctx, store.SettingThresholds, rollout.Thresholds{MinFailures: 2, MaxFailurePercent: 50}, "alice"); err != nil {
					t.Fatal(err)
				}
				rel, sha := f.release("nginx-fix", store.KindHotpatch, false, autoRollback)
				var devs []*device
				for i := 0; i < 3; i++ {
					d := f.enroll("First")
					devs = append(devs, d)
				}
				f.clock.add(25 * time.Hour) // First is eligible
				applied := api.CheckIn{InventoryHash: "a", Inventory: inventoryOf(nginxBuild, "nginx"), Bundles: []api.BundleState{{SHA256: sha, Applied: 1}}}
				for _, d := range devs {
					if r := f.checkIn(d, applied); len(r.Assignments) != 1 {
						t.Fatalf("device %d: %+v", d.id, r)
					}
				}
				post := func(d *device, seq int64, rep json.RawMessage) api.ReportsResponse {
					var resp api.ReportsResponse
					if code, body := f.call(d, "POST", api.PathReports, api.Reports{Reports: []api.ReportItem{{Seq: seq, Report: rep}}}, &resp); code != 200 {
						t.Fatalf("reports: %d %s", code, body)
					}
					return resp
				}
				post(devs[0], 1, crashReport(4242, []string{sha}, nil))
				st, _ := f.st.DeviceReleaseState(ctx, devs[0].id, rel.ID)
				if st.State != "failed" || st.Reason != "crash: SIGSEGV 3.2 s after patch in nginx(4242)" {
					t.Fatalf("state after a crash: %+v", st)
				}
				if ps, _ := f.st.ActivePauses(ctx); len(ps) != 0 {
					t.Fatalf("one crash of 3 halted the release below the threshold of 2: %+v", ps)
				}
				gen0, _ := f.st.Generation(ctx)
				// The second crash names the patch by id:level, as older agents do.
				post(devs[1], 1, crashReport(77, nil, []string{"hf-nginx-fix:1"}))

				ps, _ := f.st.ActivePauses(ctx)
				wantReason := "automatic halt: 2 of 3 reporting devices in ring First failed (66.7 %, thresholds 2 failures and 50 %)"
				if len(ps) != 1 || ps[0].ReleaseID != rel.ID || ps[0].Actor != "rollout" || !strings.HasPrefix(ps[0].Reason, wantReason) {
					t.Fatalf("pauses after 2 of 3 crashed: %+v; want one by rollout: %s", ps, wantReason)
				}
				if gen, _ := f.st.Generation(ctx); gen <= gen0 {
					t.Fatal("the halt did not bump the generation")
				}
				es, _ := f.st.Audit(ctx, 0, 1000)
				var halt *store.AuditEntry
				for i, e := range es {
					if e.Action == "release.halt" {
						halt = &es[i]
					}
				}
				if halt == nil || halt.Actor != "rollout" || halt.Target != fmt.Sprintf("release/%d", rel.ID) {
					t.Fatalf("no release.halt audit entry by rollout: %+v", es)
				}
				det := halt.Details.(map[string]any)
				if det["failed"] != 2.0 || det["reported"] != 3.0 || det["ring"] != "First" || det["min_failures"] != 2.0 {
					t.Fatalf("halt audit details %v", det)
				}
				// A third crash does not halt again.
				post(devs[2], 1, crashReport(5, []string{sha}, nil))
				if ps, _ := f.st.ActivePauses(ctx); len(ps) != 1 {
					t.Fatalf("pauses after a third crash: %+v", ps)
				}
				r, _ := f.st.Release(ctx, rel.ID)
				resp := f.checkIn(devs[0], applied)
				if autoRollback {
					if r.State != store.ReleaseRolledBack || len(resp.Assignments) != 0 || len(resp.Held) != 1 || resp.Held[0].State != "rolled-back" {
						t.Fatalf("auto-rollback: release %s, check-in %+v", r.State, resp)
					}
					return
				}
				if r.State != store.ReleasePaused || len(resp.Assignments) != 1 {
					t.Fatalf("halt without rollback: release %s, check-in %+v (a device that has it keeps it)", r.State, resp)
				}
				// The crash stays on record though the device now says applied.
				if st, _ := f.st.DeviceReleaseState(ctx, devs[0].id, rel.ID); st.State != "failed" || !strings.HasPrefix(st.Reason, "crash") {
					t.Fatalf("a good check-in cleared the crash: %+v", st)
				}
				// A new device in the ring is held.
				late := f.enroll("First")
				if r := f.checkIn(late, api.CheckIn{}); len(r.Assignments) != 0 || len(r.Held) != 1 || !strings.Contains(r.Held[0].Reason, "automatic halt") {
					t.Fatalf("a device new to the halted release: %+v", r)
				}
			})
		})
	}
}

func TestReportsDeduplicate(t *testing.T) {
	onBoth(t, func(t *testing.T, dsn string) {
		f := newFleet(t, dsn)
		d := f.enroll("Test")
		rep := func(seqs ...int64) api.ReportsResponse {
			var req api.Reports
			for _, s := range seqs {
				req.Reports = append(req.Reports, api.ReportItem{Seq: s, Report: json.RawMessage(fmt.Sprintf(`{"kind":"applied","pid":%d}`, s))})
			}
			var resp api.ReportsResponse
			if code, body := f.call(d, "POST", api.PathReports, req, &resp); code != 200 {
				t.Fatalf("reports: %d %s", code, body)
			}
			return resp
		}
		if r := rep(1, 2); r.Accepted != 2 || r.Duplicates != 0 {
			t.Fatalf("first post: %+v", r)
		}
		if r := rep(2, 3); r.Accepted != 1 || r.Duplicates != 1 {
			t.Fatalf("resend of 2 with 3: %+v, want 1 accepted and 1 duplicate", r)
		}
		stored, _ := f.st.Reports(context.Background(), d.id, 0)
		if len(stored) != 3 || !strings.Contains(string(stored[2].Body), `"pid":3`) {
			t.Fatalf("stored reports %+v", stored)
		}
		var many api.Reports
		for i := 0; i <= maxReportItems; i++ {
			many.Reports = append(many.Reports, api.ReportItem{Seq: int64(10 + i), Report: json.RawMessage(`{}`)})
		}
		if code, _ := f.call(d, "POST", api.PathReports, many, nil); code != http.StatusRequestEntityTooLarge {
			t.Fatalf("%d reports in one post: %d, want 413", len(many.Reports), code)
		}
		if code, body := f.call(d, "POST", api.PathReports, api.Reports{Reports: []api.ReportItem{{Seq: 0, Report: json.RawMessage(`{}`)}}}, nil); code != 400 || !strings.Contains(body, "seq") {
			t.Fatalf("seq 0: %d %s", code, body)
		}
	})
}

func TestWatch(t *testing.T) {
	onBoth(t, func(t *testing.T, dsn string) {
		f := newFleet(t, dsn)
		ctx := context.Background()
		d := f.enroll("Test")
		gen := f.checkIn(d, api.CheckIn{}).Generation

		start := time.Now()
		var resp api.WatchResponse
		if code, body := f.call(d, "GET", fmt.Sprintf("%s?generation=%d&timeout=1", api.PathWatch, gen), nil, &resp); code != 200 {
			t.Fatalf("watch: %d %s", code, body)
		}
		if took := time.Since(start); resp.Changed || resp.Generation != gen || took < 900*time.Millisecond || took > 3*time.Second {
			t.Fatalf("watch without a change: %+v after %v, want unchanged after 1 s", resp, took)
		}

		go func() {
			time.Sleep(300 * time.Millisecond)
			if err := f.st.BumpGeneration(ctx); err != nil {
				t.Error(err)
			}
		}()
		start = time.Now()
		if code, body := f.call(d, "GET", fmt.Sprintf("%s?generation=%d&timeout=30", api.PathWatch, gen), nil, &resp); code != 200 {
			t.Fatalf("watch: %d %s", code, body)
		}
		if took := time.Since(start); !resp.Changed || resp.Generation <= gen || took > 300*time.Millisecond+1500*time.Millisecond {
			t.Fatalf("watch over a bump: %+v after %v, want changed within about a second", resp, took)
		}

		for _, q := range []string{"generation=x", fmt.Sprintf("generation=%d&timeout=56", gen), fmt.Sprintf("generation=%d&timeout=0", gen)} {
			if code, _ := f.call(d, "GET", api.PathWatch+"?"+q, nil, nil); code != 400 {
				t.Errorf("watch ?%s: %d, want 400", q, code)
			}
		}
	})
}

func TestBundleDownload(t *testing.T) {
	f := newFleet(t, filepath.Join(t.TempDir(), "server.db"))
	data := testBundle(t, "hf-x", 1, nginxBuild, "nginx")
	sha, _, err := f.st.PutBundle(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	get := func(path, inm string) *http.Response {
		req, _ := http.NewRequest("GET", f.url+path, nil)
		if inm != "" {
			req.Header.Set("If-None-Match", inm)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	resp := get(api.PathBundles+sha, "")
	body, _ := io.ReadAll(resp.Body)
	h := resp.Header
	if resp.StatusCode != 200 || !bytes.Equal(body, data) || h.Get("Content-Type") != "application/octet-stream" ||
		h.Get("Cache-Control") != "public, max-age=31536000, immutable" || h.Get("ETag") != `"`+sha+`"` || h.Get("Content-Length") != fmt.Sprint(len(data)) {
		t.Fatalf("bundle download: %d, %d bytes, headers %v", resp.StatusCode, len(body), h)
	}
	if resp := get(api.PathBundles+sha, `"`+sha+`"`); resp.StatusCode != 304 || resp.Header.Get("ETag") != `"`+sha+`"` {
		t.Fatalf("If-None-Match with the ETag: %d, want 304", resp.StatusCode)
	}
	if resp := get(api.PathBundles+sha, `"0000"`); resp.StatusCode != 200 {
		t.Fatalf("If-None-Match with another ETag: %d, want 200", resp.StatusCode)
	}
	if resp := get(api.PathBundles+strings.Repeat("0", 64), ""); resp.StatusCode != 404 {
		t.Fatalf("unknown bundle: %d, want 404", resp.StatusCode)
	}
	for _, bad := range []string{strings.ToUpper(sha), sha[:63], "../../etc/passwd"} {
		if resp := get(api.PathBundles+bad, ""); resp.StatusCode != 400 && resp.StatusCode != 404 {
			t.Errorf("bundle address %q: %d, want 400", bad, resp.StatusCode)
		}
	}
	if resp := get(api.PathBundles+strings.ToUpper(sha), ""); resp.StatusCode != 400 {
		t.Errorf("upper-case address: %d, want 400", resp.StatusCode)
	}
}

func TestPermanentFailureReport(t *testing.T) {
	f := newFleet(t, filepath.Join(t.TempDir(), "server.db"))
	ctx := context.Background()
	rel, sha := f.release("nginx-fix", store.KindHotpatch, false, false)
	byID, bySHA := f.enroll("Test"), f.enroll("Test")
	for _, d := range []*device{byID, bySHA} {
		f.checkIn(d, api.CheckIn{InventoryHash: "a", Inventory: inventoryOf(nginxBuild, "nginx")})
	}
	post := func(d *device, rep string) {
		if code, body := f.call(d, "POST", api.PathReports, api.Reports{Reports: []api.ReportItem{{Seq: 1, Report: json.RawMessage(rep)}}}, nil); code != 200 {
			t.Fatalf("reports: %d %s", code, body)
		}
	}
	post(byID, `{"kind":"failed","patch_id":"hf-nginx-fix","level":1,"error":"old bytes differ at parse","permanent":true}`)
	post(bySHA, `{"kind":"failed","bundle":"`+sha+`","error":"build-id mismatch","permanent":true}`)
	for d, want := range map[*device]string{byID: "apply failed for good: old bytes differ at parse", bySHA: "apply failed for good: build-id mismatch"} {
		if st, err := f.st.DeviceReleaseState(ctx, d.id, rel.ID); err != nil || st.State != "failed" || st.Reason != want {
			t.Errorf("device %d: %+v, %v; want failed: %s", d.id, st, err, want)
		}
	}
	// A retryable failure is not a verdict.
	other := f.enroll("Test")
	f.checkIn(other, api.CheckIn{InventoryHash: "a", Inventory: inventoryOf(nginxBuild, "nginx")})
	post(other, `{"kind":"failed","patch_id":"hf-nginx-fix","level":1,"error":"function is running"}`)
	if st, _ := f.st.DeviceReleaseState(ctx, other.id, rel.ID); st.State != "assigned" {
		t.Errorf("a retryable failure set the state %+v", st)
	}
}

// TestDamagedBundleDoesNotStallCheckIns: a stored bundle that no longer
// decodes is still assigned (agents refuse it and say why) instead of
// failing every device's check-in.
func TestDamagedBundleDoesNotStallCheckIns(t *testing.T) {
	f := newFleet(t, filepath.Join(t.TempDir(), "server.db"))
	ctx := context.Background()
	sha, _, err := f.st.PutBundle(ctx, []byte("HFPATCH\x00 damaged"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := f.st.CreateRelease(ctx, store.NewRelease{Name: "damaged", Kind: store.KindHotpatch, Severity: "low",
		Bundles: map[string]string{nginxBuild: sha}, CreatedBy: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.st.PublishRelease(ctx, r.ID, "alice", false); err != nil {
		t.Fatal(err)
	}
	d := f.enroll("Test")
	resp := f.checkIn(d, api.CheckIn{InventoryHash: "a", Inventory: inventoryOf(nginxBuild, "nginx")})
	if len(resp.Assignments) != 1 || resp.Assignments[0].Size != int64(len("HFPATCH\x00 damaged")) {
		t.Fatalf("check-in with a damaged bundle: %+v", resp)
	}
}
