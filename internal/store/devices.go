package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Errors callers match with errors.Is; the server maps them to HTTP status.
var (
	ErrNotFound     = errors.New("not found")
	ErrTokenUnknown = errors.New("enrollment token unknown")
	ErrTokenExpired = errors.New("enrollment token expired")
	ErrTokenUsedUp  = errors.New("enrollment token used up")
	ErrConflict     = errors.New("conflicts with the stored state")
)

// tokenBytes is the entropy of an enrollment token: the issue asks for at
// least 128 random bits; 256 leave no doubt.
const tokenBytes = 32

// NewToken describes an enrollment token to create.
type NewToken struct {
	CreatedBy string
	TTL       time.Duration // from now
	MaxUses   int
	Ring      string            // optional ring pin for devices enrolled with it
	Labels    map[string]string // given to devices enrolled with it
}

// Token is a stored enrollment token; the secret itself is never stored.
type Token struct {
	ID        int64
	CreatedBy string
	CreatedAt time.Time
	ExpiresAt time.Time
	MaxUses   int
	Uses      int
	Ring      string
	Labels    map[string]string
}

// CreateToken stores a new enrollment token and returns its secret, which
// only the caller ever sees: the database keeps its SHA-256.
func (s *Store) CreateToken(ctx context.Context, nt NewToken) (secret string, t Token, err error) {
	if nt.MaxUses <= 0 || nt.TTL <= 0 {
		return "", Token{}, fmt.Errorf("create enrollment token: max uses (%d) and TTL (%v) must be positive", nt.MaxUses, nt.TTL)
	}
	raw := make([]byte, tokenBytes)
	rand.Read(raw)
	secret = base64.RawURLEncoding.EncodeToString(raw)
	labels, err := encodeLabels(nt.Labels)
	if err != nil {
		return "", Token{}, err
	}
	now := s.nowMicro()
	t = Token{CreatedBy: nt.CreatedBy, CreatedAt: fromMicro(now), ExpiresAt: fromMicro(now + nt.TTL.Microseconds()),
		MaxUses: nt.MaxUses, Ring: nt.Ring, Labels: nt.Labels}
	err = s.tx(ctx, "create token", func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, s.q(`INSERT INTO enrollment_tokens
			(token_hash, created_by, created_at, expires_at, max_uses, ring, labels)
			VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`),
			tokenHash(secret), nt.CreatedBy, now, now+nt.TTL.Microseconds(), nt.MaxUses, nullString(nt.Ring), labels).Scan(&t.ID)
	})
	if err != nil {
		return "", Token{}, fmt.Errorf("create enrollment token (ring %q): %w", nt.Ring, err)
	}
	return secret, t, nil
}

func tokenHash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// consumeToken takes one use of the token inside tx, or says why not.
func (s *Store) consumeToken(ctx context.Context, tx *sql.Tx, secret string) (Token, error) {
	var t Token
	var ring sql.NullString
	var labels string
	var createdAt, expiresAt int64
	now := s.nowMicro()
	// One conditional UPDATE: two enrollments racing for the last use
	// cannot both win, on either database.
	err := tx.QueryRowContext(ctx, s.q(`UPDATE enrollment_tokens SET uses = uses + 1
		WHERE token_hash = ? AND expires_at > ? AND uses < max_uses
		RETURNING id, created_by, created_at, expires_at, max_uses, uses, ring, labels`),
		tokenHash(secret), now).Scan(&t.ID, &t.CreatedBy, &createdAt, &expiresAt, &t.MaxUses, &t.Uses, &ring, &labels)
	if errors.Is(err, sql.ErrNoRows) {
		var uses, maxUses int
		err := tx.QueryRowContext(ctx, s.q("SELECT id, expires_at, uses, max_uses FROM enrollment_tokens WHERE token_hash = ?"),
			tokenHash(secret)).Scan(&t.ID, &expiresAt, &uses, &maxUses)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return Token{}, ErrTokenUnknown
		case err != nil:
			return Token{}, fmt.Errorf("read enrollment token: %w", err)
		case expiresAt <= now:
			return Token{}, fmt.Errorf("%w: token %d expired at %s; create a new one", ErrTokenExpired, t.ID, fromMicro(expiresAt).Format(time.RFC3339))
		default:
			return Token{}, fmt.Errorf("%w: token %d was used %d of %d times; create a new one", ErrTokenUsedUp, t.ID, uses, maxUses)
		}
	}
	if err != nil {
		return Token{}, fmt.Errorf("consume enrollment token: %w", err)
	}
	t.CreatedAt, t.ExpiresAt, t.Ring = fromMicro(createdAt), fromMicro(expiresAt), ring.String
	if t.Labels, err = decodeLabels(labels); err != nil {
		return Token{}, err
	}
	return t, nil
}

