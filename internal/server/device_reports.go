package server

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"hotfleet/internal/store"
)

// agentReport is the part of an agent's report the server acts on; the
// whole document is stored as sent.
type agentReport struct {
	Kind        string   `json:"kind"`
	Pid         int      `json:"pid"`
	Comm        string   `json:"comm"`
	PatchID     string   `json:"patch_id"`
	Level       uint32   `json:"level"`
	Error       string   `json:"error"`
	Permanent   bool     `json:"permanent"`
	Signal      string   `json:"signal"`
	SinceApplyS float64  `json:"since_apply_s"`
	Bundle      string   `json:"bundle"`  // SHA-256 of the bundle an apply failed with
	Patches     []string `json:"patches"` // "id:level" applied in a crashed process
	Bundles     []string `json:"bundles"` // SHA-256 of the bundles applied in a crashed process
}

// Report kinds the server acts on (the agent's names).
const (
	reportCrash  = "crash"
	reportFailed = "failed"
)

// reportContext acts on one post of reports: it marks the device failed
// for the releases a report implicates and, once all are stored, evaluates
// the automatic halt of each release it touched.
type reportContext struct {
	s       *Server
	d       store.Device
	ring    string
	rels    []store.Release // published and paused, read on first need
	touched map[int64]store.Release
}

func (rc *reportContext) act(ctx context.Context, seq int64, body []byte) error {
	var r agentReport
	if err := json.Unmarshal(body, &r); err != nil {
		// Stored for the record; there is nothing to act on.
		rc.s.log.Warn("device report does not decode", "device", rc.d.ID, "seq", seq, "err", err)
		return nil
	}
	var reason string
	var shas map[string]bool
	var err error
	switch {
	case r.Kind == reportCrash:
		reason = crashReason(r)
		shas, err = rc.bundlesOf(ctx, r.Bundles, r.Patches)
	case r.Kind == reportFailed && r.Permanent && (r.PatchID != "" || r.Bundle != ""):
		reason = "apply failed for good: " + r.Error
		if r.Bundle != "" {
			shas, err = rc.bundlesOf(ctx, []string{r.Bundle}, nil)
		} else {
			shas, err = rc.bundlesOf(ctx, nil, []string{fmt.Sprintf("%s:%d", r.PatchID, r.Level)})
		}
	default:
		return nil
	}
	if err != nil || len(shas) == 0 {
		return err
	}
	if err := rc.load(ctx); err != nil {
		return err
	}
	for _, rel := range rc.rels {
		hit := false
		for _, sha := range rel.Bundles {
			hit = hit || shas[sha]
		}
		if !hit {
			continue
		}
		cur, err := rc.s.st.DeviceReleaseStates(ctx, rc.d.ID)
		if err != nil {
			return err
		}
		if st, ok := cur[rel.ID]; ok && st.State == stateFailed && (st.Reason == reason || r.Kind != reportCrash && strings.HasPrefix(st.Reason, crashPrefix)) {
			continue // already recorded; a crash is not overwritten by a lesser failure
		}
		if err := rc.s.st.SetDeviceReleaseState(ctx, rc.d.ID, rel.ID, rc.ring, stateFailed, reason); err != nil {
			return err
		}
		rc.touched[rel.ID] = rel
	}
	return nil
}

// crashReason reads like "crash: SIGSEGV 3.2 s after patch in nginx(4242)".
func crashReason(r agentReport) string {
	sig := r.Signal
	if sig == "" {
		sig = "fatal signal"
	}
	who := r.Comm
	if who == "" {
		who = "process"
	}
	if r.Pid != 0 {
		who += "(" + strconv.Itoa(r.Pid) + ")"
	}
	return fmt.Sprintf("%s: %s %.1f s after patch in %s", crashPrefix, sig, r.SinceApplyS, who)
}

// load reads what acting on reports needs, once per post.
func (rc *reportContext) load(ctx context.Context) error {
	if rc.touched != nil {
		return nil
	}
	rels, err := rc.s.st.Releases(ctx, store.ReleasePublished, store.ReleasePaused)
	if err != nil {
		return err
	}
	rs, err := rc.s.rings(ctx)
	if err != nil {
		return err
	}
	o, err := rc.s.overrides(ctx)
	if err != nil {
		return err
	}
	rc.rels, rc.ring, rc.touched = rels, placement(rc.d, rs, o).Ring, map[int64]store.Release{}
	return nil
}

// bundlesOf returns the SHA-256 of the bundles a report names: directly,
// or as "id:level" matched against the bundles of live releases.
func (rc *reportContext) bundlesOf(ctx context.Context, shas, patches []string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, sha := range shas {
		if isSHA256(sha) {
			out[sha] = true
		}
	}
	if len(patches) == 0 {
		return out, nil
	}
	if err := rc.load(ctx); err != nil {
		return nil, err
	}
	want := map[string]bool{}
	for _, p := range patches {
		want[p] = true
	}
	for _, rel := range rc.rels {
		for _, sha := range rel.Bundles {
			m, err := rc.s.bundleMeta(ctx, sha)
			if err != nil {
				return nil, err
			}
			if want[fmt.Sprintf("%s:%d", m.ID, m.Level)] {
				out[sha] = true
			}
		}
	}
	return out, nil
}

// evaluate runs the automatic halt for every release the post marked failed.
func (rc *reportContext) evaluate(ctx context.Context) error {
	for _, rel := range rc.touched {
		if err := rc.s.evaluateHalt(ctx, rel); err != nil {
			return err
		}
	}
	return nil
}
