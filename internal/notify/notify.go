// Package notify tells the people logged in to a device, the first time it is
// hot patched, that security fixes were applied and nothing needs restarting:
// a desktop notification on every user's session bus, a line in the system
// journal (or syslog), and a message of the day for the next login.
//
// Trust: the agent runs as root and the session buses belong to the users. A
// user's bus is never spoken to as root: the running binary is re-executed
// with that user's uid and gid (ChildMain) and sends the notification with the
// user's own rights, so a hostile user's bus or notification server gains
// nothing from answering. The text sent is hotfleet's configuration, not
// anything read from the users.
package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Config says whether and what to tell the users.
type Config struct {
	Enabled  bool
	Summary  string // default DefaultSummary
	Body     string // default DefaultBody
	MotdPath string // default DefaultMotdPath
}

// Result says which channels carried the message.
type Result struct {
	Desktop []string // users whose session bus accepted a notification ("alice (uid 1000)")
	Journal bool     // a line went to the system journal (or syslog)
	Motd    string   // path written, "" if none
}

const (
	DefaultSummary  = "Security fixes applied"
	DefaultBody     = "hotfleet applied security fixes to running programs. Nothing needs restarting."
	DefaultMotdPath = "/run/motd.d/hotfleet"

	// ChildEnv, set to 1, makes the binary the per-user notification sender
	// (ChildMain); Notify sets it when it re-executes itself as a user.
	ChildEnv = "HOTFLEET_NOTIFY_CHILD"

	// appName is how the notification names its sender in the desktop's
	// notification list.
	appName = "hotfleet"
	// desktopTimeout bounds one user's notification, from starting the child
	// to the server's reply: a hung desktop must not hold up the others.
	desktopTimeout = 5 * time.Second
	// desktopParallel is how many users are notified at once: enough that a
	// few hung desktops do not serialise their timeouts, few enough for a
	// small device.
	desktopParallel = 4
	// maxSessions bounds the session buses notified: a terminal server with
	// more logged-in users than this gets the journal and motd only.
	maxSessions = 256
	// maxRequest bounds what the child reads from stdin: a summary and a body.
	maxRequest = 64 << 10
	// notificationExpire asks the server to keep the notification up for
	// 10 s (milliseconds); servers may ignore it.
	notificationExpire = 10_000
)

// paths are where the channels live, so that tests can point them at their
// own bus, journal socket and syslog socket.
type paths struct {
	runUser string // holds UID/bus for each logged-in user
	journal string // the journal's native protocol socket
	syslog  string // the syslog socket, used when the journal is absent
	exe     func() (string, error)
}

var host = paths{
	runUser: "/run/user",
	journal: "/run/systemd/journal/socket",
	syslog:  "/dev/log",
	exe:     os.Executable,
}

// Notify tells the logged-in users. Failure of one channel does not stop the
// others; the error joins the failures of all of them.
func Notify(ctx context.Context, cfg Config, log *slog.Logger) (Result, error) {
	return host.notify(ctx, cfg, log)
}

func (p paths) notify(ctx context.Context, cfg Config, log *slog.Logger) (Result, error) {
	var res Result
	if !cfg.Enabled {
		return res, nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Summary == "" {
		cfg.Summary = DefaultSummary
	}
	if cfg.Body == "" {
		cfg.Body = DefaultBody
	}
	if cfg.MotdPath == "" {
		cfg.MotdPath = DefaultMotdPath
	}
	var errs []error

	users, err := p.desktop(ctx, cfg, log)
	res.Desktop = users
	if err != nil {
		errs = append(errs, err)
	}

	sent, err := p.journalOrSyslog(ctx, cfg.Summary+": "+cfg.Body)
	res.Journal = sent
	switch {
	case err != nil:
		errs = append(errs, err)
	case !sent:
		log.Info("no system journal or syslog socket to notify", "journal", p.journal, "syslog", p.syslog)
	}

	if err := writeMotd(cfg.MotdPath, cfg.Body); err != nil {
		errs = append(errs, err)
	} else {
		res.Motd = cfg.MotdPath
	}
	log.Info("told the logged-in users about the applied fixes", "desktop", res.Desktop, "journal", res.Journal, "motd", res.Motd)
	return res, errors.Join(errs...)
}

// session is one user's session bus.
type session struct {
	uid, gid uint32
	name     string
	bus      string
}

func (s session) String() string { return fmt.Sprintf("%s (uid %d)", s.name, s.uid) }

// sessions lists the session buses under runUser: directories named by a
// uid above 0 holding a socket "bus" that the uid owns. A bus socket owned by
// someone else is not that user's session and is skipped.
func (p paths) sessions(log *slog.Logger) ([]session, error) {
	entries, err := os.ReadDir(p.runUser)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list session buses in %s: %w", p.runUser, err)
	}
	var out []session
	for _, e := range entries {
		uid64, err := strconv.ParseUint(e.Name(), 10, 32)
		if err != nil || uid64 == 0 {
			continue
		}
		bus := filepath.Join(p.runUser, e.Name(), "bus")
		fi, err := os.Lstat(bus)
		if err != nil || fi.Mode().Type() != fs.ModeSocket {
			continue
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || uint64(st.Uid) != uid64 {
			log.Warn("skipping a session bus not owned by its user", "bus", bus)
			continue
		}
		s := session{uid: uint32(uid64), gid: st.Gid, name: "uid " + e.Name(), bus: bus}
		if u, err := user.LookupId(e.Name()); err == nil {
			s.name = u.Username
			if g, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
				s.gid = uint32(g)
			}
		}
		if len(out) == maxSessions {
			log.Warn("too many session buses; notifying only the first ones", "limit", maxSessions)
			break
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].uid < out[j].uid })
	return out, nil
}

