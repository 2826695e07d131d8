package store

import (
	"context"
	"database/sql"
	"errors"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Generation is the fleet generation: it changes whenever some device's
// assignments may have changed.
func (s *Store) Generation(ctx context.Context) (int64, error) {
	var n int64
	err := s.r.QueryRowContext(ctx, "SELECT n FROM fleet_generation WHERE id = 1").Scan(&n)
	return n, err
}

// BumpGeneration announces a change of assignments to every replica.
func (s *Store) BumpGeneration(ctx context.Context) error {
	return s.tx(ctx, "bump the fleet generation", func(tx *sql.Tx) error { return bumpGeneration(ctx, tx) })
}

func bumpGeneration(ctx context.Context, tx *sql.Tx) error {
	_, err := tx.ExecContext(ctx, "UPDATE fleet_generation SET n = n + 1 WHERE id = 1")
	return err
}

// Unavailable reports whether err means the database cannot be reached
// (down, restarting, refusing connections), as opposed to a bad query or a
// constraint: the caller should back off and retry.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	var ne net.Error
	var pe *pgconn.PgError
	var ce *pgconn.ConnectError
	switch {
	case errors.As(err, &ce), errors.As(err, &ne), errors.Is(err, sql.ErrConnDone), errors.Is(err, context.DeadlineExceeded):
		return true
	case errors.As(err, &pe):
		// Class 08: connection exception; 57P01-03: admin shutdown, crash
		// shutdown, cannot connect now.
		return strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "57P")
	}
	msg := err.Error()
	return strings.Contains(msg, "connection refused") || strings.Contains(msg, "database is locked") ||
		strings.Contains(msg, "unexpected EOF") || strings.Contains(msg, "broken pipe") || strings.Contains(msg, "connection reset")
}
