package notify

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"hotfleet/internal/testenv"
)

// serverEnv makes the test binary a notification server on the session bus
// in DBUS_SESSION_BUS_ADDRESS that prints every Notify call as a JSON line.
const serverEnv = "HOTFLEET_NOTIFY_TEST_SERVER"

const (
	// nobody is the unprivileged user the tests' sessions belong to.
	nobody = 65534
	// games is a second user every Debian system has (base-passwd), whose
	// primary group (60) differs from its uid.
	games = 5
)

func TestMain(m *testing.M) {
	if os.Getenv(ChildEnv) == "1" {
		ChildMain()
	}
	if os.Getenv(serverEnv) == "1" {
		if err := serve(os.Getenv("DBUS_SESSION_BUS_ADDRESS")); err != nil {
			fmt.Fprintln(os.Stderr, "test notification server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// call is one Notify call as the test server saw it.
type call struct {
	App, Summary, Body string
	UID                uint32 // of the connection that called, asked of the bus
	GID                string // real gid of the calling process
}

type server struct {
	conn *dbus.Conn
	out  *json.Encoder
}

func (s *server) Notify(sender dbus.Sender, app string, replaces uint32, icon, summary, body string,
	actions []string, hints map[string]dbus.Variant, expire int32) (uint32, *dbus.Error) {
	var uid uint32
	if err := s.conn.BusObject().Call("org.freedesktop.DBus.GetConnectionUnixUser", 0, string(sender)).Store(&uid); err != nil {
		return 0, dbus.MakeFailedError(err)
	}
	var pid uint32
	if err := s.conn.BusObject().Call("org.freedesktop.DBus.GetConnectionUnixProcessID", 0, string(sender)).Store(&pid); err != nil {
		return 0, dbus.MakeFailedError(err)
	}
	// The caller waits for our reply, so its status is still there.
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, dbus.MakeFailedError(err)
	}
	var gid string
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "Gid:"); ok {
			gid = strings.Fields(v)[0]
		}
	}
	if err := s.out.Encode(call{App: app, Summary: summary, Body: body, UID: uid, GID: gid}); err != nil {
		return 0, dbus.MakeFailedError(err)
	}
	return 42, nil
}

func serve(addr string) error {
	conn, err := dbus.Connect(addr)
	if err != nil {
		return err
	}
	s := &server{conn: conn, out: json.NewEncoder(os.Stdout)}
	if err := conn.Export(s, notificationsPath, notificationsIface); err != nil {
		return err
	}
	reply, err := conn.RequestName(notificationsName, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		return fmt.Errorf("own %s: %v (reply %v)", notificationsName, err, reply)
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

// world is a run dir, journal socket and syslog path the test controls.
type world struct {
	base    string
	p       paths
	journal *net.UnixConn
	calls   map[uint32]*bufio.Scanner // of each session's notification server
}

// newWorld makes a base dir every user can traverse, with a copy of the
// test binary in it: the test binary's own build dir is root's alone, and the
// children run as nobody.
func newWorld(t *testing.T) *world {
	t.Helper()
	base, err := os.MkdirTemp("", "notify-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(base, "notify.test")
	src, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, src, 0o755); err != nil {
		t.Fatal(err)
	}
	w := &world{base: base, p: paths{
		runUser: filepath.Join(base, "run", "user"),
		journal: filepath.Join(base, "journal.socket"),
		syslog:  filepath.Join(base, "dev-log"),
		exe:     func() (string, error) { return exe, nil },
	}}
	if err := os.MkdirAll(w.p.runUser, 0o755); err != nil {
		t.Fatal(err)
	}
	return w
}

// listen binds a datagram socket at path, as journald or syslogd would.
func listen(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// read returns the next datagram, or nil when none comes within d.
func read(t *testing.T, c *net.UnixConn, d time.Duration) []byte {
	t.Helper()
	buf := make([]byte, 64<<10)
	_ = c.SetReadDeadline(time.Now().Add(d))
	n, _, err := c.ReadFrom(buf)
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return nil
		}
		t.Fatal(err)
	}
	return buf[:n]
}

func as(uid uint32) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}},
		Pdeathsig:  syscall.SIGKILL,
	}
}

