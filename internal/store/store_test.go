package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"hotfleet/internal/testenv"
)

func TestMain(m *testing.M) { testenv.PostgreSQLMain(m) }

// backend makes a fresh, empty database of one dialect and returns its DSN.
type backend struct {
	name string
	dsn  func(t *testing.T) string
}

var backends = []backend{
	{"sqlite", func(t *testing.T) string { return filepath.Join(t.TempDir(), "server.db") }},
	{"postgres", func(t *testing.T) string { return testenv.PostgreSQL(t) }},
}

// each runs fn against a fresh database of every dialect.
func each(t *testing.T, fn func(t *testing.T, dsn string)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) { fn(t, b.dsn(t)) })
	}
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func openT(t *testing.T, dsn string) *Store {
	t.Helper()
	s, err := Open(context.Background(), dsn, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// fakeClock is a settable clock for expiry tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func key(i int) []byte { return []byte(fmt.Sprintf("ed25519-public-key-%04d", i)) }

func TestEnrollmentTokens(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s := openT(t, dsn)
		clock := &fakeClock{t: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
		s.SetClock(clock.now)

		secret, tok, err := s.CreateToken(ctx, NewToken{CreatedBy: "alice", TTL: time.Hour, MaxUses: 2, Ring: "Test", Labels: map[string]string{"site": "fra"}})
		if err != nil {
			t.Fatal(err)
		}
		if len(secret) < 43 { // 256 bits in base64
			t.Fatalf("token secret %q is shorter than 256 bits", secret)
		}
		// Only a hash is stored: the secret is in no column.
		var hash []byte
		if err := s.w.QueryRowContext(ctx, s.q("SELECT token_hash FROM enrollment_tokens WHERE id = ?"), tok.ID).Scan(&hash); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(hash), secret) || len(hash) != 32 {
			t.Fatalf("token_hash is %x, want the 32-byte SHA-256 of the secret", hash)
		}

		d1, err := s.Enroll(ctx, secret, NewDevice{PublicKey: key(1), Hostname: "web1", Labels: map[string]string{"role": "web"}})
		if err != nil {
			t.Fatal(err)
		}
		if d1.RingPin != "Test" || d1.Labels["site"] != "fra" || d1.Labels["role"] != "web" || d1.TokenID != tok.ID {
			t.Fatalf("enrolled device %+v did not get the token's ring and labels merged with its own", d1)
		}
		got, err := s.Device(ctx, d1.ID)
		if err != nil || got.RingPin != "Test" || got.Labels["site"] != "fra" || got.State != DeviceActive || !got.EnrolledAt.Equal(clock.now()) {
			t.Fatalf("stored device %+v, %v", got, err)
		}

		// A key already enrolled fails and does not burn a use.
		if _, err := s.Enroll(ctx, secret, NewDevice{PublicKey: key(1)}); !errors.Is(err, ErrConflict) {
			t.Fatalf("enrolling a known key: %v, want ErrConflict", err)
		}
		if _, err := s.Enroll(ctx, secret, NewDevice{PublicKey: key(2)}); err != nil {
			t.Fatalf("second use of a 2-use token: %v", err)
		}
		if _, err := s.Enroll(ctx, secret, NewDevice{PublicKey: key(3)}); !errors.Is(err, ErrTokenUsedUp) {
			t.Fatalf("third use of a 2-use token: %v, want ErrTokenUsedUp", err)
		}
		if _, err := s.Enroll(ctx, "no-such-token", NewDevice{PublicKey: key(4)}); !errors.Is(err, ErrTokenUnknown) {
			t.Fatalf("unknown token: %v, want ErrTokenUnknown", err)
		}

		secret2, _, err := s.CreateToken(ctx, NewToken{CreatedBy: "alice", TTL: time.Hour, MaxUses: 10})
		if err != nil {
			t.Fatal(err)
		}
		clock.add(time.Hour)
		if _, err := s.Enroll(ctx, secret2, NewDevice{PublicKey: key(5)}); !errors.Is(err, ErrTokenExpired) {
			t.Fatalf("token at its expiry: %v, want ErrTokenExpired", err)
		}
		if _, err := s.DeviceByKey(ctx, key(5)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("a refused enrollment left a device: %v", err)
		}
	})
}

