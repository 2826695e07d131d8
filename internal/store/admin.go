package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Admin roles, lowest first: each role may do everything the ones before it
// may.
const (
	RoleViewer   = "viewer"
	RoleOperator = "operator"
	RoleAdmin    = "admin"
)

// RoleRank orders roles; 0 for an unknown role.
func RoleRank(role string) int {
	switch role {
	case RoleViewer:
		return 1
	case RoleOperator:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// Errors of admin authentication; the server answers 401 for each.
var (
	ErrAdminTokenUnknown = errors.New("admin token unknown")
	ErrAdminTokenExpired = errors.New("admin token expired")
	ErrAdminTokenRevoked = errors.New("admin token revoked")
)

// lastUsedResolution: last_used is refreshed at most this often per token,
// so that a busy CLI loop does not turn every read into a write.
const lastUsedResolution = time.Minute

// AdminToken is a stored admin token; its secret is never stored.
type AdminToken struct {
	ID        int64
	Name      string
	Role      string
	CreatedBy string
	CreatedAt time.Time
	ExpiresAt time.Time // zero: never
	RevokedAt time.Time // zero: not revoked
	LastUsed  time.Time
}

// Actor is how the token's holder appears in the audit log.
func (t AdminToken) Actor() string { return "admin:" + t.Name }

// remoteAddrKey carries the client's address to the audit log.
type remoteAddrKey struct{}

// WithRemoteAddr returns a context whose audit entries record addr as the
// remote address, for callers acting on behalf of a network client.
func WithRemoteAddr(ctx context.Context, addr string) context.Context {
	return context.WithValue(ctx, remoteAddrKey{}, addr)
}

func remoteAddrOf(ctx context.Context) string {
	a, _ := ctx.Value(remoteAddrKey{}).(string)
	return a
}

// CreateAdminToken stores a new admin token and returns its secret, which
// only the caller sees. ttl 0 means the token does not expire.
func (s *Store) CreateAdminToken(ctx context.Context, name, role string, ttl time.Duration, actor string) (string, AdminToken, error) {
	if RoleRank(role) == 0 {
		return "", AdminToken{}, fmt.Errorf("create admin token %q: role %q is unknown; use viewer, operator or admin", name, role)
	}
	if name == "" || ttl < 0 {
		return "", AdminToken{}, fmt.Errorf("create admin token: the name (%q) must not be empty and the TTL (%v) not negative", name, ttl)
	}
	raw := make([]byte, tokenBytes)
	rand.Read(raw)
	secret := base64.RawURLEncoding.EncodeToString(raw)
	now := s.nowMicro()
	t := AdminToken{Name: name, Role: role, CreatedBy: actor, CreatedAt: fromMicro(now)}
	var exp sql.NullInt64
	if ttl > 0 {
		exp = sql.NullInt64{Int64: now + ttl.Microseconds(), Valid: true}
		t.ExpiresAt = fromMicro(exp.Int64)
	}
	err := s.tx(ctx, "create admin token", func(tx *sql.Tx) error {
		if err := tx.QueryRowContext(ctx, s.q(`INSERT INTO admin_tokens (name, role, token_hash, created_by, created_at, expires_at)
			VALUES (?, ?, ?, ?, ?, ?) RETURNING id`), name, role, tokenHash(secret), actor, now, exp).Scan(&t.ID); err != nil {
			return err
		}
		return s.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "admin-token.create", Target: fmt.Sprintf("admin-token/%d", t.ID),
			Details: map[string]any{"name": name, "role": role, "ttl": ttl.String()}})
	})
	if err != nil {
		return "", AdminToken{}, fmt.Errorf("create admin token %q: %w", name, err)
	}
	return secret, t, nil
}

// HasAdminToken reports whether a usable (neither revoked nor expired)
// token of role admin exists.
func (s *Store) HasAdminToken(ctx context.Context) (bool, error) {
	var n int
	if err := s.r.QueryRowContext(ctx, s.q(`SELECT count(*) FROM admin_tokens WHERE role = 'admin' AND revoked_at IS NULL
		AND (expires_at IS NULL OR expires_at > ?)`), s.nowMicro()).Scan(&n); err != nil {
		return false, fmt.Errorf("count admin tokens: %w", err)
	}
	return n > 0, nil
}