// startSession starts a real dbus-daemon as uid with its socket where a
// logind session's would be, and the test notification server on it.
func (w *world) startSession(t *testing.T, uid uint32) {
	t.Helper()
	daemon, err := exec.LookPath("dbus-daemon")
	if err != nil {
		if testenv.InCI() {
			t.Fatal("CI=true but dbus-daemon is not installed (apt package dbus-daemon): ", err)
		}
		t.Skip("needs dbus-daemon: ", err)
	}
	dir := filepath.Join(w.p.runUser, strconv.Itoa(int(uid)))
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, int(uid), int(uid)); err != nil {
		t.Fatal(err)
	}
	bus := filepath.Join(dir, "bus")
	env := []string{"PATH=/usr/bin:/bin", "HOME=/nonexistent", "XDG_RUNTIME_DIR=" + dir}

	d := exec.Command(daemon, "--session", "--nofork", "--nopidfile", "--address=unix:path="+bus, "--print-address")
	d.Env, d.SysProcAttr, d.Dir = env, as(uid), "/"
	var derr bytes.Buffer
	d.Stderr = &derr
	dout, err := d.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Process.Kill(); _ = d.Wait() })
	line, err := bufio.NewReader(dout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "unix:path="+bus) {
		t.Fatalf("dbus-daemon printed %q, %v; stderr: %s", line, err, derr.String())
	}
	addr := strings.TrimSpace(line)

	exe, _ := w.p.exe()
	s := exec.Command(exe)
	s.Env = append(env, serverEnv+"=1", "DBUS_SESSION_BUS_ADDRESS="+addr)
	s.SysProcAttr, s.Dir = as(uid), "/"
	var serr bytes.Buffer
	s.Stderr = &serr
	sin, err := s.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	sout, err := s.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sin.Close(); _ = s.Process.Kill(); _ = s.Wait() })
	sc := bufio.NewScanner(sout)
	if !sc.Scan() || sc.Text() != "ready" {
		t.Fatalf("test notification server printed %q; stderr: %s", sc.Text(), serr.String())
	}
	if w.calls == nil {
		w.calls = map[uint32]*bufio.Scanner{}
	}
	w.calls[uid] = sc
}

// nextCall returns the next Notify call uid's server recorded, or false after d.
func (w *world) nextCall(t *testing.T, uid uint32, d time.Duration) (call, bool) {
	t.Helper()
	sc := w.calls[uid]
	got := make(chan string, 1)
	go func() {
		if sc.Scan() {
			got <- sc.Text()
		}
		close(got)
	}()
	select {
	case line, ok := <-got:
		if !ok {
			return call{}, false
		}
		var c call
		if err := json.Unmarshal([]byte(line), &c); err != nil {
			t.Fatalf("server line %q: %v", line, err)
		}
		return c, true
	case <-time.After(d):
		return call{}, false
	}
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// TestNotify sends through every channel to a real session bus owned by
// nobody, a journal socket and a motd path, and checks each got the message.
func TestNotify(t *testing.T) {
	testenv.NeedRoot(t)
	w := newWorld(t)
	w.startSession(t, nobody)
	w.startSession(t, games)
	w.journal = listen(t, w.p.journal)
	cfg := Config{Enabled: true, Summary: "Fixes for CVE-2026-0001", Body: "hotfleet fixed libexample in 3 running programs.", MotdPath: filepath.Join(w.base, "motd.d", "hotfleet")}

	start := time.Now()
	res, err := w.p.notify(context.Background(), cfg, testLog(t))
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Notify took %v: %+v", took, res)

	want := []string{fmt.Sprintf("games (uid %d)", games), fmt.Sprintf("nobody (uid %d)", nobody)}
	if strings.Join(res.Desktop, ",") != strings.Join(want, ",") {
		t.Errorf("Desktop = %q, want %q", res.Desktop, want)
	}
	// The sender runs with the user's uid and primary group from passwd.
	for uid, gid := range map[uint32]string{nobody: "65534", games: "60"} {
		c, ok := w.nextCall(t, uid, 5*time.Second)
		if !ok {
			t.Fatalf("the notification server of uid %d got no Notify call", uid)
		}
		if c != (call{App: "hotfleet", Summary: cfg.Summary, Body: cfg.Body, UID: uid, GID: gid}) {
			t.Errorf("server of uid %d got %+v, want app hotfleet, the summary and body, from uid %d gid %s", uid, c, uid, gid)
		}
	}

	if !res.Journal {
		t.Error("Journal = false with a journal socket present")
	}
	dg := string(read(t, w.journal, 2*time.Second))
	for _, want := range []string{"MESSAGE=" + cfg.Summary + ": " + cfg.Body + "\n", "PRIORITY=5\n", "SYSLOG_IDENTIFIER=hotfleet\n"} {
		if !strings.Contains(dg, want) {
			t.Errorf("journal datagram %q lacks %q", dg, want)
		}
	}

	if res.Motd != cfg.MotdPath {
		t.Errorf("Motd = %q, want %q", res.Motd, cfg.MotdPath)
	}
	b, err := os.ReadFile(cfg.MotdPath)
	if err != nil || string(b) != cfg.Body+"\n" {
		t.Errorf("motd holds %q (%v), want the body", b, err)
	}
	if fi, err := os.Stat(cfg.MotdPath); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("motd mode %v (%v), want 0644 so every user can read it", fi.Mode(), err)
	}
	if m, _ := filepath.Glob(filepath.Join(filepath.Dir(cfg.MotdPath), ".*")); len(m) != 0 {
		t.Errorf("temp files left next to the motd: %v", m)
	}
}