// DeviceState is a device's standing with the server.
type DeviceState string

const (
	DeviceActive  DeviceState = "active"
	DeviceRetired DeviceState = "retired" // left the fleet in order; its history stays
	DeviceRevoked DeviceState = "revoked" // refused at once, for good
)

// NewDevice describes a device to create.
type NewDevice struct {
	PublicKey []byte
	Hostname  string
	Labels    map[string]string
	RingPin   string // empty: the ring comes from the hash of the id
}

// Device is a stored device.
type Device struct {
	ID            int64
	PublicKey     []byte
	Hostname      string
	Labels        map[string]string
	RingPin       string
	State         DeviceState
	TokenID       int64 // 0 when created without a token
	EnrolledAt    time.Time
	LastSeen      time.Time // zero before the first check-in
	InventoryHash string
}

// Enroll consumes one use of the enrollment token and creates the device in
// the same transaction, so a failed enrollment does not burn a use. The
// token's ring and labels apply unless nd sets its own (nd's labels are
// merged over the token's).
func (s *Store) Enroll(ctx context.Context, secret string, nd NewDevice) (Device, error) {
	var d Device
	err := s.tx(ctx, "enroll", func(tx *sql.Tx) error {
		t, err := s.consumeToken(ctx, tx, secret)
		if err != nil {
			return err
		}
		merged := map[string]string{}
		for k, v := range t.Labels {
			merged[k] = v
		}
		for k, v := range nd.Labels {
			merged[k] = v
		}
		nd := nd
		nd.Labels = merged
		if nd.RingPin == "" {
			nd.RingPin = t.Ring
		}
		d, err = s.createDevice(ctx, tx, nd, t.ID)
		return err
	})
	if err != nil {
		return Device{}, fmt.Errorf("enroll device %q: %w", nd.Hostname, err)
	}
	return d, nil
}

// CreateDevice creates a device without a token (admin import, tests).
func (s *Store) CreateDevice(ctx context.Context, nd NewDevice) (Device, error) {
	var d Device
	err := s.tx(ctx, "create device", func(tx *sql.Tx) (err error) {
		d, err = s.createDevice(ctx, tx, nd, 0)
		return err
	})
	if err != nil {
		return Device{}, fmt.Errorf("create device %q: %w", nd.Hostname, err)
	}
	return d, nil
}

func (s *Store) createDevice(ctx context.Context, tx *sql.Tx, nd NewDevice, tokenID int64) (Device, error) {
	if len(nd.PublicKey) == 0 {
		return Device{}, errors.New("the device has no public key")
	}
	labels, err := encodeLabels(nd.Labels)
	if err != nil {
		return Device{}, err
	}
	now := s.nowMicro()
	d := Device{PublicKey: nd.PublicKey, Hostname: nd.Hostname, Labels: nd.Labels, RingPin: nd.RingPin,
		State: DeviceActive, TokenID: tokenID, EnrolledAt: fromMicro(now)}
	var tok sql.NullInt64
	if tokenID != 0 {
		tok = sql.NullInt64{Int64: tokenID, Valid: true}
	}
	err = tx.QueryRowContext(ctx, s.q(`INSERT INTO devices (public_key, hostname, labels, ring_pin, token_id, enrolled_at)
		VALUES (?, ?, ?, ?, ?, ?) RETURNING id`),
		nd.PublicKey, nd.Hostname, labels, nullString(nd.RingPin), tok, now).Scan(&d.ID)
	if isUniqueViolation(err) {
		return Device{}, fmt.Errorf("%w: a device with this public key is already enrolled; the device must generate a new key", ErrConflict)
	}
	if err != nil {
		return Device{}, fmt.Errorf("insert device: %w", err)
	}
	return d, nil
}

const deviceColumns = "id, public_key, hostname, labels, ring_pin, state, token_id, enrolled_at, last_seen, inventory_hash"

