// Package store keeps the control plane's state: devices and enrollment
// tokens, releases and their content-addressed bundles, rings and pauses,
// each device's state per release with per-ring aggregate counters, device
// reports and the audit log. It speaks SQLite (a file path, the default) and
// PostgreSQL (a postgres:// URL) with the same behaviour, so that any number
// of server replicas can share one PostgreSQL.
//
// Trust: the database is trusted (whoever can write to it controls the
// fleet); callers are trusted to have authenticated the actor they pass.
// Device input (report bodies, labels) is stored as given and must be
// validated by the caller before it is interpreted.
//
// The schema is versioned: Open applies the embedded migrations in order,
// each in its own transaction, and refuses a database written by a newer
// hotfleet without touching it. See migrate.go.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers "pgx"
	_ "modernc.org/sqlite"             // registers "sqlite"
)

// Dialect names the database behind a Store.
type Dialect string

const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// sqliteBusyTimeout is how long an SQLite writer waits for another process
// holding the write lock (a second server on the same file, a backup)
// before the statement fails with SQLITE_BUSY.
const sqliteBusyTimeout = 10 * time.Second

// sqliteReaders bounds concurrent SQLite readers; WAL lets them run beside
// the one writer, and more than a few only contend for the 2-4 CPUs a
// small server has.
const sqliteReaders = 4

// pgMaxConns bounds one replica's share of PostgreSQL's connection slots
// (100 by default), so that several replicas fit.
const pgMaxConns = 16

// txRetries is how often a transaction that PostgreSQL aborted for a
// serialization failure or deadlock is run again before the error is
// returned; these are transient under contention by design.
const txRetries = 5

// Store is an open database. It is safe for concurrent use.
type Store struct {
	dialect Dialect
	w       *sql.DB // writes; on SQLite a single connection (one writer)
	r       *sql.DB // reads; on PostgreSQL the same pool as w
	log     *slog.Logger
	now     func() time.Time

	applied []int // migrations this Open applied
}

// Open opens the database named by dsn and brings its schema up to date:
// "postgres://…" or "postgresql://…" is PostgreSQL, "sqlite:PATH" or any
// other string is an SQLite file path (created if missing).
func Open(ctx context.Context, dsn string, log *slog.Logger) (*Store, error) {
	return open(ctx, dsn, log, embedded)
}

func open(ctx context.Context, dsn string, log *slog.Logger, ms migrationSource) (*Store, error) {
	s, err := connect(ctx, dsn, log)
	if err != nil {
		return nil, err
	}
	if err := s.migrate(ctx, ms); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// connect opens the database without looking at its schema.
func connect(ctx context.Context, dsn string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{log: log, now: time.Now}
	var err error
	switch {
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		s.dialect = Postgres
		s.w, err = sql.Open("pgx", dsn)
		if err != nil {
			return nil, fmt.Errorf("open PostgreSQL %s: %w", redact(dsn), err)
		}
		s.w.SetMaxOpenConns(pgMaxConns)
		s.r = s.w
	default:
		path := strings.TrimPrefix(dsn, "sqlite:")
		if path == "" {
			return nil, errors.New("open SQLite: empty path; give a file path such as /var/lib/hotfleet/server.db")
		}
		if strings.ContainsAny(path, "?#") {
			return nil, fmt.Errorf("open SQLite %q: the path must not contain '?' or '#'; rename the file", path)
		}
		s.dialect = SQLite
		// _txlock=immediate takes the write lock at BEGIN, so a transaction
		// never fails half-way when upgrading from a read lock.
		opts := "?_pragma=journal_mode(WAL)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)" +
			"&_pragma=busy_timeout(" + strconv.FormatInt(sqliteBusyTimeout.Milliseconds(), 10) + ")"
		if s.w, err = sql.Open("sqlite", "file:"+path+opts+"&_txlock=immediate"); err != nil {
			return nil, fmt.Errorf("open SQLite %s: %w", path, err)
		}
		s.w.SetMaxOpenConns(1)
		if s.r, err = sql.Open("sqlite", "file:"+path+opts+"&_pragma=query_only(1)"); err != nil {
			s.w.Close()
			return nil, fmt.Errorf("open SQLite %s: %w", path, err)
		}
		s.r.SetMaxOpenConns(sqliteReaders)
	}
	if err := s.w.PingContext(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("connect to %s database %s: %w", s.dialect, redact(dsn), err)
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error {
	err := s.w.Close()
	if s.r != s.w {
		err = errors.Join(err, s.r.Close())
	}
	return err
}

// Dialect reports which database the store speaks.
func (s *Store) Dialect() Dialect { return s.dialect }

// Applied lists the schema versions this Open applied (empty when the
// database was already current, e.g. another replica migrated it).
func (s *Store) Applied() []int { return append([]int(nil), s.applied...) }

// SetClock replaces the clock used for timestamps and token expiry (tests,
// time-scaled rollouts). Call it before the store is shared.
func (s *Store) SetClock(now func() time.Time) { s.now = now }

func (s *Store) nowMicro() int64 { return s.now().UnixMicro() }

func fromMicro(us int64) time.Time { return time.UnixMicro(us).UTC() }

func fromNullMicro(us sql.NullInt64) time.Time {
	if !us.Valid {
		return time.Time{}
	}
	return fromMicro(us.Int64)
}

// q turns the package's '?' placeholders into the dialect's. Queries in
// this package never hold a '?' inside a literal.
func (s *Store) q(query string) string {
	if s.dialect != Postgres {
		return query
	}
	var b strings.Builder
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(query[i])
	}
	return b.String()
}

// forUpdate locks the selected rows on PostgreSQL; SQLite has one writer,
// whose transaction already excludes every other.
func (s *Store) forUpdate() string {
	if s.dialect == Postgres {
		return " FOR UPDATE"
	}
	return ""
}

// tx runs fn in a write transaction, retrying it when PostgreSQL aborted it
// for a serialization failure or a deadlock. fn must be safe to run again.
func (s *Store) tx(ctx context.Context, what string, fn func(*sql.Tx) error) error {
	var err error
	for attempt := 0; attempt < txRetries; attempt++ {
		err = s.tx1(ctx, fn)
		if !retryable(err) {
			break
		}
		s.log.Debug("store: transaction retried", "what", what, "attempt", attempt+1, "err", err)
	}
	return err
}

func (s *Store) tx1(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin a %s transaction: %w", s.dialect, err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit a %s transaction: %w", s.dialect, err)
	}
	return nil
}

func retryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "40P01")
}

// isUniqueViolation reports a unique or primary key conflict on either
// database.
func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code == "23505"
	}
	return err != nil && strings.Contains(err.Error(), "UNIQUE constraint failed")
}

// redact hides a password in a DSN for error messages and logs.
func redact(dsn string) string {
	if i := strings.Index(dsn, "://"); i >= 0 {
		if at := strings.LastIndex(dsn, "@"); at > i {
			cred := dsn[i+3 : at]
			if c := strings.Index(cred, ":"); c >= 0 {
				return dsn[:i+3] + cred[:c] + ":xxxxx" + dsn[at:]
			}
		}
	}
	return dsn
}
