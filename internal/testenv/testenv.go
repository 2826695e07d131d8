// Package testenv lets tests state what they need from the machine (root,
// gcc) and builds the C programs under test. Outside CI a missing need skips
// the test; in CI (CI=true) it fails it, so nothing silently goes untested.
package testenv

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// InCI reports whether the tests run in CI, where every need must be met.
func InCI() bool { return os.Getenv("CI") == "true" }

func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI=true but "+format, args...)
	}
	t.Skipf(format, args...)
}

// NeedRoot needs the test to run as root (ptrace of arbitrary processes,
// changing credentials).
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "the test needs root (ptrace); run it as root")
	}
}

// NeedGCC needs the system C compiler.
func NeedGCC(t testing.TB) string {
	t.Helper()
	cc, err := exec.LookPath("gcc")
	if err != nil {
		missing(t, "the test needs gcc: %v", err)
	}
	return cc
}

// CC compiles C sources with gcc into out (an object when args hold "-c"),
// failing the test with gcc's own output when it does not compile.
func CC(t testing.TB, out string, args ...string) string {
	t.Helper()
	cc := NeedGCC(t)
	if !filepath.IsAbs(out) {
		out = filepath.Join(t.TempDir(), out)
	}
	cmd := exec.Command(cc, append(args, "-o", out)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("gcc %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

// BuildHotfleet builds the hotfleet binary into dir the way the Makefile
// does (static, without cgo) and returns its path, for tests that run the
// command as a user would.
func BuildHotfleet(dir string) (string, error) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, serr := os.Stat(goTool); serr != nil {
			return "", fmt.Errorf("find the go tool to build hotfleet: %w", err)
		}
	}
	out := filepath.Join(dir, "hotfleet")
	cmd := exec.Command(goTool, "build", "-o", out, "hotfleet/cmd/hotfleet")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build hotfleet/cmd/hotfleet: %w\n%s", err, b)
	}
	return out, nil
}
