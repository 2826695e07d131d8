package store

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// PutBundle stores a bundle under its SHA-256 and returns the hex digest.
// Storing the same bytes again is a no-op (created false): bundles are
// content-addressed and immutable.
func (s *Store) PutBundle(ctx context.Context, data []byte) (sha string, created bool, err error) {
	sum := sha256.Sum256(data)
	sha = hex.EncodeToString(sum[:])
	err = s.tx(ctx, "put bundle", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`INSERT INTO bundles (sha256, size, data, created_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (sha256) DO NOTHING`), sha, len(data), data, s.nowMicro())
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		created = n == 1
		return err
	})
	if err != nil {
		return "", false, fmt.Errorf("store bundle %s (%d bytes): %w", sha, len(data), err)
	}
	return sha, created, nil
}

// Bundle reads a bundle's bytes by SHA-256 (hex).
func (s *Store) Bundle(ctx context.Context, sha string) ([]byte, error) {
	var data []byte
	err := s.r.QueryRowContext(ctx, s.q("SELECT data FROM bundles WHERE sha256 = ? AND data IS NOT NULL"), sha).Scan(&data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("bundle %s: %w", sha, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read bundle %s: %w", sha, err)
	}
	return data, nil
}

// Release kinds, severities and states, as stored.
const (
	KindHotpatch = "hotpatch"
	KindBaseline = "baseline"

	ReleaseDraft      = "draft"
	ReleasePublished  = "published"
	ReleasePaused     = "paused"
	ReleaseRolledBack = "rolled-back"
)

// NewRelease describes a release to create as a draft.
type NewRelease struct {
	Name      string
	Kind      string // KindHotpatch or KindBaseline
	Severity  string // low, moderate, important, critical
	CVEs      []string
	Notes     string
	Bundles   map[string]string // build-id → bundle SHA-256; one bundle per build-id
	CreatedBy string
	// AutoRollback: an automatic halt also rolls the release back.
	AutoRollback bool
}

// Release is a stored release.
type Release struct {
	ID           int64
	Name         string
	Kind         string
	Severity     string
	CVEs         []string
	Notes        string
	State        string
	Bundles      map[string]string // build-id → bundle SHA-256
	CreatedBy    string
	CreatedAt    time.Time
	PublishedAt  time.Time // zero while a draft
	ExpeditedAt  time.Time // zero unless expedited
	AutoRollback bool
}

// CreateRelease stores a draft release and its bundles (which must have
// been stored with PutBundle) in one transaction.
func (s *Store) CreateRelease(ctx context.Context, nr NewRelease) (Release, error) {
	cves, _ := json.Marshal(append([]string{}, nr.CVEs...))
	r := Release{Name: nr.Name, Kind: nr.Kind, Severity: nr.Severity, CVEs: nr.CVEs, Notes: nr.Notes,
		State: ReleaseDraft, Bundles: nr.Bundles, CreatedBy: nr.CreatedBy, AutoRollback: nr.AutoRollback}
	err := s.tx(ctx, "create release", func(tx *sql.Tx) error {
		now := s.nowMicro()
		r.CreatedAt = fromMicro(now)
		err := tx.QueryRowContext(ctx, s.q(`INSERT INTO releases (name, kind, severity, cves, notes, created_by, created_at, auto_rollback)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`),
			nr.Name, nr.Kind, nr.Severity, string(cves), nr.Notes, nr.CreatedBy, now, nr.AutoRollback).Scan(&r.ID)
		if isUniqueViolation(err) {
			return fmt.Errorf("%w: a release named %q exists; pick another name", ErrConflict, nr.Name)
		}
		if err != nil {
			return err
		}
		for buildID, sha := range nr.Bundles {
			if _, err := tx.ExecContext(ctx, s.q("INSERT INTO release_bundles (release_id, build_id, bundle_sha256) VALUES (?, ?, ?)"),
				r.ID, buildID, sha); err != nil {
				return fmt.Errorf("add bundle %s for build-id %s (upload the bundle first): %w", sha, buildID, err)
			}
		}
		return s.appendAudit(ctx, tx, AuditEntry{Actor: nr.CreatedBy, Action: "release.create",
			Target: fmt.Sprintf("release/%d", r.ID), Details: map[string]any{"name": nr.Name, "kind": nr.Kind, "cves": nr.CVEs}})
	})
	if err != nil {
		return Release{}, fmt.Errorf("create release %q: %w", nr.Name, err)
	}
	return r, nil
}

// Release reads one release with its bundles.
func (s *Store) Release(ctx context.Context, id int64) (Release, error) {
	rs, err := s.releases(ctx, "WHERE id = ?", id)
	if err != nil {
		return Release{}, fmt.Errorf("read release %d: %w", id, err)
	}
	if len(rs) == 0 {
		return Release{}, fmt.Errorf("release %d: %w", id, ErrNotFound)
	}
	return rs[0], nil
}

// Releases lists releases, newest first, in any of the given states (all
// when none is given), with their bundles.
func (s *Store) Releases(ctx context.Context, states ...string) ([]Release, error) {
	where, args := "", []any{}
	if len(states) > 0 {
		where = "WHERE state IN (?" + strings.Repeat(", ?", len(states)-1) + ")"
		for _, st := range states {
			args = append(args, st)
		}
	}
	rs, err := s.releases(ctx, where, args...)
	if err != nil {
		return nil, fmt.Errorf("list releases: %w", err)
	}
	return rs, nil
}

func (s *Store) releases(ctx context.Context, where string, args ...any) ([]Release, error) {
	rows, err := s.r.QueryContext(ctx, s.q(`SELECT id, name, kind, severity, cves, notes, state, created_by, created_at, published_at, expedited_at, auto_rollback
		FROM releases `+where+` ORDER BY id DESC`), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Release
	byID := map[int64]int{}
	for rows.Next() {
		var r Release
		var cves string
		var created int64
		var published, expedited sql.NullInt64
		if err := rows.Scan(&r.ID, &r.Name, &r.Kind, &r.Severity, &cves, &r.Notes, &r.State,
			&r.CreatedBy, &created, &published, &expedited, &r.AutoRollback); err != nil {
			return nil, err
		}
		r.CreatedAt, r.PublishedAt, r.ExpeditedAt = fromMicro(created), fromNullMicro(published), fromNullMicro(expedited)
		if err := json.Unmarshal([]byte(cves), &r.CVEs); err != nil {
			return nil, fmt.Errorf("decode CVEs of release %d: %w", r.ID, err)
		}
		r.Bundles = map[string]string{}
		byID[r.ID] = len(out)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return out, nil
	}
	// One query for the bundles of every listed release.
	bq := "SELECT release_id, build_id, bundle_sha256 FROM release_bundles"
	if where != "" {
		bq += " WHERE release_id IN (SELECT id FROM releases " + where + ")"
	}
	brows, err := s.r.QueryContext(ctx, s.q(bq), args...)
	if err != nil {
		return nil, err
	}
	defer brows.Close()
	for brows.Next() {
		var id int64
		var b, sha string
		if err := brows.Scan(&id, &b, &sha); err != nil {
			return nil, err
		}
		if i, ok := byID[id]; ok {
			out[i].Bundles[b] = sha
		}
	}
	return out, brows.Err()
}

// PublishRelease moves a draft to published. expedite also marks it
// expedited (deferrals skipped). Publishing a published release is refused
// with ErrConflict; to expedite one later use ExpediteRelease.
func (s *Store) PublishRelease(ctx context.Context, id int64, actor string, expedite bool) error {
	return s.releaseTransition(ctx, id, actor, "release.publish", []string{ReleaseDraft}, func(tx *sql.Tx, now int64) error {
		exp := sql.NullInt64{Int64: now, Valid: expedite}
		_, err := tx.ExecContext(ctx, s.q("UPDATE releases SET state = ?, published_at = ?, expedited_at = ? WHERE id = ?"),
			ReleasePublished, now, exp, id)
		return err
	})
}

// ExpediteRelease marks a published (or paused) release expedited.
func (s *Store) ExpediteRelease(ctx context.Context, id int64, actor string) error {
	return s.releaseTransition(ctx, id, actor, "release.expedite", []string{ReleasePublished, ReleasePaused}, func(tx *sql.Tx, now int64) error {
		_, err := tx.ExecContext(ctx, s.q("UPDATE releases SET expedited_at = ? WHERE id = ? AND expedited_at IS NULL"), now, id)
		return err
	})
}

// SetReleaseState moves a published release to paused, back to published,
// or to rolled-back (final), recording who and why in the audit log.
func (s *Store) SetReleaseState(ctx context.Context, id int64, actor, state, why string) error {
	from := map[string][]string{
		ReleasePaused:     {ReleasePublished},
		ReleasePublished:  {ReleasePaused},
		ReleaseRolledBack: {ReleasePublished, ReleasePaused},
	}[state]
	if from == nil {
		return fmt.Errorf("set release %d state to %q: the state must be paused, published or rolled-back", id, state)
	}
	return s.releaseTransition(ctx, id, actor, "release."+state, from, func(tx *sql.Tx, now int64) error {
		_, err := tx.ExecContext(ctx, s.q("UPDATE releases SET state = ? WHERE id = ?"), state, id)
		if err == nil && why != "" {
			err = s.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "release.reason", Target: fmt.Sprintf("release/%d", id),
				Details: map[string]any{"state": state, "reason": why}})
		}
		return err
	})
}

