package inventory

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const testStatus = `Package: foo
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Version: 1.0-1
Description: a library
 with a long description
 Version: 9.9 (not a field)

Package: bar
Status: install ok installed
Architecture: all
Version: 2:2.0

Package: shim
Status: install ok installed
Architecture: amd64
Version: 3

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 0.1
`

// writeTree lays out files (path -> content; content "->x" makes a symlink
// to x) under root.
func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if target, ok := strings.CutPrefix(c, "->"); ok {
			err = os.Symlink(target, full)
		} else {
			err = os.WriteFile(full, []byte(c), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestDpkgIndex builds the index over a fake root with merged-/usr
// symlinks and checks owners by the resolved paths maps shows, versions
// from the status file, diversions, leftover lists of removed packages, and
// a rebuild when the status changes.
func TestDpkgIndex(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{
		"lib":                                  "->usr/lib",
		"usr/lib/x86_64-linux-gnu/libfoo.so.1": "elf",
		"usr/lib/x86_64-linux-gnu/plugins":     "->../foo-plugins",
		"usr/lib/foo-plugins/p.so":             "elf",
		"usr/bin/bar":                          "elf",
		"var/lib/dpkg/status":                  testStatus,
		"var/lib/dpkg/info/foo:amd64.list":     "/.\n/lib\n/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu/libfoo.so.1\n/lib/x86_64-linux-gnu/plugins/p.so\n",
		"var/lib/dpkg/info/bar.list":           "/.\n/usr\n/usr/bin\n/usr/bin/bar\n",
		"var/lib/dpkg/info/gone.list":          "/usr/bin/gone\n",
		"var/lib/dpkg/info/shim.list":          "/lib/x86_64-linux-gnu/libfoo.so.1\n/usr/bin/shimmed\n",
		"var/lib/dpkg/diversions": "/lib/x86_64-linux-gnu/libfoo.so.1\n/lib/x86_64-linux-gnu/libfoo.so.1.real\nshim\n" +
			"/usr/bin/bar\n/usr/bin/bar.orig\n:\n",
		"var/lib/dpkg/info/foo:amd64.md5sums": "0 /usr/bin/bar\n",
	})
	db := &packageDB{log: slog.New(slog.DiscardHandler), root: root, dpkgDir: "/var/lib/dpkg", memo: map[string]string{}}
	db.refresh()
	ctx := context.Background()
	for p, want := range map[string]string{
		// shim diverted foo's library: shim's file is in its place.
		"/usr/lib/x86_64-linux-gnu/libfoo.so.1":      "shim:amd64 3",
		"/usr/lib/x86_64-linux-gnu/libfoo.so.1.real": "foo:amd64 1.0-1",
		"/usr/lib/foo-plugins/p.so":                  "foo:amd64 1.0-1",
		// The administrator diverted bar: the file in its place is nobody's.
		"/usr/bin/bar":                       "",
		"/usr/bin/bar.orig":                  "bar:all 2:2.0",
		"/usr/bin/shimmed":                   "shim:amd64 3",
		"/usr/bin/gone":                      "",
		"/usr/lib/x86_64-linux-gnu/other.so": "",
	} {
		if got := db.lookup(ctx, p); got != want {
			t.Errorf("owner of %s: %q, want %q", p, got, want)
		}
	}

	// An upgrade rewrites the status; the next refresh re-indexes.
	status := filepath.Join(root, "var/lib/dpkg/status")
	if err := os.WriteFile(status, []byte(strings.Replace(testStatus, "1.0-1", "1.1-1", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(status, later, later); err != nil {
		t.Fatal(err)
	}
	db.refresh()
	if got, want := db.lookup(ctx, "/usr/lib/x86_64-linux-gnu/libfoo.so.1.real"), "foo:amd64 1.1-1"; got != want {
		t.Errorf("after the upgrade: %q, want %q", got, want)
	}
}

// TestResolverLoop: a symlink loop ends instead of recursing forever.
func TestResolverLoop(t *testing.T) {
	root := t.TempDir()
	writeTree(t, root, map[string]string{"a": "->b", "b": "->a"})
	r := &resolver{root: root, memo: map[string]string{}}
	if got := r.resolve("/a/x", 0); got == "" {
		t.Errorf("resolve of a loop gave %q", got)
	}
}
