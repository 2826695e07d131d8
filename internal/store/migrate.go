package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// Migrations are SQL files named NNNN_what.sql, one directory per dialect.
// The two dialects differ in identity columns, byte types and triggers; two
// plain files per version read and review better than one file with a
// template language, and TestDialectsAgree checks that both define the same
// versions, tables and columns.
//
//go:embed migrations
var migrationFiles embed.FS

var embedded migrationSource = migrationFiles

// migrationSource holds migrations/<dialect>/NNNN_*.sql; tests substitute
// their own to prove failure handling.
type migrationSource = fs.FS

// pgMigrationLock is the pg_advisory_lock key that serializes migrations of
// replicas starting together; an arbitrary constant ("hotfleet" in ASCII).
const pgMigrationLock int64 = 0x686f74666c656574

// ErrSchemaTooNew is returned by Open for a database whose schema was
// written by a newer hotfleet; the database is left untouched.
var ErrSchemaTooNew = errors.New("database schema is newer than this hotfleet")

type migration struct {
	version int
	name    string
	sql     string
}

func loadMigrations(src migrationSource, d Dialect) ([]migration, error) {
	dir := path.Join("migrations", string(d))
	ents, err := fs.ReadDir(src, dir)
	if err != nil {
		return nil, fmt.Errorf("read the %s migrations: %w", d, err)
	}
	var ms []migration
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, ".sql") {
			continue
		}
		num, _, _ := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s/%s: name must start with a positive version such as 0002_", dir, name)
		}
		b, err := fs.ReadFile(src, path.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("read migration %s/%s: %w", dir, name, err)
		}
		ms = append(ms, migration{version: v, name: strings.TrimSuffix(name, ".sql"), sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i, m := range ms {
		if m.version != i+1 {
			return nil, fmt.Errorf("%s migrations: expected version %d, found %s; versions must be 1, 2, 3… without gaps", d, i+1, m.name)
		}
	}
	return ms, nil
}

// SchemaVersion is the newest schema this binary knows.
func SchemaVersion() int {
	ms, err := loadMigrations(embedded, SQLite)
	if err != nil {
		panic(err) // embedded files are checked by the tests
	}
	return len(ms)
}

// migrate applies the pending migrations, each with its schema_migrations
// row in one transaction, so a failed migration leaves the previous version
// intact. On PostgreSQL an advisory lock held on one connection makes
// replicas that start together migrate one after the other; the later ones
// find nothing to do.
func (s *Store) migrate(ctx context.Context, src migrationSource) error {
	ms, err := loadMigrations(src, s.dialect)
	if err != nil {
		return err
	}
	if len(ms) == 0 {
		return fmt.Errorf("no %s migrations embedded; the binary is broken", s.dialect)
	}
	conn, err := s.w.Conn(ctx)
	if err != nil {
		return fmt.Errorf("get a %s connection to migrate: %w", s.dialect, err)
	}
	defer conn.Close()
	if s.dialect == Postgres {
		if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", pgMigrationLock); err != nil {
			return fmt.Errorf("take the migration lock (pg_advisory_lock %d): %w", pgMigrationLock, err)
		}
		defer func() {
			// A cancelled ctx must not leave the lock held on a pooled connection.
			if _, err := conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", pgMigrationLock); err != nil {
				conn.Raw(func(any) error { return errors.New("drop the connection") })
			}
		}()
	}
	// migrate1 of version 1 already refuses a newer database, before any
	// write, so nothing below runs against it.
	for _, m := range ms {
		applied, err := s.migrate1(ctx, conn, m, len(ms))
		if err != nil {
			return err
		}
		if applied {
			s.applied = append(s.applied, m.version)
			s.log.Info("store: schema migrated", "dialect", s.dialect, "version", m.version, "migration", m.name)
		}
	}
	return nil
}

const createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version     INTEGER PRIMARY KEY,
	name        TEXT NOT NULL,
	applied_at  BIGINT NOT NULL
)`

// migrate1 applies m unless the database already has it.
func (s *Store) migrate1(ctx context.Context, conn *sql.Conn, m migration, known int) (bool, error) {
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("begin migration %s: %w", m.name, err)
	}
	defer tx.Rollback()
	cur, err := s.schemaVersion(ctx, tx)
	if err != nil {
		return false, err
	}
	if cur > known {
		return false, s.tooNew(cur, known)
	}
	if cur >= m.version {
		return false, nil
	}
	if cur != m.version-1 {
		return false, fmt.Errorf("schema is at version %d, cannot apply migration %s", cur, m.name)
	}
	if _, err := tx.ExecContext(ctx, m.sql); err != nil {
		return false, fmt.Errorf("apply %s migration %s (the schema stays at version %d): %w", s.dialect, m.name, cur, err)
	}
	if _, err := tx.ExecContext(ctx, s.q("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)"),
		m.version, m.name, s.nowMicro()); err != nil {
		return false, fmt.Errorf("record migration %s: %w", m.name, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("commit migration %s (the schema stays at version %d): %w", m.name, cur, err)
	}
	return true, nil
}

// schemaVersion reads the version, creating schema_migrations in an empty
// database. A newer database already has the table, so it is not touched.
func (s *Store) schemaVersion(ctx context.Context, tx *sql.Tx) (int, error) {
	var exists bool
	var err error
	if s.dialect == Postgres {
		err = tx.QueryRowContext(ctx, "SELECT to_regclass('schema_migrations') IS NOT NULL").Scan(&exists)
	} else {
		err = tx.QueryRowContext(ctx, "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'").Scan(&exists)
	}
	if err != nil {
		return 0, fmt.Errorf("look for the schema_migrations table: %w", err)
	}
	if !exists {
		if _, err := tx.ExecContext(ctx, createMigrationsTable); err != nil {
			return 0, fmt.Errorf("create the schema_migrations table: %w", err)
		}
		return 0, nil
	}
	var v sql.NullInt64
	if err := tx.QueryRowContext(ctx, "SELECT max(version) FROM schema_migrations").Scan(&v); err != nil {
		return 0, fmt.Errorf("read the schema version from schema_migrations: %w", err)
	}
	return int(v.Int64), nil
}

func (s *Store) tooNew(cur, known int) error {
	return fmt.Errorf("%w: the %s database is at schema version %d, this hotfleet knows up to %d; run the newer hotfleet (the database was not changed)",
		ErrSchemaTooNew, s.dialect, cur, known)
}
