package store

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestRecordCheckIn(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s := openT(t, dsn)
		clock := &fakeClock{t: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
		s.SetClock(clock.now)
		d, err := s.CreateDevice(ctx, NewDevice{PublicKey: key(1), Hostname: "web1"})
		if err != nil {
			t.Fatal(err)
		}
		mods := []ModuleRow{{BuildID: "aa", Name: "nginx", Package: "nginx 1.24", Processes: 3}, {BuildID: "bb", Name: "libc.so.6", Processes: 40},
			{BuildID: "aa", Name: "nginx", Processes: 1}}
		hash, err := s.RecordCheckIn(ctx, d.ID, CheckInRecord{Ready: true, AgentVersion: "1.2.3", Readiness: []byte(`[]`),
			State: []byte(`{"bundles":[]}`), InventoryHash: "h1", Modules: mods})
		if err != nil || hash != "h1" {
			t.Fatalf("first check-in: stored hash %q, %v; want h1", hash, err)
		}
		got, err := s.DeviceModules(ctx, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != "[{aa nginx nginx 1.24 4} {bb libc.so.6  40}]" {
			t.Fatalf("stored inventory %v: want aa (4 processes, duplicates summed) and bb", got)
		}
		var ready bool
		var version string
		if err := s.r.QueryRowContext(ctx, s.q("SELECT ready, agent_version FROM devices WHERE id = ?"), d.ID).Scan(&ready, &version); err != nil || !ready || version != "1.2.3" {
			t.Fatalf("device row: ready %v, agent %q, %v", ready, version, err)
		}

		// A check-in without an inventory keeps the stored one and its hash,
		// so the server can tell the device's new hash is not stored yet.
		clock.add(time.Minute)
		hash, err = s.RecordCheckIn(ctx, d.ID, CheckInRecord{InventoryHash: "h2"})
		if err != nil || hash != "h1" {
			t.Fatalf("check-in without inventory: stored hash %q, %v; want h1 kept", hash, err)
		}
		if got, _ := s.DeviceModules(ctx, d.ID); len(got) != 2 {
			t.Fatalf("inventory after a check-in without one: %v", got)
		}
		dev, _ := s.Device(ctx, d.ID)
		if !dev.LastSeen.Equal(clock.now()) {
			t.Fatalf("last seen %v, want %v", dev.LastSeen, clock.now())
		}
		// An empty inventory is an inventory: it replaces the modules.
		if _, err := s.RecordCheckIn(ctx, d.ID, CheckInRecord{InventoryHash: "h3", Modules: []ModuleRow{}}); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.DeviceModules(ctx, d.ID); len(got) != 0 {
			t.Fatalf("inventory after an empty one: %v", got)
		}

		// A big inventory goes in several statements.
		var big []ModuleRow
		for i := 0; i < 3*moduleInsertBatch+7; i++ {
			big = append(big, ModuleRow{BuildID: fmt.Sprintf("%040x", i), Name: fmt.Sprintf("lib%d.so", i)})
		}
		if _, err := s.RecordCheckIn(ctx, d.ID, CheckInRecord{InventoryHash: "h4", Modules: big}); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.DeviceModules(ctx, d.ID); len(got) != len(big) {
			t.Fatalf("stored %d of %d modules", len(got), len(big))
		}

		// Only the newest checkInHistory check-ins are kept.
		for i := 0; i < checkInHistory+10; i++ {
			clock.add(time.Hour)
			if _, err := s.RecordCheckIn(ctx, d.ID, CheckInRecord{}); err != nil {
				t.Fatal(err)
			}
		}
		hist, err := s.DeviceCheckIns(ctx, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		h := hist[d.ID]
		if len(h) != checkInHistory || !h[len(h)-1].Equal(clock.now()) || !h[0].Equal(clock.now().Add(-time.Duration(checkInHistory-1)*time.Hour)) {
			t.Fatalf("check-in history has %d entries from %v to %v; want the newest %d ending %v", len(h), h[0], h[len(h)-1], checkInHistory, clock.now())
		}
		if recent, _ := s.DeviceCheckIns(ctx, clock.now().Add(-90*time.Minute)); len(recent[d.ID]) != 2 {
			t.Fatalf("check-ins of the last 90 minutes: %v, want 2", recent[d.ID])
		}

		if _, err := s.RecordCheckIn(ctx, 999, CheckInRecord{}); err == nil || !strings.Contains(err.Error(), "device 999") {
			t.Fatalf("check-in of an unknown device: %v", err)
		}
	})
}

// publishedRelease stores a bundle and a published release of it.
func publishedRelease(t *testing.T, s *Store, name string, autoRollback bool) Release {
	t.Helper()
	ctx := context.Background()
	sha, _, err := s.PutBundle(ctx, []byte("bundle of "+name))
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.CreateRelease(ctx, NewRelease{Name: name, Kind: KindHotpatch, Severity: "important", Bundles: map[string]string{"aa": sha},
		CreatedBy: "alice", AutoRollback: autoRollback})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.PublishRelease(ctx, r.ID, "alice", false); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestOfflineCounts(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s := openT(t, dsn)
		clock := &fakeClock{t: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
		s.SetClock(clock.now)
		rel := publishedRelease(t, s, "fix-1", false)
		var ids []int64
		for i := 0; i < 4; i++ {
			d, err := s.CreateDevice(ctx, NewDevice{PublicKey: key(i)})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, d.ID)
		}
		// 0: seen long ago, assigned; 1: seen now, assigned; 2: never seen,
		// assigned (ring Fast); 3: seen long ago but applied.
		if _, err := s.RecordCheckIn(ctx, ids[0], CheckInRecord{}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.RecordCheckIn(ctx, ids[3], CheckInRecord{}); err != nil {
			t.Fatal(err)
		}
		clock.add(48 * time.Hour)
		if _, err := s.RecordCheckIn(ctx, ids[1], CheckInRecord{}); err != nil {
			t.Fatal(err)
		}
		for i, st := range []struct{ ring, state string }{{"First", "assigned"}, {"First", "assigned"}, {"Fast", "assigned"}, {"First", "applied"}} {
			if err := s.SetDeviceReleaseState(ctx, ids[i], rel.ID, st.ring, st.state, ""); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.OfflineCounts(ctx, rel.ID, clock.now().Add(-24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) != "map[Fast:1 First:1]" {
			t.Fatalf("offline counts %v, want First 1 (seen 2 days ago) and Fast 1 (never seen)", got)
		}
	})
}

func TestHaltReleaseOnce(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s := openT(t, dsn)
		rel := publishedRelease(t, s, "fix-1", false)
		gen0, _ := s.Generation(ctx)
		h := Halt{ReleaseID: rel.ID, Actor: "rollout", Reason: "automatic halt: 3 of 3", Details: map[string]any{"failed": 3}, Rollback: true}
		// Two replicas evaluating the same failures at once halt it once.
		results := make(chan error, 2)
		halts := make(chan bool, 2)
		for i := 0; i < 2; i++ {
			go func() {
				ok, err := s.HaltRelease(ctx, h)
				halts <- ok
				results <- err
			}()
		}
		n := 0
		for i := 0; i < 2; i++ {
			if err := <-results; err != nil {
				t.Fatal(err)
			}
			if <-halts {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%d of 2 concurrent halts took effect, want 1", n)
		}
		ps, _ := s.ActivePauses(ctx)
		if len(ps) != 1 || ps[0].ReleaseID != rel.ID || ps[0].Ring != "" || ps[0].Actor != "rollout" || ps[0].Reason != h.Reason {
			t.Fatalf("pauses after the halt: %+v", ps)
		}
		r, _ := s.Release(ctx, rel.ID)
		if r.State != ReleaseRolledBack {
			t.Fatalf("release state %s after a halt with rollback", r.State)
		}
		if gen, _ := s.Generation(ctx); gen <= gen0 {
			t.Fatalf("generation %d after the halt, was %d: agents would not learn", gen, gen0)
		}
		es, _ := s.Audit(ctx, 0, 100)
		var actions []string
		for _, e := range es {
			if e.Actor == "rollout" {
				actions = append(actions, e.Action)
			}
		}
		if strings.Join(actions, ",") != "pause.add,release.halt,release.rolled-back" {
			t.Fatalf("automatic audit entries %v", actions)
		}
		// A rolled-back release is not halted again.
		if ok, err := s.HaltRelease(ctx, h); ok || err != nil {
			t.Fatalf("halting a rolled-back release: %v, %v", ok, err)
		}
	})
}
