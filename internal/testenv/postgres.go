package testenv

import (
	"bytes"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A throwaway PostgreSQL cluster for the tests of one test binary.
//
// Lifetime: the first PostgreSQL call starts the cluster (initdb + pg_ctl
// start -w), later calls only create a fresh database in it. Who stops it:
//   - a package whose TestMain calls PostgreSQLMain: the cluster lives until
//     every test has run, then it is stopped and its directory removed;
//   - otherwise each PostgreSQL call takes a reference released by
//     t.Cleanup, and the last release stops the cluster (a later call starts
//     a new one, so such packages pay initdb more than once).
//
// A test binary killed hard (timeout panic, SIGKILL) leaves its postmaster
// running in os.TempDir()/hotfleet-pg-*; `pg_ctl stop -D DIR/data` ends it.
// The system cluster is never touched: the cluster listens only on a unix
// socket in its own directory, never on TCP.

// pgStartLimit bounds how long pg_ctl waits for the new cluster to accept
// connections; a loaded 2-vCPU CI box starts one in a few seconds.
const pgStartLimit = "60"

// pgSocketPathLimit is the size of sun_path minus the socket's file name
// (".s.PGSQL.5432"): a longer directory cannot hold the socket.
const pgSocketPathLimit = 107 - len("/.s.PGSQL.5432")

var pg struct {
	mu        sync.Mutex
	mainOwned bool // PostgreSQLMain stops the cluster, not references
	refs      int
	dir       string // holds data/, the socket and the server log
	bin       string
	cred      *syscall.Credential // the postgres OS user when we are root
	dbs       int
}

// PostgreSQLMain runs the package's tests and then stops the cluster that
// PostgreSQL started, if any. Call it from TestMain:
//
//	func TestMain(m *testing.M) { testenv.PostgreSQLMain(m) }
func PostgreSQLMain(m *testing.M) {
	pg.mu.Lock()
	pg.mainOwned = true
	pg.mu.Unlock()
	code := m.Run()
	pg.mu.Lock()
	err := stopPostgreSQL()
	pg.mu.Unlock()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// PostgreSQL returns the DSN (postgres://…) of a new, empty database on the
// test binary's own PostgreSQL cluster, starting the cluster on first use.
// Without PostgreSQL installed the test is skipped (failed in CI).
func PostgreSQL(t testing.TB) string {
	t.Helper()
	pg.mu.Lock()
	defer pg.mu.Unlock()
	if pg.dir == "" {
		if err := startPostgreSQL(t); err != nil {
			t.Fatal(err)
		}
	}
	if !pg.mainOwned {
		pg.refs++
		t.Cleanup(func() {
			pg.mu.Lock()
			defer pg.mu.Unlock()
			pg.refs--
			if pg.refs == 0 {
				if err := stopPostgreSQL(); err != nil {
					t.Error(err)
				}
			}
		})
	}
	pg.dbs++
	name := "t" + strconv.Itoa(pg.dbs)
	if out, err := pgRun(pg.bin+"/createdb", "-h", pg.dir, "-U", "postgres", name); err != nil {
		t.Fatalf("create database %s on the test cluster in %s: %v\n%s", name, pg.dir, err, out)
	}
	q := url.Values{"host": {pg.dir}, "user": {"postgres"}, "sslmode": {"disable"}}
	return "postgres:///" + name + "?" + q.Encode()
}

// postgresBin finds the newest installed server's bin directory.
func postgresBin() (string, error) {
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(found) == 0 {
		return "", fmt.Errorf("no /usr/lib/postgresql/*/bin/initdb; install the postgresql package")
	}
	sort.Slice(found, func(i, j int) bool {
		vi, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(found[i]))))
		vj, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(found[j]))))
		return vi < vj
	})
	return filepath.Dir(found[len(found)-1]), nil
}

