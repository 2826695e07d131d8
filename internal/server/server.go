// Package server is hotfleet's control plane over HTTP: devices enroll,
// check in, hold a watch and send reports; admins manage releases, rings,
// pauses, devices and tokens through the admin API (api/openapi.yaml).
//
// The server keeps no state of its own apart from the database, so any
// number of replicas can share one PostgreSQL: assignment changes are
// announced through a generation counter in the database that every
// replica polls to wake its watches.
//
// Trust: devices are authenticated by Ed25519 signatures over each request
// (package api), admins by bearer tokens stored hashed. Every input is
// bounded in size and checked before anything is written.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"hotfleet/internal/api"
	"hotfleet/internal/store"
)

// Defaults, each with its reason.
const (
	// DefaultCheckIn is the base check-in interval; each answer jitters it
	// by ±25 % so a fleet's check-ins spread out.
	DefaultCheckIn = 5 * time.Minute
	// DefaultOffline: a device silent this long counts as offline.
	DefaultOffline = 24 * time.Hour
	// generationPoll is how often a replica looks at the generation
	// counter: the delay between an admin's pause and the watches waking.
	generationPoll = 500 * time.Millisecond
)

// Config configures a server.
type Config struct {
	Store        *store.Store
	Log          *slog.Logger
	Now          func() time.Time // the policy clock; time.Now if nil
	CheckIn      time.Duration    // base check-in interval
	OfflineAfter time.Duration
}

// Server serves the device and admin APIs.
type Server struct {
	cfg   Config
	st    *store.Store
	log   *slog.Logger
	now   func() time.Time
	gen   *generations
	mux   *http.ServeMux
	start time.Time
}

// New returns a server; Run must be running for watches to wake.
func New(cfg Config) *Server {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CheckIn <= 0 {
		cfg.CheckIn = DefaultCheckIn
	}
	if cfg.OfflineAfter <= 0 {
		cfg.OfflineAfter = DefaultOffline
	}
	s := &Server{cfg: cfg, st: cfg.Store, log: cfg.Log, now: cfg.Now, mux: http.NewServeMux(), start: time.Now()}
	s.gen = newGenerations()
	s.mux.HandleFunc("GET "+api.PathHealth, s.handle(s.health))
	s.deviceRoutes()
	s.adminRoutes()
	return s
}

// Handler is the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.mux }

// Run polls the generation counter until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	t := time.NewTicker(generationPoll)
	defer t.Stop()
	for {
		if n, err := s.st.Generation(ctx); err == nil {
			s.gen.set(n)
		} else if ctx.Err() == nil {
			s.log.Warn("read the fleet generation", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (s *Server) health(w http.ResponseWriter, r *http.Request) error {
	if _, err := s.st.Generation(r.Context()); err != nil {
		return unavailable(err)
	}
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// httpError is an error with the status and field to tell the client.
type httpError struct {
	status     int
	field      string
	msg        string
	retryAfter time.Duration
	err        error // logged, never sent
}

func (e *httpError) Error() string { return e.msg }
func (e *httpError) Unwrap() error { return e.err }

func badRequest(field, format string, args ...any) error {
	return &httpError{status: http.StatusBadRequest, field: field, msg: fmt.Sprintf(format, args...)}
}

func statusError(status int, format string, args ...any) error {
	return &httpError{status: status, msg: fmt.Sprintf(format, args...)}
}

// unavailable is a database outage: the client backs off and retries.
func unavailable(err error) error {
	return &httpError{status: http.StatusServiceUnavailable, msg: "the server's database is unavailable; retry later", retryAfter: 5 * time.Second, err: err}
}

// handle adapts a handler that returns an error. Errors that are not
// httpErrors are internal: logged in full, answered with a plain 500 that
// leaks nothing (or 503 when the database is down).
func (s *Server) handle(h func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		err := h(w, r)
		if err == nil {
			return
		}
		var he *httpError
		if !errors.As(err, &he) {
			if store.Unavailable(err) {
				he = unavailable(err).(*httpError)
			} else {
				he = &httpError{status: http.StatusInternalServerError, msg: "internal error; the server log has the details", err: err}
			}
		}
		if he.status >= 500 {
			s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "status", he.status, "err", err)
		}
		if he.retryAfter > 0 {
			w.Header().Set("Retry-After", fmt.Sprint(int(he.retryAfter.Seconds())))
		}
		writeJSON(w, he.status, api.Error{Error: he.msg, Field: he.field})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}
