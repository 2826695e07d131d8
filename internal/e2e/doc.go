// Package e2e tests the real hotfleet binary end to end: it compiles C
// targets with the system gcc, starts them, and patches, inspects and reverts
// them through the command line exactly as a user would, checking what the
// running program answers before, during and after each step.
//
// The package holds no production code; everything lives in its tests.
package e2e