// desktop sends the notification on every session bus, each as its user.
func (p paths) desktop(ctx context.Context, cfg Config, log *slog.Logger) ([]string, error) {
	ss, err := p.sessions(log)
	if err != nil {
		return nil, err
	}
	if len(ss) == 0 {
		return nil, nil
	}
	exe, err := p.exe()
	if err != nil {
		return nil, fmt.Errorf("find the running binary to notify desktop users: %w", err)
	}
	// Each user gets their own child; a few at a time keep a hung desktop
	// from delaying everyone by desktopTimeout without flooding a small device.
	errs := make([]error, len(ss))
	ids := make([]string, len(ss))
	sem := make(chan struct{}, desktopParallel)
	var wg sync.WaitGroup
	for i, s := range ss {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			ids[i], errs[i] = sendAs(ctx, exe, s, cfg)
		}()
	}
	wg.Wait()
	var told []string
	for i, s := range ss {
		if errs[i] != nil {
			errs[i] = fmt.Errorf("notify %s on %s: %w", s, s.bus, errs[i])
			log.Warn("desktop notification failed", "user", s.String(), "err", errs[i])
			continue
		}
		log.Debug("desktop notification sent", "user", s.String(), "id", ids[i])
		told = append(told, s.String())
	}
	return told, errors.Join(errs...)
}

// request is what Notify hands the child on stdin.
type request struct {
	Summary, Body string
}

// sendAs re-executes exe as the session's user to send the notification and
// returns the id the notification server gave it.
func sendAs(ctx context.Context, exe string, s session, cfg Config) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, desktopTimeout)
	defer cancel()
	req, err := json.Marshal(request{Summary: cfg.Summary, Body: cfg.Body})
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, exe)
	// Nothing of root's environment goes to the user's process.
	cmd.Env = []string{
		ChildEnv + "=1",
		"DBUS_SESSION_BUS_ADDRESS=unix:path=" + s.bus,
		"XDG_RUNTIME_DIR=" + filepath.Dir(s.bus),
		"PATH=/usr/bin:/bin",
	}
	cmd.Dir = "/"
	cmd.Stdin = strings.NewReader(string(req))
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: s.uid, Gid: s.gid, Groups: []uint32{}},
		// No Pdeathsig: it fires when the forking OS thread exits, which
		// in a Go program happens whenever a locked goroutine ends. The
		// child ends itself after desktopTimeout (ChildMain).
	}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("no answer within %v: %w", desktopTimeout, ctx.Err())
		}
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = "no message"
		}
		return "", fmt.Errorf("sender as uid %d: %w: %s", s.uid, err, msg)
	}
	id, ok := strings.CutPrefix(strings.TrimSpace(stdout.String()), "notified ")
	if !ok {
		return "", fmt.Errorf("sender as uid %d printed %q (is ChildMain wired into main?)", s.uid, stdout.String())
	}
	return id, nil
}

// ChildMain is called at the start of main() when ChildEnv is set: it reads
// the notification from stdin, sends it on the session bus in
// DBUS_SESSION_BUS_ADDRESS, prints "notified ID" and exits 0, or prints the
// error on stderr and exits 1.
func ChildMain() {
	// The parent kills a child that outlives its timeout; this is for a child
	// whose parent died first.
	time.AfterFunc(desktopTimeout, func() {
		fmt.Fprintln(os.Stderr, "no answer from the session bus within", desktopTimeout)
		os.Exit(1)
	})
	id, err := childSend(context.Background(), os.Stdin, os.Getenv("DBUS_SESSION_BUS_ADDRESS"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("notified %d\n", id)
	os.Exit(0)
}

func childSend(ctx context.Context, in io.Reader, addr string) (uint32, error) {
	data, err := io.ReadAll(io.LimitReader(in, maxRequest+1))
	if err != nil {
		return 0, fmt.Errorf("read the notification from stdin: %w", err)
	}
	if len(data) > maxRequest {
		return 0, fmt.Errorf("notification on stdin is larger than %d bytes", maxRequest)
	}
	var req request
	if err := json.Unmarshal(data, &req); err != nil {
		return 0, fmt.Errorf("decode the notification from stdin: %w", err)
	}
	if addr == "" {
		return 0, errors.New("DBUS_SESSION_BUS_ADDRESS is not set")
	}
	return sendDBus(ctx, addr, req)
}
