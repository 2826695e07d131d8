package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"

	"hotfleet/internal/bundle"
)

// Assignment is one bundle this device is told to keep applied.
type Assignment struct {
	Bundle *bundle.Bundle
	SHA256 string // of the bundle file: names the exact bytes in reports
	Origin string // where it came from: a file path, or the control plane
}

// Source yields the current set of assignments. The standalone agent reads a
// directory; under the control plane the check-in answers. Both feed the same
// enforcement, so the two modes cannot drift apart.
type Source interface {
	// Assignments returns the full current set. Bundles that cannot be used
	// are returned as problems, so they are reported rather than silently
	// skipped, and do not stop the others.
	Assignments(ctx context.Context) ([]Assignment, []Problem, error)
}

// Problem is an assigned bundle the agent refuses, and why.
type Problem struct {
	Origin string `json:"origin"`
	Error  string `json:"error"`
}

// DirSource reads every *.hfp file in a directory. A file is decoded again
// only when it changed (inode, size or modification time), so looking at the
// directory every few seconds costs a listing.
type DirSource struct {
	Dir string

	mu    sync.Mutex
	cache map[string]dirEntry
}

type dirEntry struct {
	ino, size uint64
	mtime     int64
	a         Assignment
	err       error
}

// NewDirSource reads bundles from dir.
func NewDirSource(dir string) *DirSource { return &DirSource{Dir: dir} }

// Assignments reads the directory. A file is read only up to the bundle size
// limit, so a huge file in the directory costs nothing.
func (d *DirSource) Assignments(ctx context.Context) ([]Assignment, []Problem, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cache == nil {
		d.cache = map[string]dirEntry{}
	}
	seen := map[string]bool{}
	entries, err := os.ReadDir(d.Dir)
	if err != nil {
		return nil, nil, fmt.Errorf("read the patch directory %s: %w (create it, or pass --patch-dir)", d.Dir, err)
	}
	var out []Assignment
	var probs []Problem
	for _, e := range entries {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		name := e.Name()
		if !strings.HasSuffix(name, ".hfp") || strings.HasPrefix(name, ".") || !e.Type().IsRegular() {
			continue // partly copied files are usually dot-named; others are not bundles
		}
		path := filepath.Join(d.Dir, name)
		seen[path] = true
		var key dirEntry
		if fi, err := e.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				key = dirEntry{ino: st.Ino, size: uint64(st.Size), mtime: st.Mtim.Nano()}
			}
		}
		c, ok := d.cache[path]
		if !ok || c.ino != key.ino || c.size != key.size || c.mtime != key.mtime || key.ino == 0 {
			key.a, key.err = readBundle(path)
			d.cache[path] = key
			c = key
		}
		a, err := c.a, c.err
		if err != nil {
			probs = append(probs, Problem{Origin: path, Error: err.Error()})
			continue
		}
		out = append(out, a)
	}
	for path := range d.cache {
		if !seen[path] {
			delete(d.cache, path)
		}
	}
	return out, probs, nil
}

func readBundle(path string) (Assignment, error) {
	f, err := os.Open(path)
	if err != nil {
		return Assignment{}, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, bundle.MaxBundleSize+1))
	if err != nil {
		return Assignment{}, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > bundle.MaxBundleSize {
		return Assignment{}, fmt.Errorf("%s is larger than a bundle may be (%d MiB): not a patch bundle", path, bundle.MaxBundleSize>>20)
	}
	b, err := bundle.Decode(data)
	if err != nil {
		return Assignment{}, fmt.Errorf("%s: %w; rebuild it with 'hotfleet patch build'", path, err)
	}
	sum := sha256.Sum256(data)
	return Assignment{Bundle: b, SHA256: hex.EncodeToString(sum[:]), Origin: path}, nil
}

// plan is the enforcement view of a set of assignments: for each module
// (build-id) the one bundle whose level wins.
type plan struct {
	byModule map[string]*Assignment // build-id hex → winning assignment
	ids      map[string]bool        // patch ids of all assignments
	all      []*Assignment
}

// newPlan picks, for each module, the assignment with the highest level;
// between equal levels the patch id decides, so every agent picks the same.
func newPlan(as []Assignment) (*plan, []Problem) {
	p := &plan{byModule: map[string]*Assignment{}, ids: map[string]bool{}}
	var probs []Problem
	sort.Slice(as, func(i, j int) bool { return as[i].Bundle.ID < as[j].Bundle.ID })
	for i := range as {
		a := &as[i]
		p.ids[a.Bundle.ID] = true
		p.all = append(p.all, a)
		for _, m := range a.Bundle.Modules {
			k := hex.EncodeToString(m.BuildID)
			cur := p.byModule[k]
			switch {
			case cur == nil:
				p.byModule[k] = a
			case a.Bundle.Level > cur.Bundle.Level:
				p.byModule[k] = a
			case a.Bundle.Level == cur.Bundle.Level && cur.Bundle.ID != a.Bundle.ID:
				probs = append(probs, Problem{Origin: a.Origin, Error: fmt.Sprintf(
					"bundle %s and %s both hold level %d for module %s (%s); using %s: give the newer fix a higher level",
					cur.Bundle.ID, a.Bundle.ID, a.Bundle.Level, k, m.Name, cur.Bundle.ID)})
			}
		}
	}
	return p, probs
}

// forModules returns the winning assignments for a process's modules, each
// once, with the modules of the process each one covers.
func (p *plan) forModules(buildIDs []string) []*Assignment {
	var out []*Assignment
	seen := map[*Assignment]bool{}
	for _, id := range buildIDs {
		if a := p.byModule[id]; a != nil && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
	}
	return out
}
