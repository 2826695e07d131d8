package crashtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// hotfleetBin is the hotfleet binary built by TestMain, as users run it.
var hotfleetBin string

// buildErr is why hotfleetBin could not be built; tests fail with it.
var buildErr error

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "hotfleet-crashtest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "crashtest: create a directory for the hotfleet binary:", err)
		os.Exit(1)
	}
	hotfleetBin, buildErr = buildHotfleet(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// buildHotfleet builds ./cmd/hotfleet the way the Makefile does: static,
// without cgo.
func buildHotfleet(dir string) (string, error) {
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		if goTool, err = exec.LookPath("go"); err != nil {
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
