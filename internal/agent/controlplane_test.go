package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"hotfleet/internal/api"
	"hotfleet/internal/bundle"
	"hotfleet/internal/outbox"
)

func testBundle(id string, level uint32, idByte byte) *bundle.Bundle {
	h := sha256.Sum256([]byte("old"))
	return &bundle.Bundle{
		ID: id, Level: level, CVEs: []string{"CVE-2026-0001"},
		Modules: []bundle.Module{{
			BuildID: bytes.Repeat([]byte{idByte}, 20), Name: "target", Code: make([]byte, 64),
			Funcs: []bundle.Func{{Name: "f", Site: 0x1139, OldSize: 32, OldHash: h[:], Offset: 0, Size: 32}},
		}},
	}
}

// fakeDevice stands in for the agent's process table.
type fakeDevice struct {
	mu sync.Mutex
	r  deviceReport
	c  chan struct{}
}

func newFakeDevice() *fakeDevice {
	return &fakeDevice{c: make(chan struct{}, 1), r: deviceReport{
		Ready: true, InventoryHash: "hash-1",
		Inventory: &api.Inventory{Hostname: "dev1", Processes: 3, Modules: []api.Module{{BuildID: "abab", Name: "libx.so.1", Processes: 3}}},
	}}
}

func (d *fakeDevice) checkInState() deviceReport {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.r
}
func (d *fakeDevice) outcomes() <-chan struct{} { return d.c }
func (d *fakeDevice) set(f func(r *deviceReport)) {
	d.mu.Lock()
	f(&d.r)
	d.mu.Unlock()
	signal(d.c)
}

func openCP(t *testing.T, f *FakeControlPlane, dir, token string) *ControlPlane {
	t.Helper()
	cp, err := OpenControlPlane(context.Background(), ControlPlaneConfig{Server: f.Srv.URL + "/", StateDir: dir, EnrollToken: token, AgentVersion: "test", Labels: map[string]string{"site": "berlin"}})
	if err != nil {
		t.Fatalf("open the control plane: %v", err)
	}
	return cp
}

