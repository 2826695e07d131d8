package server

import (
	"context"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"sync"

	"hotfleet/internal/api"
	"hotfleet/internal/bundle"
	"hotfleet/internal/rollout"
	"hotfleet/internal/store"
)

// bundleMeta is what the server needs to know of a bundle's content.
type bundleMeta struct {
	ID      string
	Level   uint32
	Size    int64
	Modules []moduleMeta
}

type moduleMeta struct{ BuildID, Name string }

// maxBundleMetas bounds the metadata cache; a fleet has tens to hundreds of
// live bundles, and the cache starts over rather than grow past this.
const maxBundleMetas = 4096

// bundleMetas caches decoded bundle metadata by SHA-256. A bundle's bytes
// never change under its address, so the cache can never disagree with the
// database or another replica.
var bundleMetas struct {
	sync.Mutex
	m map[string]*bundleMeta
}

func (s *Server) bundleMeta(ctx context.Context, sha string) (*bundleMeta, error) {
	bundleMetas.Lock()
	m := bundleMetas.m[sha]
	bundleMetas.Unlock()
	if m != nil {
		return m, nil
	}
	data, err := s.st.Bundle(ctx, sha)
	if err != nil {
		return nil, err
	}
	m = &bundleMeta{Size: int64(len(data))}
	if b, err := bundle.Decode(data); err != nil {
		// Checked at upload, so the database is damaged. Failing every
		// check-in over it would stall the fleet; the agents refuse the
		// bundle themselves and say so in their check-ins.
		s.log.Error("a stored bundle does not decode; its release is judged by build-id alone", "bundle", sha, "err", err)
	} else {
		m.ID, m.Level = b.ID, b.Level
		for _, mod := range b.Modules {
			m.Modules = append(m.Modules, moduleMeta{BuildID: hex.EncodeToString(mod.BuildID), Name: mod.Name})
		}
	}
	bundleMetas.Lock()
	if bundleMetas.m == nil || len(bundleMetas.m) >= maxBundleMetas {
		bundleMetas.m = map[string]*bundleMeta{}
	}
	bundleMetas.m[sha] = m
	bundleMetas.Unlock()
	return m, nil
}

// assignment is what a check-in answers about releases.
type assignment struct {
	ring        string
	assignments []api.Assignment
	held        []api.Notice
}

// Device states for a release, as the rollout names them.
var (
	stateAssigned      = rollout.Assigned.String()
	stateApplied       = rollout.Applied.String()
	stateFailed        = rollout.Failed.String()
	stateNotApplicable = rollout.NotApplicable.String()
	stateNeedsRestart  = rollout.NeedsRestart.String()
)

// crashPrefix starts the reason of a failed state caused by a crash after
// patch; such a state is not cleared by a later good check-in, since the
// crash is what the admin must look at.
const crashPrefix = "crash"

// assign computes a device's assignments from the database (nothing is
// kept in memory between requests, so replicas agree) and records the
// device's state for every release it is eligible for. reported are the
// bundle states of the device's check-in.
func (s *Server) assign(ctx context.Context, d store.Device, reported []api.BundleState) (assignment, error) {
	var a assignment
	rs, err := s.rings(ctx)
	if err != nil {
		return a, err
	}
	o, err := s.overrides(ctx)
	if err != nil {
		return a, err
	}
	a.ring = placement(d, rs, o).Ring
	rels, err := s.st.Releases(ctx, store.ReleasePublished, store.ReleasePaused, store.ReleaseRolledBack)
	if err != nil {
		return a, err
	}
	if len(rels) == 0 {
		return a, nil
	}
	pauses, err := s.st.ActivePauses(ctx)
	if err != nil {
		return a, err
	}
	states, err := s.st.DeviceReleaseStates(ctx, d.ID)
	if err != nil {
		return a, err
	}
	var inv *inventory // read on first need
	byBundle := map[string]api.BundleState{}
	for _, b := range reported {
		byBundle[b.SHA256] = b
	}
	now := s.now()
	sort.Slice(rels, func(i, j int) bool { return rels[i].ID < rels[j].ID })
	for _, rel := range rels {
		cur, hasState := states[rel.ID]
		plan := releasePlan(rel, pauses)
		unpaused := plan
		unpaused.Pauses = nil
		would := rollout.Plan(unpaused, rs, now).Assigns(a.ring)
		if rel.State == store.ReleaseRolledBack {
			// Agents revert what is missing from the answer; the notice
			// tells the device (and its user) why.
			if would || hasState && cur.State != stateNotApplicable {
				a.held = append(a.held, api.Notice{Release: rel.ID, ReleaseName: rel.Name, State: store.ReleaseRolledBack,
					Reason: "the release was rolled back; the agent reverts it"})
			}
			continue
		}
		sch := rollout.Plan(plan, rs, now)
		had := hasState && (cur.State == stateApplied || cur.State == stateFailed)
		if !sch.Assigns(a.ring) && !had {
			if would {
				a.held = append(a.held, pausedNotice(rel, a.ring, pauses))
			}
			continue
		}
		if inv == nil {
			if inv, err = s.inventory(ctx, d); err != nil {
				return a, err
			}
		}
		metas := map[string]*bundleMeta{}
		for _, sha := range rel.Bundles {
			if metas[sha], err = s.bundleMeta(ctx, sha); err != nil {
				return a, err
			}
		}
		if rel.Kind != store.KindBaseline {
			// Every bundle, mapped or not: the agent ignores modules it
			// does not map, and a process started later gets it at once.
			for _, buildID := range sortedKeys(rel.Bundles) {
				sha := rel.Bundles[buildID]
				a.assignments = append(a.assignments, api.Assignment{Release: rel.ID, ReleaseName: rel.Name, BuildID: buildID,
					SHA256: sha, Size: metas[sha].Size, URL: api.PathBundles + sha})
			}
		}
		state, reason := deviceState(rel, metas, inv, byBundle)
		if hasState && cur.State == stateFailed && strings.HasPrefix(cur.Reason, crashPrefix) {
			continue // sticky: see crashPrefix
		}
		if hasState && cur.State == state && cur.Reason == reason && cur.Ring == a.ring {
			continue // writes are the costly part of a check-in
		}
		if err := s.st.SetDeviceReleaseState(ctx, d.ID, rel.ID, a.ring, state, reason); err != nil {
			return a, err
		}
		if state == stateFailed {
			if err := s.evaluateHalt(ctx, rel); err != nil {
				return a, err
			}
		}
	}
	return a, nil
}

