// Package realworld holds the real-world walk-throughs: end-to-end tests that
// take a Debian source package (apt-get source, cached by
// scripts/realworld/fetch.sh), build the release without a real security fix,
// run it, and fix the running program with the fix the Debian maintainers
// shipped, using only the hotfleet command line a user has:
//
//	hotfleet patch build --source TREE --fix fix.diff --target BINARY -o fix.hfp
//	hotfleet patch apply fix.hfp --pid PID
//	hotfleet patch revert ID --pid PID
//
// Each test shows the vulnerable behaviour, the fixed behaviour after apply
// (for a server: under continuous load with zero failed requests), and the
// vulnerable behaviour again after revert. docs/realworld-*.md describe the
// same steps as commands.
//
// Trust: the source packages come from the Debian archive through apt, which
// checks their signatures; the tests run the programs they build as root, as
// every live-patching test does.
package realworld
