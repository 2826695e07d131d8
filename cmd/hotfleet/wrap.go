package main

import (
	"os"
	"path/filepath"
	"strings"

	"hotfleet/internal/buildtree"
)

// wrapMode reports whether hotfleet was started as the compiler wrapper of a
// build from source: under a compiler's name (a link in the build's bin
// directory), or with the wrapper's log set and a name other than hotfleet's.
func wrapMode(argv0 string) bool {
	base := filepath.Base(argv0)
	if buildtree.IsWrapperName(base) {
		return true
	}
	return os.Getenv("HOTFLEET_WRAP_LOG") != "" && !strings.HasPrefix(base, "hotfleet")
}