// TestDisabled sends nothing anywhere.
func TestDisabled(t *testing.T) {
	testenv.NeedRoot(t)
	w := newWorld(t)
	w.startSession(t, nobody)
	w.journal = listen(t, w.p.journal)
	motd := filepath.Join(w.base, "motd.d", "hotfleet")
	res, err := w.p.notify(context.Background(), Config{Enabled: false, MotdPath: motd}, testLog(t))
	if err != nil || len(res.Desktop) != 0 || res.Journal || res.Motd != "" {
		t.Fatalf("disabled Notify = %+v, %v; want nothing", res, err)
	}
	if c, ok := w.nextCall(t, nobody, time.Second); ok {
		t.Errorf("disabled Notify reached the desktop: %+v", c)
	}
	if dg := read(t, w.journal, 200*time.Millisecond); dg != nil {
		t.Errorf("disabled Notify wrote to the journal: %q", dg)
	}
	if _, err := os.Stat(motd); !os.IsNotExist(err) {
		t.Errorf("disabled Notify wrote the motd (%v)", err)
	}
}

// TestChannelFailuresIndependent: a user's dead bus and an unwritable motd
// are reported, and the journal still gets its line.
func TestChannelFailuresIndependent(t *testing.T) {
	testenv.NeedRoot(t)
	w := newWorld(t)
	// A bus socket nobody listens on any more: the session ended uncleanly.
	dir := filepath.Join(w.p.runUser, strconv.Itoa(nobody))
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, "bus"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close()
	if err := os.Chown(filepath.Join(dir, "bus"), nobody, nobody); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	// A socket owned by someone else is not that user's bus and is skipped.
	other := filepath.Join(w.p.runUser, "1234")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(other, "bus"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	w.journal = listen(t, w.p.journal)
	notDir := filepath.Join(w.base, "file")
	if err := os.WriteFile(notDir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Enabled: true, MotdPath: filepath.Join(notDir, "hotfleet")}
	res, err := w.p.notify(context.Background(), cfg, testLog(t))
	if err == nil {
		t.Fatal("no error although the bus is dead and the motd dir is a file")
	}
	t.Logf("error: %v", err)
	for _, want := range []string{fmt.Sprintf("notify nobody (uid %d)", nobody), "connect to the session bus", "write the message of the day"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q", want)
		}
	}
	if strings.Contains(err.Error(), "uid 1234") {
		t.Error("the socket not owned by uid 1234 was treated as its bus")
	}
	if len(res.Desktop) != 0 || res.Motd != "" {
		t.Errorf("result claims delivery: %+v", res)
	}
	if !res.Journal {
		t.Error("the journal was not written although only the other channels failed")
	}
	if dg := string(read(t, w.journal, 2*time.Second)); !strings.Contains(dg, "MESSAGE="+DefaultSummary+": "+DefaultBody+"\n") {
		t.Errorf("journal datagram %q lacks the default summary and body", dg)
	}
}

// TestSyslogFallback: without a journal the line goes to syslog, as daemon
// notice; with neither, Journal is false and that is no error.
func TestSyslogFallback(t *testing.T) {
	w := newWorld(t)
	sl := listen(t, w.p.syslog)
	cfg := Config{Enabled: true, Body: "two\nlines", MotdPath: filepath.Join(w.base, "motd")}
	res, err := w.p.notify(context.Background(), cfg, testLog(t))
	if err != nil || !res.Journal {
		t.Fatalf("Notify = %+v, %v; want the syslog line sent", res, err)
	}
	rec := string(read(t, sl, 2*time.Second))
	if !strings.HasPrefix(rec, "<29>") || !strings.Contains(rec, fmt.Sprintf(" hotfleet[%d]: %s: two lines", os.Getpid(), DefaultSummary)) {
		t.Errorf("syslog record %q, want <29>... hotfleet[pid]: summary: body on one line", rec)
	}
	sl.Close()
	os.Remove(w.p.syslog)
	res, err = w.p.notify(context.Background(), cfg, testLog(t))
	if err != nil || res.Journal {
		t.Fatalf("with no journal and no syslog: %+v, %v; want Journal=false and no error", res, err)
	}
}

// TestJournalEntryMultiline: a value with a newline uses the protocol's
// length-prefixed form, so the journal keeps it as one field.
func TestJournalEntryMultiline(t *testing.T) {
	got := journalEntry(map[string]string{"MESSAGE": "a\nb", "PRIORITY": "5"})
	var want bytes.Buffer
	want.WriteString("MESSAGE\n")
	_ = binary.Write(&want, binary.LittleEndian, uint64(3))
	want.WriteString("a\nb\nPRIORITY=5\n")
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("entry %q, want %q", got, want.Bytes())
	}
}