// Enrollments racing for the last uses of a token: exactly MaxUses win.
func TestEnrollmentRace(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s := openT(t, dsn)
		const uses, racers = 3, 8
		secret, _, err := s.CreateToken(ctx, NewToken{CreatedBy: "alice", TTL: time.Hour, MaxUses: uses})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, racers)
		for i := range racers {
			wg.Go(func() { _, errs[i] = s.Enroll(ctx, secret, NewDevice{PublicKey: key(100 + i)}) })
		}
		wg.Wait()
		ok, usedUp := 0, 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, ErrTokenUsedUp):
				usedUp++
			default:
				t.Errorf("racing enrollment: %v", err)
			}
		}
		if ok != uses || usedUp != racers-uses {
			t.Fatalf("%d enrollments won and %d were refused, want %d and %d", ok, usedUp, uses, racers-uses)
		}
	})
}

func TestDevices(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s := openT(t, dsn)
		a, err := s.CreateDevice(ctx, NewDevice{PublicKey: key(1), Hostname: "a"})
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.CreateDevice(ctx, NewDevice{PublicKey: key(2), Hostname: "b"})
		if err != nil {
			t.Fatal(err)
		}
		// Ids are never reused, even after the newest device row is gone.
		if _, err := s.w.ExecContext(ctx, s.q("DELETE FROM devices WHERE id = ?"), b.ID); err != nil {
			t.Fatal(err)
		}
		c, err := s.CreateDevice(ctx, NewDevice{PublicKey: key(3), Hostname: "c"})
		if err != nil {
			t.Fatal(err)
		}
		if c.ID <= b.ID {
			t.Fatalf("device ids %d, %d, then %d after deleting %d: an id was reused", a.ID, b.ID, c.ID, b.ID)
		}

		if err := s.TouchDevice(ctx, a.ID, "inv-1"); err != nil {
			t.Fatal(err)
		}
		if err := s.TouchDevice(ctx, a.ID, ""); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Device(ctx, a.ID); got.InventoryHash != "inv-1" || got.LastSeen.IsZero() {
			t.Fatalf("after check-ins: inventory hash %q, last seen %v", got.InventoryHash, got.LastSeen)
		}

		if err := s.RetireDevice(ctx, a.ID, "alice", "decommissioned"); err != nil {
			t.Fatal(err)
		}
		if err := s.RevokeDevice(ctx, c.ID, "alice", "key leaked"); err != nil {
			t.Fatal(err)
		}
		if err := s.RetireDevice(ctx, c.ID, "alice", ""); !errors.Is(err, ErrConflict) {
			t.Fatalf("retiring a revoked device: %v, want ErrConflict", err)
		}
		if err := s.RevokeDevice(ctx, 999999, "alice", ""); !errors.Is(err, ErrNotFound) {
			t.Fatalf("revoking a missing device: %v, want ErrNotFound", err)
		}
		for id, want := range map[int64]DeviceState{a.ID: DeviceRetired, c.ID: DeviceRevoked} {
			if got, err := s.DeviceByKey(ctx, map[int64][]byte{a.ID: key(1), c.ID: key(3)}[id]); err != nil || got.State != want {
				t.Fatalf("device %d is %q (%v), want %q", id, got.State, err, want)
			}
		}
		es, err := s.Audit(ctx, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		var actions []string
		for _, e := range es {
			actions = append(actions, e.Action+" "+e.Target+" "+fmt.Sprint(e.Details.(map[string]any)["reason"]))
		}
		want := []string{fmt.Sprintf("device.retired device/%d decommissioned", a.ID), fmt.Sprintf("device.revoked device/%d key leaked", c.ID)}
		if fmt.Sprint(actions) != fmt.Sprint(want) {
			t.Fatalf("audit log %q, want %q", actions, want)
		}
	})
}