// startPostgreSQL runs with pg.mu held.
func startPostgreSQL(t testing.TB) error {
	t.Helper()
	bin, err := postgresBin()
	if err != nil {
		missing(t, "the test needs PostgreSQL: %v", err)
	}
	// PostgreSQL refuses to run as root: as root, run it as the postgres user.
	var cred *syscall.Credential
	var uid, gid = -1, -1
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			missing(t, "the test runs as root and needs the postgres OS user to run PostgreSQL: %v", err)
		}
		uid, _ = strconv.Atoi(u.Uid)
		gid, _ = strconv.Atoi(u.Gid)
		cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	base := os.TempDir()
	if len(base) > pgSocketPathLimit-len("/hotfleet-pg-0123456789") {
		base = "/tmp" // a long TMPDIR cannot hold the socket
	}
	dir, err := os.MkdirTemp(base, "hotfleet-pg-")
	if err != nil {
		return fmt.Errorf("make a directory for the test PostgreSQL cluster: %w", err)
	}
	if uid >= 0 {
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return fmt.Errorf("hand %s to the postgres user: %w", dir, err)
		}
	}
	pg.bin, pg.cred = bin, cred
	data := filepath.Join(dir, "data")
	if out, err := pgRun(bin+"/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"); err != nil {
		os.RemoveAll(dir)
		return fmt.Errorf("initdb a test cluster in %s: %w\n%s", data, err, out)
	}
	// No TCP (listen_addresses empty), socket in our own directory, no
	// fsync: the cluster is thrown away and must not meet the system one.
	opts := pgOptions(dir)
	if out, err := pgRun(bin+"/pg_ctl", "start", "-w", "-t", pgStartLimit, "-D", data, "-l", filepath.Join(dir, "server.log"), "-o", opts); err != nil {
		log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
		os.RemoveAll(dir)
		return fmt.Errorf("start the test PostgreSQL cluster in %s: %w\n%s\n%s", data, err, out, log)
	}
	pg.dir = dir
	return nil
}

// stopPostgreSQL runs with pg.mu held.
func stopPostgreSQL() error {
	if pg.dir == "" {
		return nil
	}
	dir := pg.dir
	pg.dir = ""
	out, err := pgRun(pg.bin+"/pg_ctl", "stop", "-w", "-m", "immediate", "-D", filepath.Join(dir, "data"))
	if err != nil {
		return fmt.Errorf("stop the test PostgreSQL cluster in %s (left running; pg_ctl stop -D %s/data ends it): %w\n%s", dir, dir, err, out)
	}
	return os.RemoveAll(dir)
}

func pgRun(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: pg.cred}
	// The postgres user cannot enter root's working directory.
	cmd.Dir = "/"
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	return out.Bytes(), err
}

// RestartPostgreSQL stops the test cluster the way a crash or an admin's
// restart would (immediate shutdown: clients see their connections cut),
// keeps it down for down, then starts it again on the same socket and data.
func RestartPostgreSQL(t testing.TB, down time.Duration) {
	t.Helper()
	pg.mu.Lock()
	defer pg.mu.Unlock()
	if pg.dir == "" {
		t.Fatal("restart PostgreSQL: no test cluster is running; call PostgreSQL(t) first")
	}
	data := filepath.Join(pg.dir, "data")
	if out, err := pgRun(pg.bin+"/pg_ctl", "stop", "-w", "-m", "immediate", "-D", data); err != nil {
		t.Fatalf("stop the test PostgreSQL cluster: %v\n%s", err, out)
	}
	time.Sleep(down)
	opts := pgOptions(pg.dir)
	if out, err := pgRun(pg.bin+"/pg_ctl", "start", "-w", "-t", pgStartLimit, "-D", data, "-l", filepath.Join(pg.dir, "server.log"), "-o", opts); err != nil {
		t.Fatalf("start the test PostgreSQL cluster again: %v\n%s", err, out)
	}
}

func pgOptions(dir string) string {
	return fmt.Sprintf("-c listen_addresses='' -k %s -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200", dir)
}