// AuthenticateAdmin finds the token with this secret and checks it may act
// now; it refreshes the token's last use.
func (s *Store) AuthenticateAdmin(ctx context.Context, secret string) (AdminToken, error) {
	var t AdminToken
	var created int64
	var exp, revoked, used sql.NullInt64
	err := s.r.QueryRowContext(ctx, s.q(`SELECT id, name, role, created_by, created_at, expires_at, revoked_at, last_used
		FROM admin_tokens WHERE token_hash = ?`), tokenHash(secret)).Scan(&t.ID, &t.Name, &t.Role, &t.CreatedBy, &created, &exp, &revoked, &used)
	if errors.Is(err, sql.ErrNoRows) {
		return AdminToken{}, ErrAdminTokenUnknown
	}
	if err != nil {
		return AdminToken{}, fmt.Errorf("read admin token: %w", err)
	}
	t.CreatedAt, t.ExpiresAt, t.RevokedAt, t.LastUsed = fromMicro(created), fromNullMicro(exp), fromNullMicro(revoked), fromNullMicro(used)
	now := s.now()
	switch {
	case !t.RevokedAt.IsZero():
		return t, fmt.Errorf("%w: token %d (%s) was revoked at %s; ask an admin for a new one", ErrAdminTokenRevoked, t.ID, t.Name, t.RevokedAt.Format(time.RFC3339))
	case !t.ExpiresAt.IsZero() && !now.Before(t.ExpiresAt):
		return t, fmt.Errorf("%w: token %d (%s) expired at %s; ask an admin for a new one", ErrAdminTokenExpired, t.ID, t.Name, t.ExpiresAt.Format(time.RFC3339))
	}
	if now.Sub(t.LastUsed) >= lastUsedResolution {
		err := s.tx(ctx, "admin token last use", func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, s.q("UPDATE admin_tokens SET last_used = ? WHERE id = ?"), now.UnixMicro(), t.ID)
			return err
		})
		if err != nil {
			return t, fmt.Errorf("record the use of admin token %d: %w", t.ID, err)
		}
		t.LastUsed = now.UTC()
	}
	return t, nil
}

// RevokeAdminToken revokes a token for good. Revoking a revoked token is a
// no-op.
func (s *Store) RevokeAdminToken(ctx context.Context, id int64, actor string) error {
	err := s.tx(ctx, "revoke admin token", func(tx *sql.Tx) error {
		var revoked sql.NullInt64
		err := tx.QueryRowContext(ctx, s.q("SELECT revoked_at FROM admin_tokens WHERE id = ?"+s.forUpdate()), id).Scan(&revoked)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil || revoked.Valid {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.q("UPDATE admin_tokens SET revoked_at = ? WHERE id = ?"), s.nowMicro(), id); err != nil {
			return err
		}
		return s.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "admin-token.revoke", Target: fmt.Sprintf("admin-token/%d", id)})
	})
	if err != nil {
		return fmt.Errorf("revoke admin token %d: %w", id, err)
	}
	return nil
}

// DeviceSummary is a device as the admin lists it.
type DeviceSummary struct {
	Device
	Ready        bool
	Readiness    string // JSON list of problems
	AgentVersion string
}

// maxDeviceList bounds one page of the device list.
const maxDeviceList = 10000

// ListDevices lists devices with id > after, by id, at most limit (capped
// at maxDeviceList); active only unless all.
func (s *Store) ListDevices(ctx context.Context, after int64, limit int, all bool) ([]DeviceSummary, error) {
	if limit <= 0 || limit > maxDeviceList {
		limit = maxDeviceList
	}
	where := "WHERE id > ?"
	if !all {
		where += " AND state = 'active'"
	}
	rows, err := s.r.QueryContext(ctx, s.q("SELECT "+deviceColumns+", ready, readiness, agent_version FROM devices "+where+" ORDER BY id LIMIT ?"), after, limit)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	defer rows.Close()
	var out []DeviceSummary
	for rows.Next() {
		var ds DeviceSummary
		var labels string
		var ring sql.NullString
		var tok, lastSeen sql.NullInt64
		var enrolled int64
		d := &ds.Device
		if err := rows.Scan(&d.ID, &d.PublicKey, &d.Hostname, &labels, &ring, &d.State, &tok, &enrolled, &lastSeen, &d.InventoryHash,
			&ds.Ready, &ds.Readiness, &ds.AgentVersion); err != nil {
			return nil, fmt.Errorf("list devices: %w", err)
		}
		d.RingPin, d.TokenID, d.EnrolledAt, d.LastSeen = ring.String, tok.Int64, fromMicro(enrolled), fromNullMicro(lastSeen)
		if d.Labels, err = decodeLabels(labels); err != nil {
			return nil, err
		}
		out = append(out, ds)
	}
	return out, rows.Err()
}