func (s *Store) releaseTransition(ctx context.Context, id int64, actor, action string, from []string, apply func(*sql.Tx, int64) error) error {
	err := s.tx(ctx, action, func(tx *sql.Tx) error {
		var cur string
		err := tx.QueryRowContext(ctx, s.q("SELECT state FROM releases WHERE id = ?"+s.forUpdate()), id).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		ok := false
		for _, f := range from {
			ok = ok || cur == f
		}
		if !ok {
			return fmt.Errorf("%w: the release is %s, this needs it %v", ErrConflict, cur, from)
		}
		if err := apply(tx, s.nowMicro()); err != nil {
			return err
		}
		if err := s.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: action, Target: fmt.Sprintf("release/%d", id),
			Details: map[string]any{"from": cur}}); err != nil {
			return err
		}
		return bumpGeneration(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("%s release %d: %w", action, id, err)
	}
	return nil
}

// Ring is one rollout stage's configuration.
type Ring struct {
	Name       string
	Position   int  // rollout order, 0 first
	Percent    int  // share of unpinned devices
	PinnedOnly bool // only pinned devices land here (Test, Last)
	Deferral   time.Duration
	Deadline   time.Duration
	Grace      time.Duration
}

// Rings reads the ring configuration in rollout order.
func (s *Store) Rings(ctx context.Context) ([]Ring, error) {
	rows, err := s.r.QueryContext(ctx, "SELECT name, position, percent, pinned_only, deferral_s, deadline_s, grace_s FROM rings ORDER BY position")
	if err != nil {
		return nil, fmt.Errorf("read rings: %w", err)
	}
	defer rows.Close()
	var rs []Ring
	for rows.Next() {
		var r Ring
		var d, dl, g int64
		if err := rows.Scan(&r.Name, &r.Position, &r.Percent, &r.PinnedOnly, &d, &dl, &g); err != nil {
			return nil, fmt.Errorf("read rings: %w", err)
		}
		r.Deferral, r.Deadline, r.Grace = time.Duration(d)*time.Second, time.Duration(dl)*time.Second, time.Duration(g)*time.Second
		rs = append(rs, r)
	}
	return rs, rows.Err()
}

