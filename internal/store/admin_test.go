package store

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestAdminTokens(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s := openT(t, dsn)
		clock := &fakeClock{t: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)}
		s.SetClock(clock.now)

		if has, err := s.HasAdminToken(ctx); has || err != nil {
			t.Fatalf("a new database has an admin token: %v, %v", has, err)
		}
		secret, tok, err := s.CreateAdminToken(ctx, "alice", RoleAdmin, 0, "server")
		if err != nil {
			t.Fatal(err)
		}
		if has, _ := s.HasAdminToken(ctx); !has {
			t.Fatal("HasAdminToken false after creating one")
		}
		var hash []byte
		if err := s.w.QueryRowContext(ctx, s.q("SELECT token_hash FROM admin_tokens WHERE id = ?"), tok.ID).Scan(&hash); err != nil {
			t.Fatal(err)
		}
		if len(hash) != 32 || strings.Contains(string(hash), secret) || len(secret) < 43 {
			t.Fatalf("stored %x for a secret of %d chars; want only its SHA-256", hash, len(secret))
		}
		got, err := s.AuthenticateAdmin(ctx, secret)
		if err != nil || got.ID != tok.ID || got.Role != RoleAdmin || got.Actor() != "admin:alice" || !got.LastUsed.Equal(clock.now()) {
			t.Fatalf("authenticate: %+v, %v", got, err)
		}
		if _, err := s.AuthenticateAdmin(ctx, "wrong"); !errors.Is(err, ErrAdminTokenUnknown) {
			t.Fatalf("unknown secret: %v", err)
		}
		if _, _, err := s.CreateAdminToken(ctx, "x", "root", 0, "alice"); err == nil {
			t.Fatal("role root accepted")
		}

		short, st, err := s.CreateAdminToken(ctx, "ci", RoleOperator, time.Hour, "admin:alice")
		if err != nil {
			t.Fatal(err)
		}
		clock.add(time.Hour)
		if _, err := s.AuthenticateAdmin(ctx, short); !errors.Is(err, ErrAdminTokenExpired) {
			t.Fatalf("token at its expiry: %v", err)
		}
		if err := s.RevokeAdminToken(ctx, tok.ID, "admin:alice"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.AuthenticateAdmin(ctx, secret); !errors.Is(err, ErrAdminTokenRevoked) {
			t.Fatalf("revoked token: %v", err)
		}
		// With the only admin token revoked (and the operator's expired),
		// a restart bootstraps again.
		if has, _ := s.HasAdminToken(ctx); has {
			t.Error("HasAdminToken counts a revoked token")
		}
		if err := s.RevokeAdminToken(ctx, 999, "admin:alice"); !errors.Is(err, ErrNotFound) {
			t.Errorf("revoking an unknown token: %v", err)
		}
		es, err := s.AuditOf(ctx, "admin-token/"+itoa(st.ID), "", 10)
		if err != nil || len(es) != 1 || es[0].Action != "admin-token.create" || es[0].Actor != "admin:alice" {
			t.Errorf("audit of the operator token: %+v, %v", es, err)
		}
	})
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func TestPauseAndResumeRelease(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s := openT(t, dsn)
		r := publishedRelease(t, s, "expat", false)
		gen := func() int64 {
			n, err := s.Generation(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		state := func() string {
			rel, err := s.Release(ctx, r.ID)
			if err != nil {
				t.Fatal(err)
			}
			return rel.State
		}
		g := gen()
		if _, err := s.PauseRelease(WithRemoteAddr(ctx, "192.0.2.7:4000"), r.ID, "First", "admin:ci", "crashes"); err != nil {
			t.Fatal(err)
		}
		if state() != ReleasePublished || gen() <= g {
			t.Fatalf("a ring pause: state %s, generation %d (was %d)", state(), gen(), g)
		}
		if _, err := s.PauseRelease(ctx, r.ID, "", "admin:ci", "investigating"); err != nil {
			t.Fatal(err)
		}
		if state() != ReleasePaused {
			t.Fatalf("a whole pause leaves the release %s", state())
		}
		ps, err := s.ReleasePauses(ctx, r.ID)
		if err != nil || len(ps) != 2 || ps[0].Ring != "First" || !ps[0].ResumedAt.IsZero() {
			t.Fatalf("pauses %+v, %v", ps, err)
		}
		if _, err := s.ResumeRelease(ctx, r.ID, "fast", "admin:ci"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("resuming a ring without a pause: %v", err)
		}
		g = gen()
		n, err := s.ResumeRelease(ctx, r.ID, "", "admin:ci")
		if err != nil || n != 2 || state() != ReleasePublished || gen() <= g {
			t.Fatalf("resume: %d pauses, %v; state %s", n, err, state())
		}
		ps, _ = s.ReleasePauses(ctx, r.ID)
		if ps[0].ResumedAt.IsZero() || ps[0].ResumedBy != "admin:ci" {
			t.Errorf("resumed pause %+v", ps[0])
		}
		es, err := s.AuditOf(ctx, "release/"+itoa(r.ID), "admin:ci", 100)
		if err != nil || len(es) < 4 || es[0].RemoteAddr != "192.0.2.7:4000" || es[0].Action != "pause.add" {
			t.Errorf("audit: %+v, %v", es, err)
		}
		// Publish, expedite, state changes, ring changes and device states
		// all announce themselves.
		for _, step := range []struct {
			name string
			fn   func() error
		}{
			{"expedite", func() error { return s.ExpediteRelease(ctx, r.ID, "admin:ci") }},
			{"ring", func() error {
				return s.PutRing(ctx, Ring{Name: "Extra", Position: 9, Percent: 0, PinnedOnly: true}, "admin:alice")
			}},
			{"pause", func() error { _, err := s.AddPause(ctx, Pause{Ring: "Broad", Actor: "a", Reason: "r"}); return err }},
			{"rollback", func() error { return s.SetReleaseState(ctx, r.ID, "admin:ci", ReleaseRolledBack, "bad") }},
		} {
			name, fn := step.name, step.fn
			g := gen()
			if err := fn(); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if gen() <= g {
				t.Errorf("%s did not bump the generation", name)
			}
		}
		if _, err := s.PauseRelease(ctx, r.ID, "", "admin:ci", "x"); !errors.Is(err, ErrConflict) {
			t.Errorf("pausing a rolled-back release: %v", err)
		}
	})
}

