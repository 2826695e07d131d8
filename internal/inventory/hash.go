package inventory

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strings"
)

// Hash is a stable digest of an inventory (device + sorted set of (build-id,
// path, package)), so a client can send the inventory only when it changed.
// Pids/start times must NOT affect it, nor how many processes map a module.
func Hash(d Device, ps []Process) string {
	type triple struct{ id, path, pkg string }
	set := make(map[triple]struct{})
	for _, p := range ps {
		for _, m := range p.Modules {
			set[triple{m.BuildID, m.Path, m.Package}] = struct{}{}
		}
	}
	ts := make([]triple, 0, len(set))
	for t := range set {
		ts = append(ts, t)
	}
	sort.Slice(ts, func(i, j int) bool {
		a, b := ts[i], ts[j]
		if c := strings.Compare(a.id, b.id); c != 0 {
			return c < 0
		}
		if c := strings.Compare(a.path, b.path); c != 0 {
			return c < 0
		}
		return a.pkg < b.pkg
	})
	h := sha256.New()
	// Every field is NUL-terminated: no field holds a NUL (paths cannot),
	// so no two different inventories serialise alike.
	put := func(ss ...string) {
		for _, s := range ss {
			h.Write([]byte(s))
			h.Write([]byte{0})
		}
	}
	put("hotfleet-inventory-v1", d.Hostname, d.MachineID, d.OSID, d.OSVersionID, d.OSName, d.Kernel, d.Arch)
	for _, t := range ts {
		put(t.id, t.path, t.pkg)
	}
	return hex.EncodeToString(h.Sum(nil))
}