func TestBundlesAndReleases(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s := openT(t, dsn)
		data := []byte("HFP1 bundle bytes")
		sha, created, err := s.PutBundle(ctx, data)
		if err != nil || !created {
			t.Fatalf("first put: created %v, %v", created, err)
		}
		sha2, created, err := s.PutBundle(ctx, data)
		if err != nil || created || sha2 != sha {
			t.Fatalf("second put of the same bytes: %s created %v, %v; want %s not created", sha2, created, err, sha)
		}
		if got, err := s.Bundle(ctx, sha); err != nil || string(got) != string(data) {
			t.Fatalf("bundle %s read back %q, %v", sha, got, err)
		}
		if _, err := s.Bundle(ctx, strings.Repeat("0", 64)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("missing bundle: %v, want ErrNotFound", err)
		}

		if _, err := s.CreateRelease(ctx, NewRelease{Name: "bad", Kind: KindHotpatch, Severity: "critical", CreatedBy: "alice",
			Bundles: map[string]string{"b0": strings.Repeat("1", 64)}}); err == nil {
			t.Fatal("a release naming a bundle never uploaded was stored")
		}
		r, err := s.CreateRelease(ctx, NewRelease{Name: "2026-11 nginx", Kind: KindHotpatch, Severity: "critical",
			CVEs: []string{"CVE-2013-2028"}, Notes: "chunked", CreatedBy: "alice", Bundles: map[string]string{"a1b2": sha}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateRelease(ctx, NewRelease{Name: "2026-11 nginx", Kind: KindHotpatch, Severity: "low", CreatedBy: "bob"}); !errors.Is(err, ErrConflict) {
			t.Fatalf("duplicate release name: %v, want ErrConflict", err)
		}
		if err := s.PublishRelease(ctx, r.ID, "alice", false); err != nil {
			t.Fatal(err)
		}
		if err := s.PublishRelease(ctx, r.ID, "alice", false); !errors.Is(err, ErrConflict) {
			t.Fatalf("publishing twice: %v, want ErrConflict", err)
		}
		got, err := s.Release(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State != ReleasePublished || got.PublishedAt.IsZero() || !got.ExpeditedAt.IsZero() ||
			got.Bundles["a1b2"] != sha || len(got.CVEs) != 1 || got.CVEs[0] != "CVE-2013-2028" {
			t.Fatalf("published release read back as %+v", got)
		}
		if err := s.ExpediteRelease(ctx, r.ID, "alice"); err != nil {
			t.Fatal(err)
		}
		if err := s.SetReleaseState(ctx, r.ID, "rollout", ReleasePaused, "First: 3 of 10 devices failed"); err != nil {
			t.Fatal(err)
		}
		if err := s.SetReleaseState(ctx, r.ID, "rollout", ReleaseRolledBack, "halted"); err != nil {
			t.Fatal(err)
		}
		if err := s.SetReleaseState(ctx, r.ID, "alice", ReleasePublished, ""); !errors.Is(err, ErrConflict) {
			t.Fatalf("resuming a rolled-back release: %v, want ErrConflict", err)
		}
		got, _ = s.Release(ctx, r.ID)
		if got.State != ReleaseRolledBack || got.ExpeditedAt.IsZero() {
			t.Fatalf("release after expedite, pause, rollback: %+v", got)
		}

		// Pauses per release and per ring.
		p1, err := s.AddPause(ctx, Pause{ReleaseID: r.ID, Actor: "alice", Reason: "vendor advisory"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.AddPause(ctx, Pause{Ring: "Broad", Actor: "bob", Reason: "freeze"}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AddPause(ctx, Pause{Ring: "NoSuchRing", Actor: "bob", Reason: "x"}); err == nil {
			t.Fatal("a pause of an unknown ring was stored")
		}
		if err := s.ResumePause(ctx, p1.ID, "alice"); err != nil {
			t.Fatal(err)
		}
		if err := s.ResumePause(ctx, p1.ID, "alice"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("resuming twice: %v, want ErrNotFound", err)
		}
		ps, err := s.ActivePauses(ctx)
		if err != nil || len(ps) != 1 || ps[0].Ring != "Broad" || ps[0].ReleaseID != 0 || ps[0].Reason != "freeze" {
			t.Fatalf("active pauses %+v, %v; want the Broad freeze only", ps, err)
		}

		rings, err := s.Rings(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, rg := range rings {
			names = append(names, fmt.Sprintf("%s:%d:%v:%v", rg.Name, rg.Percent, int64(rg.Deferral/(24*time.Hour)), rg.PinnedOnly))
		}
		if want := "[Test:0:0:true First:1:1:false Fast:9:6:false Broad:90:9:false Last:0:9:true]"; fmt.Sprint(names) != want {
			t.Fatalf("default rings %v, want %s", names, want)
		}
		if err := s.PutRing(ctx, Ring{Name: "Fast", Position: 2, Percent: 19, Deferral: 48 * time.Hour}, "alice"); err != nil {
			t.Fatal(err)
		}
		rings, _ = s.Rings(ctx)
		if rings[2].Percent != 19 || rings[2].Deferral != 48*time.Hour {
			t.Fatalf("ring Fast after PutRing: %+v", rings[2])
		}
	})
}

// Eight goroutines move devices between states; the aggregates must equal
// a scan of the per-device rows and the states each device ended in.
func TestCountsUnderConcurrency(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s := openT(t, dsn)
		r, err := s.CreateRelease(ctx, NewRelease{Name: "r", Kind: KindHotpatch, Severity: "important", CreatedBy: "alice"})
		if err != nil {
			t.Fatal(err)
		}
		const devices, workers, steps = 24, 8, 12
		ids := make([]int64, devices)
		for i := range ids {
			d, err := s.CreateDevice(ctx, NewDevice{PublicKey: key(i)})
			if err != nil {
				t.Fatal(err)
			}
			ids[i] = d.ID
		}
		rings := []string{"First", "Fast", "Broad"}
		states := []string{"assigned", "applied", "failed", "not-applicable"}
		start := time.Now()
		var wg sync.WaitGroup
		errs := make(chan error, workers*steps)
		for w := range workers {
			wg.Go(func() {
				// Every worker touches every device, so updates of one
				// device collide; the step decides the ring and state.
				for step := range steps {
					for i, id := range ids {
						ring := rings[(i+w)%len(rings)]
						state := states[(i+w+step)%len(states)]
						if err := s.SetDeviceReleaseState(ctx, id, r.ID, ring, state, fmt.Sprintf("w%d", w)); err != nil {
							errs <- err
							return
						}
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		t.Logf("%s: %d state changes by %d goroutines in %v", s.Dialect(), workers*steps*devices, workers, time.Since(start))

		got, err := s.Counts(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		scan := RingCounts{}
		var total int64
		for _, id := range ids {
			st, err := s.DeviceReleaseState(ctx, id, r.ID)
			if err != nil {
				t.Fatal(err)
			}
			if scan[st.Ring] == nil {
				scan[st.Ring] = map[string]int64{}
			}
			scan[st.Ring][st.State]++
			total++
		}
		if fmt.Sprint(got) != fmt.Sprint(scan) {
			t.Fatalf("aggregates %v, scan of device states %v", got, scan)
		}
		var sum int64
		for _, m := range got {
			for _, n := range m {
				sum += n
			}
		}
		if sum != devices {
			t.Fatalf("aggregates count %d devices, want %d", sum, devices)
		}
		var neg int
		if err := s.r.QueryRowContext(ctx, "SELECT count(*) FROM release_ring_counts WHERE n < 0").Scan(&neg); err != nil || neg != 0 {
			t.Fatalf("%d negative aggregates (%v)", neg, err)
		}
	})
}

func TestReportsIdempotent(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s := openT(t, dsn)
		d, err := s.CreateDevice(ctx, NewDevice{PublicKey: key(1)})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			seq     int64
			body    string
			wantDup bool
		}{
			{1, `{"applied":1}`, false},
			{1, `{"applied":"resent"}`, true},
			{2, `{"applied":2}`, false},
			{1, `{"applied":"late"}`, true},
		} {
			dup, err := s.InsertReport(ctx, d.ID, c.seq, []byte(c.body))
			if err != nil || dup != c.wantDup {
				t.Fatalf("report %d %s: duplicate %v, %v; want %v", c.seq, c.body, dup, err, c.wantDup)
			}
		}
		rs, err := s.Reports(ctx, d.ID, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(rs) != 2 || string(rs[0].Body) != `{"applied":1}` || string(rs[1].Body) != `{"applied":2}` {
			t.Fatalf("stored reports %+v, want seq 1 and 2 as first sent", rs)
		}
		if _, err := s.InsertReport(ctx, d.ID, 3, []byte{0xff, 0xfe}); err == nil {
			t.Fatal("a report body that is not UTF-8 was stored")
		}
		if _, err := s.InsertReport(ctx, 424242, 1, []byte("{}")); err == nil {
			t.Fatal("a report of an unknown device was stored")
		}
	})
}

func TestAuditAppendOnly(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s := openT(t, dsn)
		if err := s.AppendAudit(ctx, AuditEntry{Actor: "rollout", Action: "release.halt", Target: "release/7",
			Details: map[string]any{"ring": "First", "failed": 3, "of": 10}, RemoteAddr: "192.0.2.1:4242"}); err != nil {
			t.Fatal(err)
		}
		es, err := s.Audit(ctx, 0, 10)
		if err != nil || len(es) != 1 {
			t.Fatalf("audit log %+v, %v", es, err)
		}
		e := es[0]
		if e.Actor != "rollout" || e.RemoteAddr != "192.0.2.1:4242" || e.Details.(map[string]any)["failed"] != float64(3) || e.At.IsZero() {
			t.Fatalf("audit entry read back as %+v", e)
		}
		for _, q := range []string{"UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"} {
			if _, err := s.w.ExecContext(ctx, q); err == nil || !strings.Contains(err.Error(), "append-only") {
				t.Fatalf("%s: %v, want the append-only refusal", q, err)
			}
		}
		if es, _ := s.Audit(ctx, 0, 10); len(es) != 1 || es[0].Actor != "rollout" {
			t.Fatalf("audit log changed: %+v", es)
		}
	})
}

// Two stores on one database, as two server replicas: both start together,
// only one migrates, and each sees the other's writes at once.
func TestTwoReplicas(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		var a, b *Store
		var errA, errB error
		var wg sync.WaitGroup
		wg.Go(func() { a, errA = Open(ctx, dsn, testLog(t)) })
		wg.Go(func() { b, errB = Open(ctx, dsn, testLog(t)) })
		wg.Wait()
		if errA != nil || errB != nil {
			t.Fatalf("replicas starting together: %v; %v", errA, errB)
		}
		defer a.Close()
		defer b.Close()
		all := append(a.Applied(), b.Applied()...)
		sort.Ints(all)
		var want []int
		for v := 1; v <= SchemaVersion(); v++ {
			want = append(want, v)
		}
		if fmt.Sprint(all) != fmt.Sprint(want) {
			t.Fatalf("replicas applied %v and %v; want each of %v applied by exactly one", a.Applied(), b.Applied(), want)
		}
		var rows int
		if err := a.r.QueryRowContext(ctx, "SELECT count(*) FROM schema_migrations").Scan(&rows); err != nil || rows != SchemaVersion() {
			t.Fatalf("schema_migrations has %d rows (%v), want %d", rows, err, SchemaVersion())
		}

		d, err := a.CreateDevice(ctx, NewDevice{PublicKey: key(1), Hostname: "on-a"})
		if err != nil {
			t.Fatal(err)
		}
		if got, err := b.Device(ctx, d.ID); err != nil || got.Hostname != "on-a" {
			t.Fatalf("replica b reads device %d as %+v, %v", d.ID, got, err)
		}
		r, err := b.CreateRelease(ctx, NewRelease{Name: "r", Kind: KindBaseline, Severity: "low", CreatedBy: "bob"})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.SetDeviceReleaseState(ctx, d.ID, r.ID, "Fast", "needs-restart", "baseline"); err != nil {
			t.Fatal(err)
		}
		if err := a.SetDeviceReleaseState(ctx, d.ID, r.ID, "Fast", "applied", ""); err != nil {
			t.Fatal(err)
		}
		if c, err := b.Counts(ctx, r.ID); err != nil || fmt.Sprint(c) != "map[Fast:map[applied:1]]" {
			t.Fatalf("replica b counts %v, %v after replica a's update", c, err)
		}

		// Both replicas write the same release's states at once (on SQLite
		// two writers on one file: the busy timeout serializes them).
		const perReplica = 10
		var devs []int64
		for i := range 2 * perReplica {
			dv, err := a.CreateDevice(ctx, NewDevice{PublicKey: key(1000 + i)})
			if err != nil {
				t.Fatal(err)
			}
			devs = append(devs, dv.ID)
		}
		var wg2 sync.WaitGroup
		errs := make(chan error, 4*len(devs))
		for w, st := range []*Store{a, b, a, b} {
			wg2.Go(func() {
				for i, id := range devs {
					state := []string{"assigned", "applied", "failed"}[(i+w)%3]
					if err := st.SetDeviceReleaseState(ctx, id, r.ID, "Broad", state, ""); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg2.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		c, err := a.Counts(ctx, r.ID)
		if err != nil {
			t.Fatal(err)
		}
		var broad int64
		for _, n := range c["Broad"] {
			broad += n
		}
		if broad != int64(len(devs)) || c["Fast"]["applied"] != 1 {
			t.Fatalf("after both replicas wrote: counts %v, want %d devices in Broad and 1 applied in Fast", c, len(devs))
		}

		if err := b.RevokeDevice(ctx, d.ID, "bob", "stolen"); err != nil {
			t.Fatal(err)
		}
		if got, _ := a.Device(ctx, d.ID); got.State != DeviceRevoked {
			t.Fatalf("replica a sees device %d as %q after b revoked it", d.ID, got.State)
		}
	})
}

func TestSchemaTooNewRefused(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s := openT(t, dsn)
		if _, err := s.w.ExecContext(ctx, s.q("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)"),
			SchemaVersion()+1, "9999_from_the_future", 0); err != nil {
			t.Fatal(err)
		}
		before := schemaFingerprint(t, s)
		s.Close()

		_, err := Open(ctx, dsn, testLog(t))
		if !errors.Is(err, ErrSchemaTooNew) || !strings.Contains(err.Error(), fmt.Sprintf("version %d", SchemaVersion()+1)) {
			t.Fatalf("opening a newer schema: %v, want ErrSchemaTooNew naming version %d", err, SchemaVersion()+1)
		}
		s2 := rawOpen(t, dsn)
		if after := schemaFingerprint(t, s2); after != before {
			t.Fatalf("the refused database changed:\nbefore %s\nafter  %s", before, after)
		}
	})
}

// rawOpen opens the database without migrating, to inspect it.
func rawOpen(t *testing.T, dsn string) *Store {
	t.Helper()
	s, err := connect(context.Background(), dsn, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// columns lists table.column for every table, sorted.
func columns(t *testing.T, s *Store) []string {
	t.Helper()
	ctx := context.Background()
	q := `SELECT m.name || '.' || p.name FROM sqlite_master m, pragma_table_info(m.name) p
		WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'`
	if s.dialect == Postgres {
		q = "SELECT table_name || '.' || column_name FROM information_schema.columns WHERE table_schema = 'public'"
	}
	rows, err := s.r.QueryContext(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var cs []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	sort.Strings(cs)
	return cs
}

// schemaFingerprint is the columns, the migrations recorded and every
// table's row count.
func schemaFingerprint(t *testing.T, s *Store) string {
	t.Helper()
	ctx := context.Background()
	cs := columns(t, s)
	var b strings.Builder
	fmt.Fprintln(&b, cs)
	seen := map[string]bool{}
	for _, c := range cs {
		table, _, _ := strings.Cut(c, ".")
		if seen[table] {
			continue
		}
		seen[table] = true
		var n int
		if err := s.r.QueryRowContext(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s=%d ", table, n)
	}
	rows, err := s.r.QueryContext(ctx, "SELECT version, name FROM schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var v int
		var n string
		rows.Scan(&v, &n)
		fmt.Fprintf(&b, "%d:%s ", v, n)
	}
	return b.String()
}

// A migration that fails half-way leaves the schema at the previous
// version, with nothing of the failed migration applied, and the store
// opens again once the migration is fixed.
func TestFailedMigrationKeepsPreviousVersion(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		d := Dialect(filepath.Base(t.Name()))
		v1, err := fs.ReadFile(migrationFiles, "migrations/"+string(d)+"/0001_init.sql")
		if err != nil {
			t.Fatal(err)
		}
		dir := "migrations/" + string(d) + "/"
		good := fstest.MapFS{dir + "0001_init.sql": {Data: v1}}
		s, err := open(ctx, dsn, testLog(t), good)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.CreateDevice(ctx, NewDevice{PublicKey: key(1), Hostname: "kept"}); err != nil {
			t.Fatal(err)
		}
		s.Close()

		broken := fstest.MapFS{
			dir + "0001_init.sql": {Data: v1},
			dir + "0002_half.sql": {Data: []byte(`CREATE TABLE half_done (x INTEGER);
				ALTER TABLE devices ADD COLUMN serial TEXT;
				INSERT INTO devices_typo (x) VALUES (1);`)},
		}
		if _, err := open(ctx, dsn, testLog(t), broken); err == nil || !strings.Contains(err.Error(), "0002_half") ||
			!strings.Contains(err.Error(), "stays at version 1") {
			t.Fatalf("opening with a broken migration 2: %v, want an error naming 0002_half and version 1", err)
		}
		raw := rawOpen(t, dsn)
		fp := schemaFingerprint(t, raw)
		if strings.Contains(fp, "half_done") || strings.Contains(fp, "devices.serial") || strings.Contains(fp, "0002") {
			t.Fatalf("the failed migration left traces: %s", fp)
		}

		fixed := fstest.MapFS{
			dir + "0001_init.sql": {Data: v1},
			dir + "0002_half.sql": {Data: []byte("ALTER TABLE devices ADD COLUMN serial TEXT;")},
		}
		s, err = open(ctx, dsn, testLog(t), fixed)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if fmt.Sprint(s.Applied()) != "[2]" {
			t.Fatalf("after fixing, applied %v, want [2]", s.Applied())
		}
		var host string
		if err := s.r.QueryRowContext(ctx, "SELECT hostname FROM devices WHERE serial IS NULL").Scan(&host); err != nil || host != "kept" {
			t.Fatalf("device after migration 2: %q, %v", host, err)
		}
	})
}

// Both dialects' migrations define the same versions, tables and columns.
func TestDialectsAgree(t *testing.T) {
	lite, err := loadMigrations(embedded, SQLite)
	if err != nil {
		t.Fatal(err)
	}
	pgm, err := loadMigrations(embedded, Postgres)
	if err != nil {
		t.Fatal(err)
	}
	if len(lite) != len(pgm) {
		t.Fatalf("%d sqlite and %d postgres migrations", len(lite), len(pgm))
	}
	for i := range lite {
		if lite[i].name != pgm[i].name {
			t.Fatalf("migration %d is %s on sqlite, %s on postgres", i+1, lite[i].name, pgm[i].name)
		}
	}
	var got []string
	for _, b := range backends {
		got = append(got, fmt.Sprint(columns(t, openT(t, b.dsn(t)))))
	}
	if got[0] != got[1] {
		t.Fatalf("schemas differ:\nsqlite   %s\npostgres %s", got[0], got[1])
	}
}

// Open on PostgreSQL waits for the migration lock, so a replica never
// migrates while another one is.
func TestPostgresMigrationWaitsForLock(t *testing.T) {
	ctx := context.Background()
	dsn := testenv.PostgreSQL(t)
	holder := rawOpen(t, dsn)
	conn, err := holder.w.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", pgMigrationLock); err != nil {
		t.Fatal(err)
	}
	opened := make(chan error, 1)
	go func() {
		s, err := Open(ctx, dsn, testLog(t))
		if err == nil {
			s.Close()
		}
		opened <- err
	}()
	const wait = 500 * time.Millisecond
	select {
	case err := <-opened:
		t.Fatalf("Open returned (%v) while another replica held the migration lock", err)
	case <-time.After(wait):
	}
	var tables int
	if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'").Scan(&tables); err != nil || tables != 0 {
		t.Fatalf("%d tables (%v) created while the lock was held elsewhere", tables, err)
	}
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_unlock($1)", pgMigrationLock); err != nil {
		t.Fatal(err)
	}
	if err := <-opened; err != nil {
		t.Fatalf("Open after the lock was released: %v", err)
	}
}
