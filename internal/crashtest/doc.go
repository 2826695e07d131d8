// Package crashtest holds hotfleet's crash-consistency test: it kills the
// hotfleet binary with SIGKILL at random moments and at every named failpoint
// of the live patching engine while it patches a busy multi-threaded process,
// and checks that the process never crashes, never sees a half-applied patch,
// and that the next hotfleet run reports the state truthfully and finishes or
// undoes the interrupted operation.
//
// The package has no code outside its tests.
package crashtest