func scanDevice(row interface{ Scan(...any) error }) (Device, error) {
	var d Device
	var labels string
	var ring sql.NullString
	var tok, lastSeen sql.NullInt64
	var enrolled int64
	if err := row.Scan(&d.ID, &d.PublicKey, &d.Hostname, &labels, &ring, &d.State, &tok, &enrolled, &lastSeen, &d.InventoryHash); err != nil {
		return Device{}, err
	}
	d.RingPin, d.TokenID, d.EnrolledAt, d.LastSeen = ring.String, tok.Int64, fromMicro(enrolled), fromNullMicro(lastSeen)
	var err error
	d.Labels, err = decodeLabels(labels)
	return d, err
}

// Device reads one device.
func (s *Store) Device(ctx context.Context, id int64) (Device, error) {
	d, err := scanDevice(s.r.QueryRowContext(ctx, s.q("SELECT "+deviceColumns+" FROM devices WHERE id = ?"), id))
	if errors.Is(err, sql.ErrNoRows) {
		return Device{}, fmt.Errorf("device %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return Device{}, fmt.Errorf("read device %d: %w", id, err)
	}
	return d, nil
}

// DeviceByKey finds the device enrolled with a public key.
func (s *Store) DeviceByKey(ctx context.Context, publicKey []byte) (Device, error) {
	d, err := scanDevice(s.r.QueryRowContext(ctx, s.q("SELECT "+deviceColumns+" FROM devices WHERE public_key = ?"), publicKey))
	if errors.Is(err, sql.ErrNoRows) {
		return Device{}, fmt.Errorf("device with this key: %w", ErrNotFound)
	}
	if err != nil {
		return Device{}, fmt.Errorf("read device by key: %w", err)
	}
	return d, nil
}

// RetireDevice marks an active device retired. Retiring a retired device
// is a no-op; a revoked device stays revoked (ErrConflict).
func (s *Store) RetireDevice(ctx context.Context, id int64, actor, why string) error {
	return s.setDeviceState(ctx, id, DeviceRetired, actor, why)
}

// RevokeDevice marks a device revoked: it is refused from now on and can
// never come back; it must enroll again with a new key and gets a new id.
func (s *Store) RevokeDevice(ctx context.Context, id int64, actor, why string) error {
	return s.setDeviceState(ctx, id, DeviceRevoked, actor, why)
}

func (s *Store) setDeviceState(ctx context.Context, id int64, to DeviceState, actor, why string) error {
	err := s.tx(ctx, "device "+string(to), func(tx *sql.Tx) error {
		var cur DeviceState
		err := tx.QueryRowContext(ctx, s.q("SELECT state FROM devices WHERE id = ?"+s.forUpdate()), id).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if cur == to {
			return nil
		}
		if cur == DeviceRevoked {
			return fmt.Errorf("%w: the device is revoked, which is final", ErrConflict)
		}
		if _, err := tx.ExecContext(ctx, s.q("UPDATE devices SET state = ? WHERE id = ?"), to, id); err != nil {
			return err
		}
		if err := s.appendAudit(ctx, tx, AuditEntry{Actor: actor, Action: "device." + string(to),
			Target: fmt.Sprintf("device/%d", id), Details: map[string]any{"from": cur, "reason": why}}); err != nil {
			return err
		}
		return bumpGeneration(ctx, tx)
	})
	if err != nil {
		return fmt.Errorf("mark device %d %s: %w", id, to, err)
	}
	return nil
}

// TouchDevice records a check-in: last seen now and, when given, the hash
// of the inventory the device reported.
func (s *Store) TouchDevice(ctx context.Context, id int64, inventoryHash string) error {
	err := s.tx(ctx, "touch device", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE devices SET last_seen = ?,
			inventory_hash = CASE WHEN ? = '' THEN inventory_hash ELSE ? END WHERE id = ?`),
			s.nowMicro(), inventoryHash, inventoryHash, id)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("record check-in of device %d: %w", id, err)
	}
	return nil
}

func encodeLabels(l map[string]string) (string, error) {
	if l == nil {
		return "{}", nil
	}
	b, err := json.Marshal(l)
	if err != nil {
		return "", fmt.Errorf("encode labels: %w", err)
	}
	return string(b), nil
}

func decodeLabels(s string) (map[string]string, error) {
	l := map[string]string{}
	if err := json.Unmarshal([]byte(s), &l); err != nil {
		return nil, fmt.Errorf("decode stored labels %q: %w", s, err)
	}
	return l, nil
}

func nullString(s string) sql.NullString { return sql.NullString{String: s, Valid: s != ""} }
