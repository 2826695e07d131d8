// Package corpus holds the change kinds the patch builder is proven on: one
// directory per kind under testdata/, each with the original sources, the
// fix as a unified diff, and the expected outcome (the program's output
// before, during and after the patch, or the refusal). The tests build every
// case with the system gcc, patch a running program with the bundle, check
// the behaviour and revert it; see docs/corpus.md for the list.
//
// Trust: the cases are the project's own files; the programs they build run
// as children of the test.
package corpus
