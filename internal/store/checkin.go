package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// checkInHistory is how many check-in times are kept per device: enough for
// the forecast to learn a device's rhythm (weeks at a few a day), bounded so
// the table does not grow with uptime.
const checkInHistory = 64

// moduleInsertBatch is how many device_modules rows one INSERT carries:
// thousands of modules in a few statements, well under either database's
// limit on bound parameters (5 per row).
const moduleInsertBatch = 200

// ModuleRow is one module a device's processes map.
type ModuleRow struct {
	BuildID   string
	Name      string
	Package   string
	Processes int
}

// CheckInRecord is what one check-in stores about a device.
type CheckInRecord struct {
	Ready        bool
	Readiness    []byte // JSON list of problems
	AgentVersion string
	State        []byte // JSON: the bundles' states and the problems
	// InventoryHash and Modules replace the stored inventory when Modules
	// is not nil; a nil Modules leaves the stored inventory and hash alone.
	InventoryHash string
	Modules       []ModuleRow
}

// RecordCheckIn stores a check-in in one transaction: the device's
// readiness, agent version and check-in state, last seen now, the inventory
// when one came, and the check-in time in the device's recent history. It
// returns the inventory hash stored afterwards.
func (s *Store) RecordCheckIn(ctx context.Context, deviceID int64, c CheckInRecord) (storedHash string, err error) {
	readiness, state := string(c.Readiness), string(c.State)
	if readiness == "" {
		readiness = "[]"
	}
	if state == "" {
		state = "{}"
	}
	err = s.tx(ctx, "record check-in", func(tx *sql.Tx) error {
		now := s.nowMicro()
		err := tx.QueryRowContext(ctx, s.q(`UPDATE devices SET ready = ?, readiness = ?, agent_version = ?, checkin_state = ?, last_seen = ?,
			inventory_hash = CASE WHEN ? THEN ? ELSE inventory_hash END WHERE id = ? RETURNING inventory_hash`),
			c.Ready, readiness, c.AgentVersion, state, now, c.Modules != nil, c.InventoryHash, deviceID).Scan(&storedHash)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if c.Modules != nil {
			if err := s.replaceModules(ctx, tx, deviceID, c.Modules); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, s.q("INSERT INTO device_checkins (device_id, at) VALUES (?, ?) ON CONFLICT (device_id, at) DO NOTHING"),
			deviceID, now); err != nil {
			return fmt.Errorf("insert the check-in time: %w", err)
		}
		// Keep the newest checkInHistory; with fewer the subquery is NULL
		// and nothing matches.
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM device_checkins WHERE device_id = ? AND at <
			(SELECT at FROM device_checkins WHERE device_id = ? ORDER BY at DESC LIMIT 1 OFFSET ?)`),
			deviceID, deviceID, checkInHistory-1); err != nil {
			return fmt.Errorf("trim the check-in history: %w", err)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("record check-in of device %d: %w", deviceID, err)
	}
	return storedHash, nil
}

// replaceModules swaps a device's stored inventory for ms. A build-id listed
// twice is stored once with the processes summed.
func (s *Store) replaceModules(ctx context.Context, tx *sql.Tx, deviceID int64, ms []ModuleRow) error {
	if _, err := tx.ExecContext(ctx, s.q("DELETE FROM device_modules WHERE device_id = ?"), deviceID); err != nil {
		return fmt.Errorf("clear the inventory: %w", err)
	}
	byID := map[string]int{}
	var uniq []ModuleRow
	for _, m := range ms {
		if i, ok := byID[m.BuildID]; ok {
			uniq[i].Processes += m.Processes
			continue
		}
		byID[m.BuildID] = len(uniq)
		uniq = append(uniq, m)
	}
	for len(uniq) > 0 {
		n := min(len(uniq), moduleInsertBatch)
		args := make([]any, 0, 5*n)
		for _, m := range uniq[:n] {
			args = append(args, deviceID, m.BuildID, m.Name, m.Package, m.Processes)
		}
		q := "INSERT INTO device_modules (device_id, build_id, name, package, processes) VALUES (?, ?, ?, ?, ?)" +
			strings.Repeat(", (?, ?, ?, ?, ?)", n-1)
		if _, err := tx.ExecContext(ctx, s.q(q), args...); err != nil {
			return fmt.Errorf("store the inventory: %w", err)
		}
		uniq = uniq[n:]
	}
	return nil
}

// DeviceModules reads the modules of a device's last inventory, by build-id.
func (s *Store) DeviceModules(ctx context.Context, deviceID int64) ([]ModuleRow, error) {
	rows, err := s.r.QueryContext(ctx, s.q("SELECT build_id, name, package, processes FROM device_modules WHERE device_id = ? ORDER BY build_id"), deviceID)
	if err != nil {
		return nil, fmt.Errorf("read the inventory of device %d: %w", deviceID, err)
	}
	defer rows.Close()
	var ms []ModuleRow
	for rows.Next() {
		var m ModuleRow
		if err := rows.Scan(&m.BuildID, &m.Name, &m.Package, &m.Processes); err != nil {
			return nil, fmt.Errorf("read the inventory of device %d: %w", deviceID, err)
		}
		ms = append(ms, m)
	}
	return ms, rows.Err()
}

// DeviceReleaseStates reads a device's state for every release it has one
// for, by release id.
func (s *Store) DeviceReleaseStates(ctx context.Context, deviceID int64) (map[int64]DeviceReleaseState, error) {
	rows, err := s.r.QueryContext(ctx, s.q("SELECT release_id, ring, state, reason, updated_at FROM device_release_state WHERE device_id = ?"), deviceID)
	if err != nil {
		return nil, fmt.Errorf("read the release states of device %d: %w", deviceID, err)
	}
	defer rows.Close()
	out := map[int64]DeviceReleaseState{}
	for rows.Next() {
		st := DeviceReleaseState{DeviceID: deviceID}
		var at int64
		if err := rows.Scan(&st.ReleaseID, &st.Ring, &st.State, &st.Reason, &at); err != nil {
			return nil, fmt.Errorf("read the release states of device %d: %w", deviceID, err)
		}
		st.UpdatedAt = fromMicro(at)
		out[st.ReleaseID] = st
	}
	return out, rows.Err()
}

// OfflineCounts counts, per ring, the devices in state "assigned" for a
// release that were last seen before before (or never): the release status
// shows them as offline rather than as pending.
func (s *Store) OfflineCounts(ctx context.Context, releaseID int64, before time.Time) (map[string]int64, error) {
	rows, err := s.r.QueryContext(ctx, s.q(`SELECT drs.ring, count(*) FROM device_release_state drs JOIN devices d ON d.id = drs.device_id
		WHERE drs.release_id = ? AND drs.state = 'assigned' AND (d.last_seen IS NULL OR d.last_seen < ?) GROUP BY drs.ring`),
		releaseID, before.UnixMicro())
	if err != nil {
		return nil, fmt.Errorf("count offline devices of release %d: %w", releaseID, err)
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var ring string
		var n int64
		if err := rows.Scan(&ring, &n); err != nil {
			return nil, fmt.Errorf("count offline devices of release %d: %w", releaseID, err)
		}
		out[ring] = n
	}
	return out, rows.Err()
}

// DeviceCheckIns reads the check-in times at or after since of every
// device, oldest first: the forecast's history of when devices show up.
func (s *Store) DeviceCheckIns(ctx context.Context, since time.Time) (map[int64][]time.Time, error) {
	rows, err := s.r.QueryContext(ctx, s.q("SELECT device_id, at FROM device_checkins WHERE at >= ? ORDER BY device_id, at"), since.UnixMicro())
	if err != nil {
		return nil, fmt.Errorf("read check-in times: %w", err)
	}
	defer rows.Close()
	out := map[int64][]time.Time{}
	for rows.Next() {
		var id, at int64
		if err := rows.Scan(&id, &at); err != nil {
			return nil, fmt.Errorf("read check-in times: %w", err)
		}
		out[id] = append(out[id], fromMicro(at))
	}
	return out, rows.Err()
}

// Halt is an automatic halt of a release, with the numbers behind it.
type Halt struct {
	ReleaseID int64
	Actor     string
	Reason    string
	Details   any  // for the audit log
	Rollback  bool // also roll the release back
}

// HaltRelease pauses a whole release (state paused, or rolled-back when
// asked) unless a pause of the whole release is already active, in one
// transaction that holds the release's row: two replicas evaluating the
// same failures halt it once. It records the pause and the halt in the audit log and bumps the
// generation so that agents learn at once. halted is false when the release
// was already paused (or rolled back) and nothing was written.
func (s *Store) HaltRelease(ctx context.Context, h Halt) (halted bool, err error) {
	err = s.tx(ctx, "halt release", func(tx *sql.Tx) error {
		halted = false
		var state string
		err := tx.QueryRowContext(ctx, s.q("SELECT state FROM releases WHERE id = ?"+s.forUpdate()), h.ReleaseID).Scan(&state)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if state != ReleasePublished && state != ReleasePaused {
			return nil
		}
		var n int
		if err := tx.QueryRowContext(ctx, s.q("SELECT count(*) FROM pauses WHERE release_id = ? AND ring IS NULL AND resumed_at IS NULL"),
			h.ReleaseID).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		now := s.nowMicro()
		var pauseID int64
		if err := tx.QueryRowContext(ctx, s.q(`INSERT INTO pauses (release_id, ring, actor, reason, created_at) VALUES (?, NULL, ?, ?, ?) RETURNING id`),
			h.ReleaseID, h.Actor, h.Reason, now).Scan(&pauseID); err != nil {
			return err
		}
		target := fmt.Sprintf("release/%d", h.ReleaseID)
		if err := s.appendAudit(ctx, tx, AuditEntry{Actor: h.Actor, Action: "pause.add", Target: fmt.Sprintf("release/%d", h.ReleaseID),
			Details: Pause{ID: pauseID, ReleaseID: h.ReleaseID, Actor: h.Actor, Reason: h.Reason, CreatedAt: fromMicro(now)}}); err != nil {
			return err
		}
		if err := s.appendAudit(ctx, tx, AuditEntry{Actor: h.Actor, Action: "release.halt", Target: target, Details: h.Details}); err != nil {
			return err
		}
		// As an admin's pause of the whole release does, the halt moves the
		// release to paused (or rolled-back), so listings show it halted.
		to := ReleasePaused
		if h.Rollback {
			to = ReleaseRolledBack
		}
		if to != state {
			if _, err := tx.ExecContext(ctx, s.q("UPDATE releases SET state = ? WHERE id = ?"), to, h.ReleaseID); err != nil {
				return err
			}
			if err := s.appendAudit(ctx, tx, AuditEntry{Actor: h.Actor, Action: "release." + to, Target: target,
				Details: map[string]any{"from": state, "reason": h.Reason}}); err != nil {
				return err
			}
		}
		halted = true
		return bumpGeneration(ctx, tx)
	})
	if err != nil {
		return false, fmt.Errorf("halt release %d: %w", h.ReleaseID, err)
	}
	return halted, nil
}
