package realworld

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"hotfleet/internal/testenv"
)

// sqliteProject is SQLite 3.40.1 from Debian bookworm without the backport
// of upstream's fix for a stack overflow (Debian 3.40.1-2+deb12u1): a window
// defined in terms of itself, with an error embedded in it, makes the name
// resolver recurse without end. The fix is in src/resolve.c; the build
// generates the amalgamation sqlite3.c from src/ and compiles that, so the
// builder sees the change in a generated file.
var sqliteProject = project{
	pkg: "sqlite3",
	fix: "debian/patches/0002-Avoid-a-stack-overflow-that-could-be-caused-by-a-rec.patch",
	// Debian's configure and compiler flags (the SQLITE_ options that
	// change code), the shared library and the shell only, no Tcl binding.
	build: `{ test -f Makefile || ./configure --prefix=/usr --disable-static --enable-threadsafe --enable-load-extension --enable-json --enable-fts4 --enable-fts5 --disable-tcl ` +
		`CFLAGS="$(dpkg-buildflags --get CFLAGS) -O2 -fno-strict-aliasing -DSQLITE_SECURE_DELETE -DSQLITE_ENABLE_COLUMN_METADATA -DSQLITE_ENABLE_FTS3 -DSQLITE_ENABLE_RTREE=1 -DSQLITE_ENABLE_DBSTAT_VTAB -DSQLITE_ENABLE_JSON1 -DSQLITE_THREADSAFE=1 -DSQLITE_ENABLE_PREUPDATE_HOOK -DSQLITE_ENABLE_SESSION -DSQLITE_MAX_VARIABLE_NUMBER=250000" ` +
		`CPPFLAGS="$(dpkg-buildflags --get CPPFLAGS)" LDFLAGS="$(dpkg-buildflags --get LDFLAGS)"; } && make -j2 libsqlite3.la`,
	target: ".libs/libsqlite3.so.0.8.6",
	debPkg: "libsqlite3-0",
	// Upstream and Debian name no CVE for it.
	changed: []string{"resolveExprStep"},
	tools:   []string{"tclsh"}, // generates the amalgamation
}

// expectCrash sends req and fails the test unless the program dies of a
// signal, as the vulnerable library does.
func (p *lineProgram) expectCrash(req, signal, when string) {
	p.t.Helper()
	got, err := p.ask(req)
	if err == nil {
		p.t.Fatalf("%s: %s answered %q to %q; want it to die of %s", when, p.name, got, req, signal)
	}
	select {
	case <-p.done:
	case <-time.After(answerTimeout):
		p.t.Fatalf("%s: %s did not end after %q: %v", when, p.name, req, err)
	}
	st, _ := p.status.Load().(string)
	if st != "signal: "+signal {
		p.t.Fatalf("%s: %s ended with %q after %q, want signal: %s", when, p.name, st, req, signal)
	}
	p.t.Logf("%s: %q -> %s died: %s", when, req, p.name, st)
}

// TestSqliteWindowRecursion fixes libsqlite3.so.0 inside a running program
// that runs the SQL it is sent.
func TestSqliteWindowRecursion(t *testing.T) {
	w := setup(t, sqliteProject)
	libdir := filepath.Dir(w.target)
	drv := testenv.CC(t, filepath.Join(w.dir, "sqlite_driver"), "-O2", "-Wall",
		"-I", w.prod, testdataPath(t, "sqlite_driver.c"),
		"-L", libdir, "-lsqlite3", "-Wl,-rpath,"+libdir)

	// The window w1 partitions by a window function over w1 itself, and
	// x_count is not a window function: the fixed resolver reports that
	// error; the vulnerable one recurses until the stack runs out.
	const exploit = `SELECT min(x) OVER w1 FROM t1 WINDOW w1 AS (PARTITION BY x_count(x) OVER w1);`
	const fixed = "error x_count() may not be used as a window function"
	const setupSQL = `CREATE TABLE t1(x); INSERT INTO t1 VALUES(1),(2),(NULL);`
	// Window functions and an application aggregate go through the
	// patched resolver.
	const ordinary, ordinaryAnswer = `SELECT x, sum(x) OVER (ORDER BY x), (SELECT x_count(x) FROM t1) FROM t1 WHERE x IS NOT NULL;`, "ok 1,1,2|2,3,2"

	// A second copy of the program shows the vulnerable behaviour: it dies.
	probe := startLine(t, drv)
	probe.expect(setupSQL, "ok ", "before the patch")
	probe.expectCrash(exploit, "segmentation fault", "before the patch (vulnerable)")

	p := startLine(t, drv)
	p.expect(setupSQL, "ok ", "before the patch")
	p.expect(ordinary, ordinaryAnswer, "before the patch")

	const id = "sqlite3-window-recursion"
	bundle, size := w.patchBuild(t, id)

	pause := applyWhileAsked(t, p, bundle, [][2]string{{ordinary, ordinaryAnswer}})

	p.expect(exploit, fixed, "after apply (fixed)")
	p.expect(ordinary, ordinaryAnswer, "after apply")

	rpause := revert(t, id, p.pid)
	p.expect(ordinary, ordinaryAnswer, "after revert")
	w.report(t, size, pause, rpause)
	p.expectCrash(exploit, "segmentation fault", "after revert (vulnerable again)")
	if !strings.HasPrefix(w.version, "3.40.1-") {
		t.Logf("note: walk-through written for 3.40.1, ran on %s", w.version)
	}
}