// DeviceSummary reads one device as the admin sees it.
func (s *Store) DeviceSummary(ctx context.Context, id int64) (DeviceSummary, error) {
	ds, err := s.ListDevices(ctx, id-1, 1, true)
	if err != nil {
		return DeviceSummary{}, err
	}
	if len(ds) == 0 || ds[0].ID != id {
		return DeviceSummary{}, fmt.Errorf("device %d: %w", id, ErrNotFound)
	}
	return ds[0], nil
}

// maxModuleMatch bounds the build-ids and names one applicability query
// carries: a release spans a few modules, far below either database's
// limit on bound parameters.
const maxModuleMatch = 500

// DevicesMapping returns the devices whose last inventory maps a module
// with one of the build-ids or one of the file names.
func (s *Store) DevicesMapping(ctx context.Context, buildIDs, names []string) (map[int64]bool, error) {
	out := map[int64]bool{}
	if len(buildIDs)+len(names) == 0 {
		return out, nil
	}
	if len(buildIDs)+len(names) > maxModuleMatch {
		return nil, fmt.Errorf("match devices to %d modules: at most %d at once", len(buildIDs)+len(names), maxModuleMatch)
	}
	var conds []string
	var args []any
	if len(buildIDs) > 0 {
		conds = append(conds, "build_id IN (?"+strings.Repeat(", ?", len(buildIDs)-1)+")")
		for _, b := range buildIDs {
			args = append(args, b)
		}
	}
	if len(names) > 0 {
		conds = append(conds, "name IN (?"+strings.Repeat(", ?", len(names)-1)+")")
		for _, n := range names {
			args = append(args, n)
		}
	}
	rows, err := s.r.QueryContext(ctx, s.q("SELECT DISTINCT device_id FROM device_modules WHERE "+strings.Join(conds, " OR ")), args...)
	if err != nil {
		return nil, fmt.Errorf("match devices to modules: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("match devices to modules: %w", err)
		}
		out[id] = true
	}
	return out, rows.Err()
}

// PauseRecord is a pause with its end, for schedules and the record.
type PauseRecord struct {
	Pause
	ResumedBy string
	ResumedAt time.Time // zero while in effect
}

// ReleasePauses lists every pause, active or resumed, that concerns the
// release: its own and those of whole rings.
func (s *Store) ReleasePauses(ctx context.Context, releaseID int64) ([]PauseRecord, error) {
	rows, err := s.r.QueryContext(ctx, s.q(`SELECT id, release_id, ring, actor, reason, created_at, resumed_by, resumed_at
		FROM pauses WHERE release_id = ? OR release_id IS NULL ORDER BY id`), releaseID)
	if err != nil {
		return nil, fmt.Errorf("read pauses of release %d: %w", releaseID, err)
	}
	defer rows.Close()
	var out []PauseRecord
	for rows.Next() {
		var p PauseRecord
		var rel, resumedAt sql.NullInt64
		var ring, resumedBy sql.NullString
		var at int64
		if err := rows.Scan(&p.ID, &rel, &ring, &p.Actor, &p.Reason, &at, &resumedBy, &resumedAt); err != nil {
			return nil, fmt.Errorf("read pauses of release %d: %w", releaseID, err)
		}
		p.ReleaseID, p.Ring, p.CreatedAt, p.ResumedBy, p.ResumedAt = rel.Int64, ring.String, fromMicro(at), resumedBy.String, fromNullMicro(resumedAt)
		out = append(out, p)
	}
	return out, rows.Err()
}

