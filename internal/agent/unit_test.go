package agent_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"hotfleet/internal/testenv"
)

// The shipped systemd unit is valid for systemd, starts the agent, and keeps
// the capabilities the agent needs (and no others a reviewer did not see).
func TestSystemdUnit(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		if testenv.InCI() {
			t.Fatalf("CI=true but systemd-analyze (package systemd) is missing: %v", err)
		}
		t.Skip("systemd-analyze is not installed")
	}
	unit, err := os.ReadFile("../../dist/hotfleet-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	text := string(unit)
	for _, want := range []string{
		"ExecStart=/usr/local/bin/hotfleet agent ",
		"CapabilityBoundingSet=CAP_SYS_PTRACE ",
		"NoNewPrivileges=yes",
		"ReadWritePaths=/var/lib/hotfleet /run/hotfleet",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the unit lacks %q", want)
		}
	}
	// systemd checks that the binary exists: point it at the one built here.
	dir := t.TempDir()
	path := filepath.Join(dir, "hotfleet-agent.service")
	text = strings.ReplaceAll(text, "/usr/local/bin/hotfleet", hotfleetBin(t))
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", path).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
