package crashtest

import (
	"fmt"
	"os"
	"testing"

	"hotfleet/internal/testenv"
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
	hotfleetBin, buildErr = testenv.BuildHotfleet(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
