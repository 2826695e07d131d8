package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
)

// Setting names.
const (
	SettingOverrides  = "ring-overrides"  // rollout.Overrides
	SettingThresholds = "halt-thresholds" // rollout.Thresholds
)

// Setting decodes the named setting into v; found is false (and v left
// alone) when it was never set.
func (s *Store) Setting(ctx context.Context, name string, v any) (found bool, err error) {
	var doc string
	err = s.r.QueryRowContext(ctx, s.q("SELECT value FROM settings WHERE name = ?"), name).Scan(&doc)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read setting %s: %w", name, err)
	}
	if err := json.Unmarshal([]byte(doc), v); err != nil {
		return false, fmt.Errorf("decode setting %s: %w", name, err)
	}
	return true, nil
}

// PutSetting stores the named setting, records who changed it, and
// announces the change to every replica (settings can move devices).
func (s *Store) PutSetting(ctx context.Context, name string, v any, actor string) error {
	doc, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode setting %s: %w", name, err)
	}
	err = s.tx(ctx, "put setting", func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO settings (name, value, updated_by, updated_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_by = excluded.updated_by, updated_at = excluded.updated_at`),
			name, string(doc), actor, s.nowMicro()); err != nil {
			return err
		}
		if err := s.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "setting.put", Target: "setting/" + name, Details: json.RawMessage(doc)}); err != nil {
			return err
		}
		return bumpGeneration(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("store setting %s: %w", name, err)
	}
	return nil
}
