package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	_ "time/tzdata" // maintenance windows name time zones; hosts may lack the database

	"hotfleet/internal/api"
	"hotfleet/internal/server"
	"hotfleet/internal/store"
)

// Server timeouts, each with its reason.
const (
	// serverReadHeader bounds a slow client's headers (slowloris).
	serverReadHeader = 10 * time.Second
	// serverIdle closes kept-alive connections nobody uses; agents
	// reconnect for each check-in anyway.
	serverIdle = 2 * time.Minute
	// serverWrite must outlast the longest watch, plus a bundle download on
	// a slow link.
	serverWrite = api.MaxWatch + 2*time.Minute
	// serverShutdown is how long requests in flight may finish at exit;
	// watches are ended at once with an answer, so this is for uploads.
	serverShutdown = 10 * time.Second
)

// clockOffsetEnv names a file holding a Go duration added to the server's
// policy clock: end-to-end tests move a rollout by days this way.
const clockOffsetEnv = "HOTFLEET_SERVER_CLOCK_OFFSET_FILE"

func cmdServer(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("hotfleet server", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: hotfleet server [flags]

Runs the control plane: the device API (enroll, check-in, reports, watch,
bundles) and the admin API, over plaintext HTTP.

Test hook: when %s names a file, the rollout's clock is
the real time plus the Go duration in that file (e.g. 72h; missing or empty
is 0), re-read whenever the file changes. Never set it in production.

Flags:
`, clockOffsetEnv)
		fs.PrintDefaults()
	}
	listen := fs.String("listen", "127.0.0.1:8420", "address to serve HTTP on (port 0 picks a free port)")
	db := fs.String("db", "", "database: an SQLite file path, or a postgres:// URL (default DATA_DIR/server.db)")
	dataDir := fs.String("data-dir", "/var/lib/hotfleet", "directory for the SQLite database and the bootstrap admin token")
	checkIn := fs.Duration("checkin-interval", server.DefaultCheckIn, "base interval between device check-ins (jittered ±25 %)")
	offline := fs.Duration("offline-after", server.DefaultOffline, "a device silent this long counts as offline")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	rest, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		return fmt.Errorf("%w: hotfleet server takes no arguments, got %q", errUsage, rest)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("%w: --log-level %q: want debug, info, warn or error", errUsage, *logLevel)
	}
	if *checkIn <= 0 || *offline <= 0 {
		return fmt.Errorf("%w: --checkin-interval and --offline-after must be positive", errUsage)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	if err := os.MkdirAll(*dataDir, 0o700); err != nil {
		return fmt.Errorf("create the data directory %s: %w; pass --data-dir a writable directory", *dataDir, err)
	}
	dsn := *db
	if dsn == "" {
		dsn = filepath.Join(*dataDir, "server.db")
	}
	st, err := store.Open(ctx, dsn, log)
	if err != nil {
		return err
	}
	defer st.Close()

	cfg := server.Config{Store: st, Log: log, CheckIn: *checkIn, OfflineAfter: *offline}
	if path := os.Getenv(clockOffsetEnv); path != "" {
		c := &offsetClock{path: path, log: log}
		cfg.Now = c.now
		st.SetClock(c.now)
		log.Warn("the policy clock follows an offset file (test hook)", "file", path, "offset", c.offset())
	}
	srv := server.New(cfg)
	tokenPath, err := srv.Bootstrap(ctx, *dataDir)
	if err != nil {
		return err
	}
	if tokenPath != "" {
		fmt.Printf("admin token written to %s\n", tokenPath)
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w; pick another --listen address", *listen, err)
	}
	hs := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: serverReadHeader,
		IdleTimeout:       serverIdle,
		WriteTimeout:      serverWrite,
		// Requests end with ctx, so a shutdown answers watches at once.
		BaseContext: func(net.Listener) context.Context { return ctx },
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	go srv.Run(runCtx)
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	fmt.Printf("hotfleet server listening on http://%s (db: %s)\n", ln.Addr(), describeDB(st.Dialect(), dsn))

	select {
	case err := <-served:
		return fmt.Errorf("serve HTTP on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), serverShutdown)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		hs.Close()
		log.Warn("requests still running at shutdown were cut", "err", err)
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// describeDB names the database for the start-up line without a password.
func describeDB(d store.Dialect, dsn string) string {
	if d != store.Postgres {
		return "sqlite " + strings.TrimPrefix(dsn, "sqlite:")
	}
	if u, err := url.Parse(dsn); err == nil {
		return "postgres " + u.Redacted()
	}
	return "postgres"
}

// offsetClock is time.Now plus the duration written in a file, re-read when
// the file's modification time or size changes.
type offsetClock struct {
	path string
	log  *slog.Logger

	mu    sync.Mutex
	mtime time.Time
	size  int64
	seen  bool
	off   time.Duration
}

func (c *offsetClock) now() time.Time { return time.Now().Add(c.offset()) }

func (c *offsetClock) offset() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	fi, err := os.Stat(c.path)
	if err != nil {
		c.seen, c.off = false, 0
		return 0
	}
	if c.seen && fi.ModTime().Equal(c.mtime) && fi.Size() == c.size {
		return c.off
	}
	b, err := os.ReadFile(c.path)
	if err != nil {
		return c.off
	}
	c.seen, c.mtime, c.size = true, fi.ModTime(), fi.Size()
	text := strings.TrimSpace(string(b))
	if text == "" {
		c.off = 0
		return 0
	}
	d, err := time.ParseDuration(text)
	if err != nil {
		c.log.Warn("clock offset file does not hold a Go duration; keeping the previous offset", "file", c.path, "text", text, "err", err)
		return c.off
	}
	c.off = d
	return d
}
