package realworld

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// redisProject is Redis 7.0.15 from Debian bookworm without the fix for
// CVE-2024-51741: ACL SETUSER accepts a key-permission selector without a
// key pattern ("%"), which makes the server abort when that user later
// touches a key. Built as Debian does (its flags, no LTO), but with the C
// library's malloc instead of the system jemalloc, without TLS and without
// systemd notification: none of them is near the fix, and they keep the
// build's dependencies to the compiler.
var redisProject = project{
	pkg: "redis",
	fix: "debian/patches/0002-Fix-Read-Write-key-pattern-selector-CVE-2024-51741-1.patch",
	build: `make -j2 -C src redis-server MALLOC=libc BUILD_TLS=no USE_SYSTEMD=no ` +
		`CFLAGS="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)" LDFLAGS="$(dpkg-buildflags --get LDFLAGS)"`,
	target:  "src/redis-server",
	debPkg:  "redis-tools", // ships /usr/bin/redis-server; the package redis-server holds its configuration
	cve:     "CVE-2024-51741",
	changed: []string{"ACLSetSelector"},
}

// redisClients is how many connections load the server during the patch.
const redisClients = 4

// resp is a minimal Redis client: one connection, one command at a time.
type resp struct {
	c net.Conn
	r *bufio.Reader
}

func dialRedis(addr string) (*resp, error) {
	c, err := net.DialTimeout("tcp", addr, answerTimeout)
	if err != nil {
		return nil, err
	}
	return &resp{c: c, r: bufio.NewReader(c)}, nil
}

// do sends a command and returns the reply: "+OK", "-ERR ...", ":1",
// "$value" for a bulk string, "$nil" for a null one, "*N" for an array.
func (r *resp) do(args ...string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	r.c.SetDeadline(time.Now().Add(answerTimeout))
	if _, err := r.c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	return r.reply()
}

// reply reads one reply; an array reads as "*N" after its elements.
func (r *resp) reply() (string, error) {
	line, err := r.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("empty reply")
	}
	switch line[0] {
	case '+', '-', ':':
		return line, nil
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", fmt.Errorf("bad bulk length %q", line)
		}
		if n < 0 {
			return "$nil", nil
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r.r, buf); err != nil {
			return "", err
		}
		return "$" + string(buf[:n]), nil
	case '*':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return "", fmt.Errorf("bad array length %q", line)
		}
		for i := 0; i < n; i++ {
			if _, err := r.reply(); err != nil {
				return "", err
			}
		}
		return line, nil
	}
	return "", fmt.Errorf("unexpected reply %q", line)
}

func (r *resp) close() { r.c.Close() }

// freePort asks the kernel for a free TCP port on the loopback.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestRedisCVE2024_51741 fixes a running redis-server under load from
// several clients; no request may fail.
func TestRedisCVE2024_51741(t *testing.T) {
	w := setup(t, redisProject)
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	srv := exec.Command(w.target, "--bind", "127.0.0.1", "--port", strconv.Itoa(port),
		"--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", w.dir,
		"--logfile", filepath.Join(w.dir, "redis.log"))
	if err := srv.Start(); err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Wait() }()
	t.Cleanup(func() {
		srv.Process.Kill()
		<-done
	})
	var admin *resp
	for deadline := time.Now().Add(answerTimeout); ; time.Sleep(20 * time.Millisecond) {
		var err error
		if admin, err = dialRedis(addr); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis-server does not accept connections on %s: %v", addr, err)
		}
	}
	defer admin.close()
	expect := func(when, want string, args ...string) {
		t.Helper()
		got, err := admin.do(args...)
		if err != nil {
			t.Fatalf("%s: %s: %v", when, strings.Join(args, " "), err)
		}
		if got != want {
			t.Fatalf("%s: %s answered %q, want %q", when, strings.Join(args, " "), got, want)
		}
		t.Logf("%s: %s -> %q", when, strings.Join(args, " "), got)
	}

	// A selector "%" grants nothing and names no keys: the fixed server
	// refuses it; the vulnerable one stores it and aborts later.
	exploit := []string{"ACL", "SETUSER", "cve-user", "%"}
	const vulnerable = "+OK"
	const fixed = "-ERR Error in ACL SETUSER modifier '%': Syntax error"
	expect("before the patch", "+PONG", "PING")
	expect("before the patch (vulnerable)", vulnerable, exploit...)
	expect("before the patch", ":1", "ACL", "DELUSER", "cve-user")

	const id = "redis-cve-2024-51741"
	bundle, size := w.patchBuild(t, id)

	conns := make([]*resp, redisClients)
	for i := range conns {
		c, err := dialRedis(addr)
		if err != nil {
			t.Fatalf("connect load client %d: %v", i, err)
		}
		defer c.close()
		conns[i] = c
	}
	seq := make([]int, redisClients)
	l := startLoad(redisClients, func(i int) error {
		c := conns[i]
		seq[i]++
		key, val := fmt.Sprintf("load:%d", i), strconv.Itoa(seq[i])
		steps := [][]string{
			{"SET", key, val}, {"GET", key},
			// Valid selectors go through the patched function.
			{"ACL", "SETUSER", fmt.Sprintf("load-%d", i), "on", "nopass", "%R~load:*", "+@read"},
		}
		want := []string{"+OK", "$" + val, "+OK"}
		for j, s := range steps {
			got, err := c.do(s...)
			if err != nil {
				return fmt.Errorf("client %d: %s: %v", i, strings.Join(s, " "), err)
			}
			if got != want[j] {
				return fmt.Errorf("client %d: %s answered %q, want %q", i, strings.Join(s, " "), got, want[j])
			}
		}
		return nil
	})
	l.waitFor(t, loadBefore)
	pause := apply(t, bundle, srv.Process.Pid)
	l.waitFor(t, loadAfter)
	n := l.finish(t)
	t.Logf("%d requests (SET, GET, ACL SETUSER) from %d clients during the patch, none failed", 3*n, redisClients)

	expect("after apply (fixed)", fixed, exploit...)
	// The vulnerable server aborts here once it has stored a "%" selector
	// ("Invalid key pattern flag detected"); the fixed one never stores it.
	expect("after apply", fmt.Sprintf("*%d", 1+redisClients), "ACL", "LIST") // default and the load users
	expect("after apply", "+OK", "ACL", "SETUSER", "rw-user", "on", "nopass", "%RW~app:*", "+@all")

	rpause := revert(t, id, srv.Process.Pid)
	expect("after revert (vulnerable again)", vulnerable, exploit...)
	expect("after revert", ":1", "ACL", "DELUSER", "cve-user")
	expect("after revert", "+PONG", "PING")
	w.report(t, size, pause, rpause)
}
