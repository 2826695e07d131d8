package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"
	"unicode/utf8"
)

// SetDeviceReleaseState records that a device, counted in ring, is now in
// state for a release, and moves it between the per-ring aggregates in the
// same transaction, so that counts are exact without scanning devices.
// The state names are the rollout's (assigned, applied, failed, …); the
// store only counts them. Setting the state a device already has updates
// the reason and time and leaves the counts alone.
func (s *Store) SetDeviceReleaseState(ctx context.Context, deviceID, releaseID int64, ring, state, reason string) error {
	if ring == "" || state == "" {
		return fmt.Errorf("set state of device %d for release %d: ring (%q) and state (%q) must not be empty", deviceID, releaseID, ring, state)
	}
	err := s.tx(ctx, "set device release state", func(tx *sql.Tx) error {
		now := s.nowMicro()
		// Lock the device's row first (creating it if new), so that two
		// updates of one device serialize and read each other's result.
		var oldRing, oldState string
		err := tx.QueryRowContext(ctx, s.q("SELECT ring, state FROM device_release_state WHERE device_id = ? AND release_id = ?"+s.forUpdate()),
			deviceID, releaseID).Scan(&oldRing, &oldState)
		if errors.Is(err, sql.ErrNoRows) {
			res, err := tx.ExecContext(ctx, s.q(`INSERT INTO device_release_state (device_id, release_id, ring, state, reason, updated_at)
				VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device_id, release_id) DO NOTHING`), deviceID, releaseID, ring, state, reason, now)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 1 {
				return s.bumpCounts(ctx, tx, releaseID, countDelta{ring, state, +1})
			}
			// Another transaction inserted it first (PostgreSQL): read theirs.
			err = tx.QueryRowContext(ctx, s.q("SELECT ring, state FROM device_release_state WHERE device_id = ? AND release_id = ?"+s.forUpdate()),
				deviceID, releaseID).Scan(&oldRing, &oldState)
			if err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE device_release_state SET ring = ?, state = ?, reason = ?, updated_at = ?
			WHERE device_id = ? AND release_id = ?`), ring, state, reason, now, deviceID, releaseID); err != nil {
			return err
		}
		if oldRing == ring && oldState == state {
			return nil
		}
		return s.bumpCounts(ctx, tx, releaseID, countDelta{oldRing, oldState, -1}, countDelta{ring, state, +1})
	})
	if err != nil {
		return fmt.Errorf("set state of device %d for release %d to %s in ring %s: %w", deviceID, releaseID, state, ring, err)
	}
	return nil
}

type countDelta struct {
	ring, state string
	d           int
}

// bumpCounts applies the deltas in (ring, state) order: every transaction
// takes the aggregate rows' locks in the same order, so concurrent updates
// on PostgreSQL cannot deadlock on them.
func (s *Store) bumpCounts(ctx context.Context, tx *sql.Tx, releaseID int64, ds ...countDelta) error {
	sort.Slice(ds, func(i, j int) bool {
		if ds[i].ring != ds[j].ring {
			return ds[i].ring < ds[j].ring
		}
		return ds[i].state < ds[j].state
	})
	for _, d := range ds {
		if d.d < 0 {
			// The row exists: the device was counted in it. An insert
			// with a negative n would trip the n >= 0 check first.
			res, err := tx.ExecContext(ctx, s.q("UPDATE release_ring_counts SET n = n + ? WHERE release_id = ? AND ring = ? AND state = ?"),
				d.d, releaseID, d.ring, d.state)
			if err != nil {
				return fmt.Errorf("update the %s/%s count: %w", d.ring, d.state, err)
			}
			if n, _ := res.RowsAffected(); n != 1 {
				return fmt.Errorf("the %s/%s count of release %d is missing though a device is in it; the aggregates are corrupt", d.ring, d.state, releaseID)
			}
			continue
		}
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO release_ring_counts (release_id, ring, state, n) VALUES (?, ?, ?, ?)
			ON CONFLICT (release_id, ring, state) DO UPDATE SET n = release_ring_counts.n + excluded.n`),
			releaseID, d.ring, d.state, d.d); err != nil {
			return fmt.Errorf("update the %s/%s count: %w", d.ring, d.state, err)
		}
	}
	return nil
}

// RingCounts maps ring → state → number of devices, for one release.
type RingCounts map[string]map[string]int64

// Counts reads a release's aggregates: cheap at any fleet size.
func (s *Store) Counts(ctx context.Context, releaseID int64) (RingCounts, error) {
	rows, err := s.r.QueryContext(ctx, s.q("SELECT ring, state, n FROM release_ring_counts WHERE release_id = ? AND n > 0"), releaseID)
	if err != nil {
		return nil, fmt.Errorf("read counts of release %d: %w", releaseID, err)
	}
	defer rows.Close()
	c := RingCounts{}
	for rows.Next() {
		var ring, state string
		var n int64
		if err := rows.Scan(&ring, &state, &n); err != nil {
			return nil, fmt.Errorf("read counts of release %d: %w", releaseID, err)
		}
		if c[ring] == nil {
			c[ring] = map[string]int64{}
		}
		c[ring][state] = n
	}
	return c, rows.Err()
}

// DeviceReleaseState is one device's state for one release.
type DeviceReleaseState struct {
	DeviceID, ReleaseID int64
	Ring, State, Reason string
	UpdatedAt           time.Time
}