// PutRing creates or replaces one ring's configuration.
func (s *Store) PutRing(ctx context.Context, r Ring, actor string) error {
	err := s.tx(ctx, "put ring", func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO rings (name, position, percent, pinned_only, deferral_s, deadline_s, grace_s)
			VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET position = excluded.position, percent = excluded.percent,
			pinned_only = excluded.pinned_only, deferral_s = excluded.deferral_s, deadline_s = excluded.deadline_s, grace_s = excluded.grace_s`),
			r.Name, r.Position, r.Percent, r.PinnedOnly, int64(r.Deferral/time.Second), int64(r.Deadline/time.Second), int64(r.Grace/time.Second)); err != nil {
			return err
		}
		if err := s.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "ring.put", Target: "ring/" + r.Name, Details: r}); err != nil {
			return err
		}
		return bumpGeneration(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("store ring %q: %w", r.Name, err)
	}
	return nil
}

// Pause is a stop on a release, a ring, or one release in one ring.
type Pause struct {
	ID        int64
	ReleaseID int64  // 0: every release in Ring
	Ring      string // "": the release in every ring
	Actor     string
	Reason    string
	CreatedAt time.Time
}

// AddPause records a pause. It does not change the release's state; the
// rollout decides what a pause means.
func (s *Store) AddPause(ctx context.Context, p Pause) (Pause, error) {
	if p.ReleaseID == 0 && p.Ring == "" {
		return Pause{}, errors.New("add pause: name a release, a ring or both")
	}
	err := s.tx(ctx, "add pause", func(tx *sql.Tx) error {
		now := s.nowMicro()
		p.CreatedAt = fromMicro(now)
		rel := sql.NullInt64{Int64: p.ReleaseID, Valid: p.ReleaseID != 0}
		if err := tx.QueryRowContext(ctx, s.q(`INSERT INTO pauses (release_id, ring, actor, reason, created_at) VALUES (?, ?, ?, ?, ?) RETURNING id`),
			rel, nullString(p.Ring), p.Actor, p.Reason, now).Scan(&p.ID); err != nil {
			return err
		}
		if err := s.appendAudit(ctx, tx, AuditEntry{Actor: p.Actor, Action: "pause.add", Target: fmt.Sprintf("pause/%d", p.ID), Details: p}); err != nil {
			return err
		}
		return bumpGeneration(ctx, tx)
	})
	if err != nil {
		return Pause{}, fmt.Errorf("pause release %d ring %q: %w", p.ReleaseID, p.Ring, err)
	}
	return p, nil
}

// ResumePause ends a pause; the row stays for the record.
func (s *Store) ResumePause(ctx context.Context, id int64, actor string) error {
	err := s.tx(ctx, "resume pause", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q("UPDATE pauses SET resumed_by = ?, resumed_at = ? WHERE id = ? AND resumed_at IS NULL"), actor, s.nowMicro(), id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("%w: no active pause %d", ErrNotFound, id)
		}
		if err := s.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "pause.resume", Target: fmt.Sprintf("pause/%d", id)}); err != nil {
			return err
		}
		return bumpGeneration(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("resume pause %d: %w", id, err)
	}
	return nil
}

// ActivePauses lists the pauses not yet resumed.
func (s *Store) ActivePauses(ctx context.Context) ([]Pause, error) {
	rows, err := s.r.QueryContext(ctx, "SELECT id, release_id, ring, actor, reason, created_at FROM pauses WHERE resumed_at IS NULL ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("read pauses: %w", err)
	}
	defer rows.Close()
	var ps []Pause
	for rows.Next() {
		var p Pause
		var rel sql.NullInt64
		var ring sql.NullString
		var at int64
		if err := rows.Scan(&p.ID, &rel, &ring, &p.Actor, &p.Reason, &at); err != nil {
			return nil, fmt.Errorf("read pauses: %w", err)
		}
		p.ReleaseID, p.Ring, p.CreatedAt = rel.Int64, ring.String, fromMicro(at)
		ps = append(ps, p)
	}
	return ps, rows.Err()
}