func TestReplaceRings(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s := openT(t, dsn)
		// Swap First and Fast, keep the rest: positions are unique, so this
		// only works in one transaction that moves them out of the way.
		rs, err := s.Rings(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rs[1], rs[2] = rs[2], rs[1]
		if err := s.ReplaceRings(ctx, rs, "admin:alice"); err != nil {
			t.Fatal(err)
		}
		got, _ := s.Rings(ctx)
		if got[1].Name != "Fast" || got[2].Name != "First" || got[1].Position != 1 {
			t.Fatalf("rings after the swap: %+v", got)
		}
		// Leaving out a ring a device is pinned to is refused whole.
		if _, err := s.CreateDevice(ctx, NewDevice{PublicKey: key(1), RingPin: "Last"}); err != nil {
			t.Fatal(err)
		}
		if err := s.ReplaceRings(ctx, rs[:4], "admin:alice"); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), `"Last"`) {
			t.Fatalf("removing a ring with a pinned device: %v", err)
		}
		if got, _ := s.Rings(ctx); len(got) != 5 {
			t.Fatalf("a refused replacement changed the rings: %+v", got)
		}
		// Test is named by nothing: it goes.
		if err := s.ReplaceRings(ctx, rs[1:], "admin:alice"); err != nil {
			t.Fatal(err)
		}
		got, _ = s.Rings(ctx)
		if len(got) != 4 || got[0].Name != "Fast" || got[0].Position != 0 {
			t.Fatalf("rings after removing Test: %+v", got)
		}
	})
}

func TestDevicesMappingAndList(t *testing.T) {
	each(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		s := openT(t, dsn)
		var ids []int64
		for i, m := range []ModuleRow{{BuildID: "aa", Name: "libexpat.so.1"}, {BuildID: "bb", Name: "libexpat.so.1"}, {BuildID: "cc", Name: "libc.so.6"}} {
			d, err := s.CreateDevice(ctx, NewDevice{PublicKey: key(i), Hostname: "h"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.RecordCheckIn(ctx, d.ID, CheckInRecord{Ready: true, Readiness: []byte("[]"), State: []byte("{}"), AgentVersion: "1.2",
				InventoryHash: "x", Modules: []ModuleRow{m}}); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, d.ID)
		}
		byID, err := s.DevicesMapping(ctx, []string{"aa"}, nil)
		if err != nil || len(byID) != 1 || !byID[ids[0]] {
			t.Errorf("by build-id: %v, %v", byID, err)
		}
		byName, err := s.DevicesMapping(ctx, []string{"zz"}, []string{"libexpat.so.1"})
		if err != nil || len(byName) != 2 || byName[ids[2]] {
			t.Errorf("by name: %v, %v", byName, err)
		}
		if err := s.RetireDevice(ctx, ids[1], "admin:alice", "gone"); err != nil {
			t.Fatal(err)
		}
		active, err := s.ListDevices(ctx, 0, 0, false)
		if err != nil || len(active) != 2 || !active[0].Ready || active[0].AgentVersion != "1.2" {
			t.Errorf("active devices %+v, %v", active, err)
		}
		page, _ := s.ListDevices(ctx, ids[0], 1, true)
		if len(page) != 1 || page[0].ID != ids[1] || page[0].State != DeviceRetired {
			t.Errorf("second page %+v", page)
		}
		if _, err := s.DeviceSummary(ctx, 999); !errors.Is(err, ErrNotFound) {
			t.Errorf("unknown device: %v", err)
		}
	})
}