// DeviceReleaseState reads one device's state for a release.
func (s *Store) DeviceReleaseState(ctx context.Context, deviceID, releaseID int64) (DeviceReleaseState, error) {
	st := DeviceReleaseState{DeviceID: deviceID, ReleaseID: releaseID}
	var at int64
	err := s.r.QueryRowContext(ctx, s.q("SELECT ring, state, reason, updated_at FROM device_release_state WHERE device_id = ? AND release_id = ?"),
		deviceID, releaseID).Scan(&st.Ring, &st.State, &st.Reason, &at)
	if errors.Is(err, sql.ErrNoRows) {
		return st, fmt.Errorf("state of device %d for release %d: %w", deviceID, releaseID, ErrNotFound)
	}
	if err != nil {
		return st, fmt.Errorf("read state of device %d for release %d: %w", deviceID, releaseID, err)
	}
	st.UpdatedAt = fromMicro(at)
	return st, nil
}

// InsertReport stores a device's report number seq. Agents resend until
// acknowledged, so a (device, seq) already stored is ignored and reported
// as duplicate: the caller acknowledges it again without acting twice.
//
// The body is text (the agent's JSON); invalid UTF-8 is refused on both
// databases alike, where PostgreSQL alone would otherwise reject it.
func (s *Store) InsertReport(ctx context.Context, deviceID, seq int64, body []byte) (duplicate bool, err error) {
	if !utf8.Valid(body) {
		return false, fmt.Errorf("store report %d of device %d: the body is not UTF-8 text; send JSON", seq, deviceID)
	}
	err = s.tx(ctx, "insert report", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`INSERT INTO reports (device_id, seq, received_at, body) VALUES (?, ?, ?, ?)
			ON CONFLICT (device_id, seq) DO NOTHING`), deviceID, seq, s.nowMicro(), string(body))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		duplicate = n == 0
		return err
	})
	if err != nil {
		return false, fmt.Errorf("store report %d of device %d: %w", seq, deviceID, err)
	}
	return duplicate, nil
}

// Report is a stored device report.
type Report struct {
	DeviceID, Seq int64
	ReceivedAt    time.Time
	Body          []byte
}

// Reports reads a device's reports with seq > after, oldest first.
func (s *Store) Reports(ctx context.Context, deviceID, after int64) ([]Report, error) {
	rows, err := s.r.QueryContext(ctx, s.q("SELECT seq, received_at, body FROM reports WHERE device_id = ? AND seq > ? ORDER BY seq"), deviceID, after)
	if err != nil {
		return nil, fmt.Errorf("read reports of device %d: %w", deviceID, err)
	}
	defer rows.Close()
	var rs []Report
	for rows.Next() {
		r := Report{DeviceID: deviceID}
		var at int64
		var body string
		if err := rows.Scan(&r.Seq, &at, &body); err != nil {
			return nil, fmt.Errorf("read reports of device %d: %w", deviceID, err)
		}
		r.ReceivedAt, r.Body = fromMicro(at), []byte(body)
		rs = append(rs, r)
	}
	return rs, rows.Err()
}

// AuditEntry is one line of the append-only audit log.
type AuditEntry struct {
	ID         int64
	At         time.Time
	Actor      string // admin name, "device/ID", or "rollout" for automatic actions
	Action     string // e.g. release.publish
	Target     string // e.g. release/7
	Details    any    // stored as JSON; read back as map[string]any
	RemoteAddr string
}

// AppendAudit appends an entry; the database refuses updates and deletes
// of the log.
func (s *Store) AppendAudit(ctx context.Context, e AuditEntry) error {
	err := s.tx(ctx, "append audit", func(tx *sql.Tx) error { return s.appendAudit(ctx, tx, e) })
	if err != nil {
		return fmt.Errorf("append audit %s on %s by %s: %w", e.Action, e.Target, e.Actor, err)
	}
	return nil
}

func (s *Store) appendAudit(ctx context.Context, tx *sql.Tx, e AuditEntry) error {
	if e.RemoteAddr == "" {
		e.RemoteAddr = remoteAddrOf(ctx) // see WithRemoteAddr
	}
	details := []byte("{}")
	if e.Details != nil {
		var err error
		if details, err = json.Marshal(e.Details); err != nil {
			return fmt.Errorf("encode audit details: %w", err)
		}
	}
	_, err := tx.ExecContext(ctx, s.q("INSERT INTO audit_log (at, actor, action, target, details, remote_addr) VALUES (?, ?, ?, ?, ?, ?)"),
		s.nowMicro(), e.Actor, e.Action, e.Target, string(details), e.RemoteAddr)
	if err != nil {
		return fmt.Errorf("append audit %s: %w", e.Action, err)
	}
	return nil
}

// Audit reads the log entries with id > after, oldest first, at most limit.
func (s *Store) Audit(ctx context.Context, after int64, limit int) ([]AuditEntry, error) {
	rows, err := s.r.QueryContext(ctx, s.q("SELECT id, at, actor, action, target, details, remote_addr FROM audit_log WHERE id > ? ORDER BY id LIMIT ?"), after, limit)
	if err != nil {
		return nil, fmt.Errorf("read the audit log: %w", err)
	}
	defer rows.Close()
	var es []AuditEntry
	for rows.Next() {
		var e AuditEntry
		var at int64
		var details string
		if err := rows.Scan(&e.ID, &at, &e.Actor, &e.Action, &e.Target, &details, &e.RemoteAddr); err != nil {
			return nil, fmt.Errorf("read the audit log: %w", err)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(details), &m); err != nil {
			return nil, fmt.Errorf("decode audit entry %d details: %w", e.ID, err)
		}
		e.At, e.Details = fromMicro(at), m
		es = append(es, e)
	}
	return es, rows.Err()
}