// releasePlan is a release as the rollout schedules it, with the pauses
// that apply to it. A release in state paused is paused as a whole even if
// the pause row was resumed by hand without resuming the release.
func releasePlan(rel store.Release, pauses []store.Pause) rollout.Release {
	r := rollout.Release{Published: rel.PublishedAt, Kind: rollout.Kind(rel.Kind), Expedited: rel.ExpeditedAt}
	whole := false
	for _, p := range pauses {
		if p.ReleaseID == rel.ID || p.ReleaseID == 0 && p.Ring != "" {
			r.Pauses = append(r.Pauses, rollout.Pause{Ring: p.Ring, From: p.CreatedAt, Reason: p.Reason, By: p.Actor})
			whole = whole || p.ReleaseID == rel.ID && p.Ring == ""
		}
	}
	if rel.State == store.ReleasePaused && !whole {
		r.Pauses = append(r.Pauses, rollout.Pause{Reason: "the release is paused"})
	}
	return r
}

// pausedNotice says which pause holds rel back from ring.
func pausedNotice(rel store.Release, ring string, pauses []store.Pause) api.Notice {
	n := api.Notice{Release: rel.ID, ReleaseName: rel.Name, State: store.ReleasePaused, Reason: "the release is paused"}
	for _, p := range pauses {
		if p.ReleaseID != rel.ID && p.ReleaseID != 0 {
			continue
		}
		if p.Ring != "" && !strings.EqualFold(p.Ring, ring) {
			continue
		}
		n.Ring, n.Reason = p.Ring, fmt.Sprintf("paused by %s: %s", p.Actor, p.Reason)
		if p.Ring != "" {
			n.Reason = fmt.Sprintf("ring %s paused by %s: %s", p.Ring, p.Actor, p.Reason)
		}
		break
	}
	return n
}

func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// inventory is a device's last inventory, indexed.
type inventory struct {
	known    bool            // an inventory was ever received
	buildIDs map[string]bool // lowercase hex
	names    map[string]bool
}

func (s *Server) inventory(ctx context.Context, d store.Device) (*inventory, error) {
	ms, err := s.st.DeviceModules(ctx, d.ID)
	if err != nil {
		return nil, err
	}
	inv := &inventory{known: len(ms) > 0 || d.InventoryHash != "", buildIDs: map[string]bool{}, names: map[string]bool{}}
	for _, m := range ms {
		inv.buildIDs[strings.ToLower(m.BuildID)] = true
		if m.Name != "" {
			inv.names[m.Name] = true
		}
	}
	return inv, nil
}

// deviceState is a device's state for a release it is eligible for, from
// its inventory and the bundle states of its check-in.
func deviceState(rel store.Release, metas map[string]*bundleMeta, inv *inventory, reported map[string]api.BundleState) (state, reason string) {
	if !inv.known {
		return stateAssigned, "" // no inventory yet: nothing to judge by
	}
	var mapped []string // SHA-256 of the bundles whose build-id the device maps
	sameName := false
	for _, buildID := range sortedKeys(rel.Bundles) {
		sha := rel.Bundles[buildID]
		hit := inv.buildIDs[strings.ToLower(buildID)]
		for _, m := range metas[sha].Modules {
			hit = hit || inv.buildIDs[m.BuildID]
			sameName = sameName || m.Name != "" && inv.names[m.Name]
		}
		if hit {
			mapped = append(mapped, sha)
		}
	}
	switch {
	case len(mapped) == 0 && !sameName:
		return stateNotApplicable, ""
	case len(mapped) == 0:
		return stateNeedsRestart, "the device runs another build of a module the release patches; update its package and restart"
	case rel.Kind == store.KindBaseline:
		return stateApplied, ""
	}
	applied := true
	for _, sha := range mapped {
		b, ok := reported[sha]
		if ok && (b.Failing > 0 || b.Permanent) {
			reason := b.Error
			if reason == "" {
				reason = fmt.Sprintf("the patch failed in %d processes", b.Failing)
			}
			return stateFailed, reason
		}
		applied = applied && ok && b.Applied > 0 && b.Pending == 0 && b.Failing == 0
	}
	if applied {
		return stateApplied, ""
	}
	return stateAssigned, ""
}
