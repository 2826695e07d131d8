// Package rollout is the control plane's policy: which ring a device is in,
// when each ring may receive a release, when a failing release halts itself,
// what state a device is in for a release, and how compliance is expected to
// progress. It does no I/O and never reads the clock: every function that
// depends on time takes now, so the server, a forecast and a test with a
// simulated clock all get the same answers from the same inputs.
//
// The model, in the glossary's words:
//
//   - Rings are ordered stages (DefaultRings: Test, First, Fast, Broad,
//     Last). A ring either takes a share of the non-pinned fleet by a stable
//     hash of the device id, or is pinned-only and holds just the devices
//     pinned to it or matched by a label rule. Pins win over label rules,
//     label rules over the hash (Place).
//   - A release published at P becomes eligible in a ring at P + the ring's
//     deferral, never before the previous ring became eligible; the ring's
//     deadline and grace count from that moment (Plan). Expedite skips the
//     deferrals and the ordering. A pause holds a ring, or the whole
//     release: nothing new is assigned while it lasts.
//   - A baseline release needs a restart, so it is applied only inside a
//     maintenance window (NextWindow); a hotpatch applies at once.
//   - A ring whose failures (apply failures plus crashes after patch) reach
//     both a count and a percentage halts the release, and optionally rolls
//     it back (Evaluate).
//
// Trust: inputs come from the server, which has validated the admin's
// configuration (Rings.Validate, Thresholds.Validate, ValidateWindows) and
// stored the agents' reports; device ids and labels are untrusted strings
// and are only hashed or compared, never interpreted.
package rollout