// PauseRelease pauses a release, in every ring (ring "") or in one ring. A
// pause of the whole release also moves it to state paused. One
// transaction: the pause, the state, the audit and the generation.
func (s *Store) PauseRelease(ctx context.Context, releaseID int64, ring, actor, reason string) (Pause, error) {
	p := Pause{ReleaseID: releaseID, Ring: ring, Actor: actor, Reason: reason}
	err := s.tx(ctx, "pause release", func(tx *sql.Tx) error {
		var state string
		err := tx.QueryRowContext(ctx, s.q("SELECT state FROM releases WHERE id = ?"+s.forUpdate()), releaseID).Scan(&state)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if state != ReleasePublished && state != ReleasePaused {
			return fmt.Errorf("%w: the release is %s; only a published release can be paused", ErrConflict, state)
		}
		now := s.nowMicro()
		p.CreatedAt = fromMicro(now)
		if err := tx.QueryRowContext(ctx, s.q(`INSERT INTO pauses (release_id, ring, actor, reason, created_at) VALUES (?, ?, ?, ?, ?) RETURNING id`),
			releaseID, nullString(ring), actor, reason, now).Scan(&p.ID); err != nil {
			return err
		}
		if err := s.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "pause.add", Target: fmt.Sprintf("release/%d", releaseID),
			Details: map[string]any{"pause": p.ID, "ring": ring, "reason": reason}}); err != nil {
			return err
		}
		if ring == "" && state == ReleasePublished {
			if _, err := tx.ExecContext(ctx, s.q("UPDATE releases SET state = ? WHERE id = ?"), ReleasePaused, releaseID); err != nil {
				return err
			}
			if err := s.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "release." + ReleasePaused, Target: fmt.Sprintf("release/%d", releaseID),
				Details: map[string]any{"from": state, "reason": reason}}); err != nil {
				return err
			}
		}
		return bumpGeneration(ctx, tx)
	})
	if err != nil {
		return Pause{}, fmt.Errorf("pause release %d (ring %q): %w", releaseID, ring, err)
	}
	return p, nil
}

// ResumeRelease ends the release's active pauses: all of them (ring "",
// which also moves a paused release back to published) or those of one
// ring. It returns how many pauses ended; 0 is ErrNotFound.
func (s *Store) ResumeRelease(ctx context.Context, releaseID int64, ring, actor string) (int, error) {
	var n int
	err := s.tx(ctx, "resume release", func(tx *sql.Tx) error {
		n = 0
		var state string
		err := tx.QueryRowContext(ctx, s.q("SELECT state FROM releases WHERE id = ?"+s.forUpdate()), releaseID).Scan(&state)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if state != ReleasePublished && state != ReleasePaused {
			return fmt.Errorf("%w: the release is %s; only a paused release can be resumed", ErrConflict, state)
		}
		q, args := "UPDATE pauses SET resumed_by = ?, resumed_at = ? WHERE release_id = ? AND resumed_at IS NULL", []any{actor, s.nowMicro(), releaseID}
		if ring != "" {
			q += " AND lower(ring) = lower(?)"
			args = append(args, ring)
		}
		res, err := tx.ExecContext(ctx, s.q(q), args...)
		if err != nil {
			return err
		}
		m, _ := res.RowsAffected()
		n = int(m)
		moved := ring == "" && state == ReleasePaused
		if n == 0 && !moved {
			if ring != "" {
				return fmt.Errorf("%w: release %d has no active pause in ring %q", ErrNotFound, releaseID, ring)
			}
			return fmt.Errorf("%w: release %d has no active pause", ErrNotFound, releaseID)
		}
		if err := s.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "pause.resume", Target: fmt.Sprintf("release/%d", releaseID),
			Details: map[string]any{"ring": ring, "pauses": n}}); err != nil {
			return err
		}
		if moved {
			if _, err := tx.ExecContext(ctx, s.q("UPDATE releases SET state = ? WHERE id = ?"), ReleasePublished, releaseID); err != nil {
				return err
			}
			if err := s.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "release." + ReleasePublished, Target: fmt.Sprintf("release/%d", releaseID),
				Details: map[string]any{"from": state}}); err != nil {
				return err
			}
		}
		return bumpGeneration(ctx, tx)
	})
	if err != nil {
		return 0, fmt.Errorf("resume release %d (ring %q): %w", releaseID, ring, err)
	}
	return n, nil
}