// runCP runs the check-in and watch loops until the test ends.
func runCP(t *testing.T, cp *ControlPlane, dev deviceState) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { cp.run(ctx, dev); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func TestControlPlaneEnrollsOnce(t *testing.T) {
	f := NewFakeControlPlane(t, "tok-good")
	dir := t.TempDir()

	_, err := OpenControlPlane(context.Background(), ControlPlaneConfig{Server: f.Srv.URL, StateDir: dir, EnrollToken: "tok-used"})
	if !errors.Is(err, ErrEnrollRefused) || !strings.Contains(err.Error(), "expired or used up") || !strings.Contains(err.Error(), "hotfleet token create") {
		t.Fatalf("a refused token gives %v; want the server's reason and how to get a new token", err)
	}
	if _, err := os.Stat(filepath.Join(dir, identityFile)); err == nil {
		t.Fatal("identity.json written for a refused enrollment")
	}

	cp := openCP(t, f, dir, "tok-good")
	if cp.DeviceID() != 7 {
		t.Fatalf("device id %d, want the server's 7", cp.DeviceID())
	}
	fi, err := os.Stat(filepath.Join(dir, deviceKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("device.key: %v, mode %v; want 0600", err, fi.Mode())
	}
	if b, _ := os.ReadFile(filepath.Join(dir, identityFile)); !strings.Contains(string(b), `"device_id": 7`) || !strings.Contains(string(b), `"ring": "Broad"`) {
		t.Fatalf("identity.json = %s", b)
	}
	if len(f.enrolls) != 2 || f.enrolls[1].Labels["site"] != "berlin" || f.enrolls[1].Hostname == "" {
		t.Fatalf("enrollments %+v: want the refused one and one with hostname and labels", f.enrolls)
	}
	// Once enrolled, the token is not needed: a restart without one uses
	// the identity and does not enroll again.
	cp2 := openCP(t, f, dir, "")
	if cp2.DeviceID() != 7 || len(f.enrolls) != 2 {
		t.Fatalf("restart: device %d after %d enrollments; want 7 after 2", cp2.DeviceID(), len(f.enrolls))
	}
	// An agent that died after enrolling but before saving its identity
	// enrolls again under a new key (the server refuses the old one).
	oldKey, _ := os.ReadFile(filepath.Join(dir, deviceKeyFile))
	os.Remove(filepath.Join(dir, identityFile))
	cp3 := openCP(t, f, dir, "tok-good")
	newKey, _ := os.ReadFile(filepath.Join(dir, deviceKeyFile))
	if cp3.DeviceID() != 8 || bytes.Equal(oldKey, newKey) {
		t.Fatalf("re-enrollment: device %d, key replaced %v; want device 8 under a new key", cp3.DeviceID(), !bytes.Equal(oldKey, newKey))
	}
	// Another server is refused rather than sent this device's id.
	other := NewFakeControlPlane(t, "x")
	_, err = OpenControlPlane(context.Background(), ControlPlaneConfig{Server: other.Srv.URL, StateDir: dir})
	if err == nil || !strings.Contains(err.Error(), "enrolled with "+f.Srv.URL) {
		t.Fatalf("another server: %v", err)
	}
}

func TestControlPlaneCheckInSendsInventoryOnlyWhenNeeded(t *testing.T) {
	f := NewFakeControlPlane(t, "tok")
	f.answer.NextCheckInS = 3600
	cp := openCP(t, f, t.TempDir(), "tok")
	dev := newFakeDevice()
	dev.r.Bundles = []api.BundleState{{SHA256: "aa", Applied: 2, Pending: 1}}
	dev.r.Readiness = []api.Problem{{Check: "yama", Reason: "ptrace_scope=3", Action: "reboot"}}
	runCP(t, cp, dev)

	first := f.WaitCheckIn(t, "the inventory", 5*time.Second, func(c api.CheckIn) bool { return true })
	if first.Inventory == nil || first.InventoryHash != "hash-1" || first.AgentVersion != "test" || len(first.Bundles) != 1 || first.Bundles[0].Applied != 2 || len(first.Readiness) != 1 {
		t.Fatalf("first check-in %+v: want the inventory, its hash, the version, bundle states and readiness", first)
	}
	// An outcome brings a check-in within about a second, without the
	// unchanged inventory.
	t0 := time.Now()
	dev.set(func(r *deviceReport) { r.Bundles[0].Applied = 3 })
	c := f.WaitCheckIn(t, "3 applied", 5*time.Second, func(c api.CheckIn) bool { return len(c.Bundles) == 1 && c.Bundles[0].Applied == 3 })
	if d := time.Since(t0); d > 3*time.Second {
		t.Errorf("the outcome reached the server after %s; want about 1 s", d)
	}
	if c.Inventory != nil || c.InventoryHash != "hash-1" {
		t.Errorf("unchanged inventory sent again (hash %s)", c.InventoryHash)
	}
	// A changed inventory is sent.
	dev.set(func(r *deviceReport) {
		r.InventoryHash = "hash-2"
		r.Inventory = &api.Inventory{Hostname: "dev1", Processes: 4}
	})
	c = f.WaitCheckIn(t, "hash-2", 5*time.Second, func(c api.CheckIn) bool { return c.InventoryHash == "hash-2" })
	if c.Inventory == nil || c.Inventory.Processes != 4 {
		t.Errorf("changed inventory not sent: %+v", c.Inventory)
	}
	// The server asks for it: the next check-in comes at once, with it.
	f.mu.Lock()
	f.answer.NeedInventory = true
	f.mu.Unlock()
	n := len(f.CheckIns())
	dev.set(func(r *deviceReport) { r.Bundles[0].Applied = 4 })
	f.WaitCheckIn(t, "4 applied", 5*time.Second, func(c api.CheckIn) bool { return len(c.Bundles) == 1 && c.Bundles[0].Applied == 4 })
	f.mu.Lock()
	f.answer.NeedInventory = false
	f.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		cs := f.CheckIns()
		if len(cs) > n+1 {
			if cs[n+1].Body.Inventory == nil {
				t.Errorf("the check-in after need_inventory carried no inventory")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no check-in followed need_inventory")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if bad := f.BadSignatures(); len(bad) > 0 {
		t.Errorf("requests with bad signatures: %v", bad)
	}
}

func TestControlPlaneBackoffHonoursRetryAfter(t *testing.T) {
	f := NewFakeControlPlane(t, "tok")
	f.fail = []failure{{status: 503, retryAfter: 2, msg: "the server's database is unavailable; retry later"}}
	cp := openCP(t, f, t.TempDir(), "tok")
	runCP(t, cp, newFakeDevice())
	f.WaitCheckIn(t, "a second try", 6*time.Second, func(api.CheckIn) bool { return len(f.CheckIns()) >= 2 })
	cs := f.CheckIns()
	if gap := cs[1].At.Sub(cs[0].At); gap < 2*time.Second-50*time.Millisecond || gap > 3*time.Second {
		t.Fatalf("retried %s after a 503 with Retry-After: 2; want 2 s", gap)
	}
	deadline := time.Now().Add(2 * time.Second)
	for s := cp.status(); s.LastError != "" || s.Generation == 0; s = cp.status() {
		if time.Now().After(deadline) {
			t.Fatalf("status after the retry worked: %+v", s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestControlPlaneBackoffGrows(t *testing.T) {
	var b backoff
	var bounds []time.Duration
	for range 12 {
		w := b.next(0)
		bounds = append(bounds, w)
		if w <= 0 || w > backoffMax {
			t.Fatalf("wait %s outside (0, %s]", w, backoffMax)
		}
	}
	// Full jitter: each wait is below its doubling bound.
	for i, w := range bounds[:8] {
		if bound := backoffMin << i; w > bound {
			t.Errorf("try %d waited %s, above the bound %s", i, w, bound)
		}
	}
	if w := b.next(time.Hour + time.Minute); w != maxRetryAfter {
		t.Errorf("Retry-After beyond the cap waits %s, want %s", w, maxRetryAfter)
	}
}

func TestControlPlaneRefusesBundleWithWrongHash(t *testing.T) {
	f := NewFakeControlPlane(t, "tok")
	dir := t.TempDir()
	cp := openCP(t, f, dir, "tok")
	shas := f.Assign(testBundle("good", 1, 0xab), testBundle("bad", 1, 0xcd))
	// The server serves other bytes, of the same size, for the second.
	f.mu.Lock()
	evil := bytes.Clone(f.bundles[shas[1]])
	evil[len(evil)-1] ^= 0xff
	f.bundles[shas[1]] = evil
	f.mu.Unlock()

	wait, ok := cp.checkIn(context.Background(), newFakeDevice())
	if !ok || wait > time.Minute {
		t.Fatalf("check-in: ok %v, next in %s; a failed download should retry within a minute", ok, wait)
	}
	as, probs, _ := cp.Assignments(context.Background())
	if len(as) != 1 || as[0].Bundle.ID != "good" || as[0].SHA256 != shas[0] || as[0].Origin != "release rel-good (#1)" {
		t.Fatalf("assignments %+v: want only the good bundle, from its release", as)
	}
	if len(probs) != 1 || !strings.Contains(probs[0].Error, "hash to") || probs[0].Origin != "release rel-bad (#2)" {
		t.Fatalf("problems %+v: want the bad bundle refused for its hash", probs)
	}
	if _, err := os.Stat(cp.bundlePath(shas[1])); err == nil {
		t.Fatal("the bundle with the wrong hash was kept on disk")
	}
	if _, err := os.Stat(cp.bundlePath(shas[0])); err != nil {
		t.Fatalf("the good bundle is not cached: %v", err)
	}
}

func TestControlPlaneAssignmentsSurviveRestartOffline(t *testing.T) {
	f := NewFakeControlPlane(t, "tok")
	dir := t.TempDir()
	cp := openCP(t, f, dir, "tok")
	shas := f.Assign(testBundle("fix", 1, 0xab))
	if _, ok := cp.checkIn(context.Background(), newFakeDevice()); !ok {
		t.Fatal("check-in failed")
	}
	url := f.Srv.URL
	f.Srv.Close()

	// A restart with the server gone: the same assignments, from disk.
	cp2, err := OpenControlPlane(context.Background(), ControlPlaneConfig{Server: url, StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	as, probs, err := cp2.Assignments(context.Background())
	if err != nil || len(probs) > 0 || len(as) != 1 || as[0].SHA256 != shas[0] || as[0].Bundle.ID != "fix" {
		t.Fatalf("offline restart: %v, problems %v, assignments %+v; want the assigned bundle", err, probs, as)
	}
	// A failing check-in keeps them.
	if _, ok := cp2.checkIn(context.Background(), newFakeDevice()); ok {
		t.Fatal("check-in to a closed server worked")
	}
	if as, _, _ := cp2.Assignments(context.Background()); len(as) != 1 {
		t.Fatalf("a failed check-in dropped the assignments: %+v", as)
	}
	if s := cp2.status(); s.LastError == "" || s.Assignments != 1 {
		t.Errorf("status: %+v; want the error and 1 assignment", s)
	}
}

func TestControlPlaneWithdrawnAssignmentDisappears(t *testing.T) {
	f := NewFakeControlPlane(t, "tok")
	cp := openCP(t, f, t.TempDir(), "tok")
	shas := f.Assign(testBundle("a", 1, 0xab), testBundle("b", 1, 0xcd))
	cp.checkIn(context.Background(), newFakeDevice())
	if as, _, _ := cp.Assignments(context.Background()); len(as) != 2 {
		t.Fatalf("%d assignments, want 2", len(as))
	}
	<-cp.changed()
	f.Assign(testBundle("b", 1, 0xcd))
	f.mu.Lock()
	f.answer.Held = []api.Notice{{Release: 1, ReleaseName: "rel-a", State: "paused", Reason: "paused by admin: crash reports"}}
	f.mu.Unlock()
	cp.checkIn(context.Background(), newFakeDevice())
	select {
	case <-cp.changed():
	default:
		t.Fatal("a new answer did not signal the agent")
	}
	as, _, _ := cp.Assignments(context.Background())
	if len(as) != 1 || as[0].Bundle.ID != "b" {
		t.Fatalf("after withdrawal: %+v; want only b", as)
	}
	if _, err := os.Stat(cp.bundlePath(shas[0])); err == nil {
		t.Error("the withdrawn bundle is still cached")
	}
	if s := cp.status(); len(s.Held) != 1 || s.Held[0].State != "paused" {
		t.Errorf("status held %+v", s.Held)
	}
}

func TestControlPlaneWatchTriggersCheckIn(t *testing.T) {
	f := NewFakeControlPlane(t, "tok")
	f.answer.NextCheckInS = 3600
	cp := openCP(t, f, t.TempDir(), "tok")
	runCP(t, cp, newFakeDevice())
	f.WaitCheckIn(t, "the first", 5*time.Second, func(api.CheckIn) bool { return true })
	time.Sleep(300 * time.Millisecond) // the watch is now held
	n := len(f.CheckIns())
	t0 := time.Now()
	f.Bump()
	f.WaitCheckIn(t, "one after the bump", 5*time.Second, func(api.CheckIn) bool { return len(f.CheckIns()) > n })
	if d := time.Since(t0); d > time.Second {
		t.Errorf("check-in %s after the generation changed; want well under 1 s", d)
	}
	time.Sleep(1500 * time.Millisecond)
	if cs := f.CheckIns(); len(cs) != n+1 {
		t.Errorf("%d check-ins after one change; want exactly 1", len(cs)-n)
	}
	if c := f.CheckIns(); c[len(c)-1].Body.Generation != 1 {
		t.Errorf("the check-in carried generation %d, want the last one the server sent (1)", c[len(c)-1].Body.Generation)
	}
}

func TestControlPlaneRevokedKeepsEnforcing(t *testing.T) {
	f := NewFakeControlPlane(t, "tok")
	cp := openCP(t, f, t.TempDir(), "tok")
	f.Assign(testBundle("fix", 1, 0xab))
	cp.checkIn(context.Background(), newFakeDevice())
	f.mu.Lock()
	f.revoked = true
	f.mu.Unlock()
	wait, ok := cp.checkIn(context.Background(), newFakeDevice())
	if ok || wait != revokedRetry {
		t.Fatalf("revoked: ok %v, next in %s; want a failure and %s", ok, wait, revokedRetry)
	}
	if as, _, _ := cp.Assignments(context.Background()); len(as) != 1 {
		t.Fatalf("a revoked device dropped its assignments: %+v", as)
	}
	if s := cp.status(); !s.Revoked || !strings.Contains(s.LastError, "revoked") {
		t.Errorf("status %+v; want revoked with the server's message", s)
	}
}

func TestControlPlaneSendsReports(t *testing.T) {
	f := NewFakeControlPlane(t, "tok")
	cp := openCP(t, f, t.TempDir(), "tok")
	items := []outbox.Item{
		{Seq: 41, Body: []byte(`{"kind":"applied","patch_id":"fix","bundle":"aa"}`)},
		{Seq: 42, Body: []byte(`{"kind":"crash","bundles":["aa"]}`)},
	}
	if err := cp.Send(context.Background(), "machine", items); err != nil {
		t.Fatal(err)
	}
	rs, seqs := f.Reports()
	if len(rs) != 2 || seqs[0] != 41 || seqs[1] != 42 || rs[0].Bundle != "aa" || rs[1].Bundles[0] != "aa" {
		t.Fatalf("received %+v seqs %v", rs, seqs)
	}
	f.mu.Lock()
	f.reportErr = &failure{status: 503, retryAfter: 7, msg: "database down"}
	f.mu.Unlock()
	err := cp.Send(context.Background(), "machine", items)
	var ra *RetryAfterError
	if !errors.As(err, &ra) || ra.After != 7*time.Second || !strings.Contains(err.Error(), "database down") {
		t.Fatalf("503 with Retry-After: %v", err)
	}
	if bad := f.BadSignatures(); len(bad) > 0 {
		t.Errorf("bad signatures: %v", bad)
	}
}

// A request signed for one body does not verify with another: the fake
// server really checks.
func TestControlPlaneSignatureCoversBody(t *testing.T) {
	f := NewFakeControlPlane(t, "tok")
	cp := openCP(t, f, t.TempDir(), "tok")
	cp.key = append([]byte(nil), cp.key...)
	cp.key[0] ^= 1 // another private key: the signature no longer matches the enrolled public key
	err := cp.Send(context.Background(), "m", []outbox.Item{{Seq: 1, Body: []byte(`{}`)}})
	if err == nil || len(f.BadSignatures()) != 1 {
		t.Fatalf("a wrong key: %v, %d bad signatures seen", err, len(f.BadSignatures()))
	}
}

// A new answer reaches enforcement before its downloads end: a withdrawal
// at once, while an assignment replaced by a bundle still downloading (the
// next level for the same module) stays until its successor is on hand.
func TestControlPlaneAnswerTakesEffectBeforeDownloads(t *testing.T) {
	f := NewFakeControlPlane(t, "tok")
	cp := openCP(t, f, t.TempDir(), "tok")
	f.Assign(testBundle("fix", 1, 0xab), testBundle("other", 1, 0xcd))
	cp.checkIn(context.Background(), newFakeDevice())
	<-cp.changed()

	gate := make(chan struct{})
	f.mu.Lock()
	f.gate = gate
	f.mu.Unlock()
	f.Assign(testBundle("fix", 2, 0xab)) // level 2 replaces level 1; "other" is withdrawn
	done := make(chan struct{})
	go func() { cp.checkIn(context.Background(), newFakeDevice()); close(done) }()
	select {
	case <-cp.changed():
	case <-time.After(5 * time.Second):
		t.Fatal("the answer was not handed over while its bundle downloaded")
	}
	as, probs, _ := cp.Assignments(context.Background())
	if len(as) != 1 || as[0].Bundle.ID != "fix" || as[0].Bundle.Level != 1 || len(probs) > 0 {
		t.Fatalf("during the download: %+v, problems %v; want only fix level 1 (other withdrawn at once)", as, probs)
	}
	close(gate)
	<-done
	as, probs, _ = cp.Assignments(context.Background())
	if len(as) != 1 || as[0].Bundle.ID != "fix" || as[0].Bundle.Level != 2 || len(probs) > 0 {
		t.Fatalf("after the download: %+v, problems %v; want fix level 2", as, probs)
	}
}
