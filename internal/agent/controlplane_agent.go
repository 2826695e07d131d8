package agent

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"hotfleet/internal/api"
	"hotfleet/internal/inventory"
)

// The agent's side of a check-in: what it knows, computed from its own
// process table and records, never from what it was told.

func (a *Agent) outcomes() <-chan struct{} { return a.outcomeC }

// checkInState is the device's state for the next check-in.
func (a *Agent) checkInState() deviceReport {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := deviceReport{Ready: a.ready.Ready, InventoryHash: a.invHash, Inventory: a.apiInv, Bundles: a.bundleStates(time.Now())}
	for _, c := range a.ready.Failing() {
		r.Readiness = append(r.Readiness, api.Problem{Check: c.Name, Reason: c.Reason, Action: c.Action})
	}
	for _, p := range a.problems {
		r.Problems = append(r.Problems, api.Problem{Check: p.Origin, Reason: p.Error})
	}
	return r
}

// bundleStates counts, for every assigned bundle, the processes in each
// state. Called with a.mu held.
func (a *Agent) bundleStates(now time.Time) []api.BundleState {
	byS := map[string]*api.BundleState{}
	keys := map[string]string{} // sha → "id:level"
	var out []*api.BundleState
	for _, as := range a.plan.all {
		if byS[as.SHA256] != nil {
			continue
		}
		bs := &api.BundleState{SHA256: as.SHA256}
		byS[as.SHA256] = bs
		keys[as.SHA256] = fmt.Sprintf("%s:%d", as.Bundle.ID, as.Bundle.Level)
		out = append(out, bs)
	}
	for _, v := range a.views {
		if !v.affected {
			continue
		}
		r := a.st.Processes[procKey(v.pid, v.start)]
		for _, sha := range v.need {
			bs := byS[sha]
			if bs == nil {
				continue // the plan changed since the process was looked at
			}
			_, applied := v.patches[keys[sha]]
			mine := r != nil && r.ErrorPatch == sha && r.LastError != ""
			switch {
			case applied:
				bs.Applied++
			case mine && r.Quarantined.After(now):
				bs.Quarantined++
				bs.Error = r.LastError
			case mine:
				bs.Failing++
				bs.Error = r.LastError
				bs.Permanent = bs.Permanent || r.Permanent
			default:
				bs.Pending++
			}
		}
	}
	res := make([]api.BundleState, len(out))
	for i, bs := range out {
		res[i] = *bs
	}
	return res
}

// needSHAs names the assignments a process with these modules needs.
func needSHAs(pl *plan, ids []string) []string {
	as := pl.forModules(ids)
	if len(as) == 0 {
		return nil
	}
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.SHA256
	}
	return out
}

// bundlesOf maps "id:level" keys of patches applied in a process to the
// bundles they came from, assigned or withdrawn. Called with a.mu held.
func (a *Agent) bundlesOf(patches []string) []string {
	var out []string
	for _, k := range patches {
		id, level := splitKey(k)
		sha := ""
		for _, as := range a.plan.all {
			if as.Bundle.ID == id && as.Bundle.Level == level {
				sha = as.SHA256
			}
		}
		if w, ok := a.st.Withdrawn[id]; sha == "" && ok && w.Level == level {
			sha = w.SHA256
		}
		if sha != "" {
			out = append(out, sha)
		}
	}
	return out
}

// apiInventory aggregates the processes by module, as the control plane
// stores them: which builds run on the device, not every pid.
func apiInventory(d inventory.Device, procs []inventory.Process) *api.Inventory {
	inv := &api.Inventory{Hostname: d.Hostname, Kernel: d.Kernel, OS: d.OSName, Arch: d.Arch, Processes: len(procs)}
	byID := map[string]*api.Module{}
	for i := range procs {
		seen := map[string]bool{}
		for _, m := range procs[i].Modules {
			if m.BuildID == "" || seen[m.BuildID] {
				continue // no patch can name a module without a build-id
			}
			seen[m.BuildID] = true
			am := byID[m.BuildID]
			if am == nil {
				am = &api.Module{BuildID: m.BuildID, Name: filepath.Base(strings.TrimSuffix(m.Path, " (deleted)")), Package: m.Package}
				byID[m.BuildID] = am
			}
			if am.Package == "" {
				am.Package = m.Package
			}
			am.Processes++
		}
	}
	inv.Modules = make([]api.Module, 0, len(byID))
	for _, m := range byID {
		inv.Modules = append(inv.Modules, *m)
	}
	sort.Slice(inv.Modules, func(i, j int) bool { return inv.Modules[i].BuildID < inv.Modules[j].BuildID })
	return inv
}