// ResumeRing ends the active pauses of a whole ring (every release).
func (s *Store) ResumeRing(ctx context.Context, ring, actor string) (int, error) {
	var n int
	err := s.tx(ctx, "resume ring", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE pauses SET resumed_by = ?, resumed_at = ? WHERE release_id IS NULL AND lower(ring) = lower(?) AND resumed_at IS NULL`),
			actor, s.nowMicro(), ring)
		if err != nil {
			return err
		}
		m, _ := res.RowsAffected()
		if n = int(m); n == 0 {
			return fmt.Errorf("%w: ring %q has no active pause", ErrNotFound, ring)
		}
		if err := s.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "pause.resume", Target: "ring/" + ring, Details: map[string]any{"pauses": n}}); err != nil {
			return err
		}
		return bumpGeneration(ctx, tx)
	})
	if err != nil {
		return 0, fmt.Errorf("resume ring %q: %w", ring, err)
	}
	return n, nil
}

// ReplaceRings makes rs the whole ring configuration, in order, in one
// transaction: positions may be swapped, and rings left out are deleted
// unless a device, an enrollment token or a pause still names them
// (ErrConflict, and nothing changes).
func (s *Store) ReplaceRings(ctx context.Context, rs []Ring, actor string) error {
	err := s.tx(ctx, "replace rings", func(tx *sql.Tx) error {
		old, err := tx.QueryContext(ctx, "SELECT name FROM rings")
		if err != nil {
			return err
		}
		var removed []string
		for old.Next() {
			var name string
			if err := old.Scan(&name); err != nil {
				old.Close()
				return err
			}
			keep := false
			for _, r := range rs {
				keep = keep || r.Name == name
			}
			if !keep {
				removed = append(removed, name)
			}
		}
		old.Close()
		if err := old.Err(); err != nil {
			return err
		}
		for _, name := range removed {
			var devices, tokens, pauses int
			if err := tx.QueryRowContext(ctx, s.q(`SELECT (SELECT count(*) FROM devices WHERE ring_pin = ?),
				(SELECT count(*) FROM enrollment_tokens WHERE ring = ?), (SELECT count(*) FROM pauses WHERE ring = ?)`),
				name, name, name).Scan(&devices, &tokens, &pauses); err != nil {
				return err
			}
			if devices+tokens+pauses > 0 {
				return fmt.Errorf("%w: ring %q is left out but %d devices are pinned to it, %d enrollment tokens and %d pauses name it; keep the ring or re-pin those devices first",
					ErrConflict, name, devices, tokens, pauses)
			}
			if _, err := tx.ExecContext(ctx, s.q("DELETE FROM rings WHERE name = ?"), name); err != nil {
				return err
			}
			if err := s.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "ring.delete", Target: "ring/" + name}); err != nil {
				return err
			}
		}
		// Move every position out of the way first: positions are unique,
		// and a reorder would otherwise collide half-way.
		if _, err := tx.ExecContext(ctx, "UPDATE rings SET position = -1 - position"); err != nil {
			return err
		}
		for i, r := range rs {
			r.Position = i
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO rings (name, position, percent, pinned_only, deferral_s, deadline_s, grace_s)
			VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET position = excluded.position, percent = excluded.percent,
			pinned_only = excluded.pinned_only, deferral_s = excluded.deferral_s, deadline_s = excluded.deadline_s, grace_s = excluded.grace_s`),
				r.Name, r.Position, r.Percent, r.PinnedOnly, int64(r.Deferral/time.Second), int64(r.Deadline/time.Second), int64(r.Grace/time.Second)); err != nil {
				return fmt.Errorf("store ring %q: %w", r.Name, err)
			}
			if err := s.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "ring.put", Target: "ring/" + r.Name, Details: r}); err != nil {
				return err
			}
		}
		return bumpGeneration(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("replace the rings: %w", err)
	}
	return nil
}

// AuditOf reads the newest entries about target (e.g. "release/7"), by
// actor when actor is not "", oldest first, at most limit.
func (s *Store) AuditOf(ctx context.Context, target, actor string, limit int) ([]AuditEntry, error) {
	q, args := "SELECT id, at, actor, action, target, details, remote_addr FROM audit_log WHERE target = ?", []any{target}
	if actor != "" {
		q += " AND actor = ?"
		args = append(args, actor)
	}
	q += " ORDER BY id DESC LIMIT ?"
	args = append(args, limit)
	rows, err := s.r.QueryContext(ctx, s.q(q), args...)
	if err != nil {
		return nil, fmt.Errorf("read the audit log of %s: %w", target, err)
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var e AuditEntry
		var at int64
		var details string
		if err := rows.Scan(&e.ID, &at, &e.Actor, &e.Action, &e.Target, &details, &e.RemoteAddr); err != nil {
			return nil, fmt.Errorf("read the audit log of %s: %w", target, err)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(details), &m); err != nil {
			return nil, fmt.Errorf("decode audit entry %d details: %w", e.ID, err)
		}
		e.At, e.Details = fromMicro(at), m
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	slices.Reverse(out)
	return out, nil
}
