package buildtree

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
)

// Summary is the stable JSON form of a build from source. Fields are only
// ever added.
type Summary struct {
	ID          string          `json:"id"`
	Level       uint32          `json:"level"`
	CVEs        []string        `json:"cves,omitempty"`
	Output      string          `json:"output"`
	BundleBytes int             `json:"bundle_bytes"`
	Modules     []SummaryModule `json:"modules"`
	Untouched   []string        `json:"untouched_targets,omitempty"`
	Notes       []string        `json:"notes,omitempty"`
	Work        string          `json:"work,omitempty"`
}

// SummaryModule is one module of the bundle.
type SummaryModule struct {
	Target      string          `json:"target"`
	BuildID     string          `json:"build_id"`
	TargetBytes int64           `json:"target_bytes"`
	Symbols     string          `json:"symbols,omitempty"`
	Sources     []string        `json:"sources"`
	Changed     []SummaryChange `json:"changed"`
	// InlinedCallers are changed functions that hold an inlined copy of a
	// changed function: "caller (inlines f, g)".
	InlinedCallers []string `json:"inlined_callers,omitempty"`
	// NotInTarget are changed functions the target has no copy of (inlined
	// everywhere); they ship as new code reached from their callers.
	NotInTarget []string `json:"not_in_target,omitempty"`
	New         []string `json:"new,omitempty"`
	Cold        []string `json:"cold,omitempty"`
	Stubs       []string `json:"stubs,omitempty"`
	// Verified counts the replaced functions whose rebuilt original code
	// was proved equal to the target's bytes.
	Verified    int      `json:"verified"`
	Rodata      []string `json:"rodata,omitempty"`
	RodataBytes int      `json:"rodata_bytes"`
	CodeBytes   int      `json:"code_bytes"`
	Fixups      int      `json:"fixups"`
	// Percent is the whole bundle's size as a percentage of this target's
	// file size.
	Percent float64 `json:"bundle_percent_of_target"`
}

// SummaryChange is one replaced function.
type SummaryChange struct {
	Name    string `json:"name"`
	File    string `json:"file,omitempty"`
	Site    string `json:"site"`
	OldSize uint64 `json:"old_size"`
	NewSize uint64 `json:"new_size"`
	// Inlined names the changed functions inlined into this one.
	Inlined []string `json:"inlined,omitempty"`
}

// Summarize describes res, written to out as size bytes.
func Summarize(res *Result, out string, size int) Summary {
	b := res.Bundle
	s := Summary{ID: b.ID, Level: b.Level, CVEs: b.CVEs, Output: out, BundleBytes: size,
		Untouched: res.Untouched, Notes: res.Notes, Work: res.Work}
	for i, m := range res.Modules {
		r := m.Result
		sm := SummaryModule{Target: m.Target, BuildID: m.BuildID, TargetBytes: m.FileSize, Symbols: m.Symbols,
			NotInTarget: r.NotInTarget, New: r.New, Cold: r.Cold, Stubs: r.Stubs, Verified: r.Verified, RodataBytes: r.RodataBytes}
		for _, u := range m.Units {
			sm.Sources = append(sm.Sources, u.Source)
		}
		for _, c := range r.Changed {
			sm.Changed = append(sm.Changed, SummaryChange{Name: c.Name, File: c.File, Site: fmt.Sprintf("%#x", c.Site), OldSize: c.OldSize, NewSize: c.NewSize, Inlined: c.Inlined})
		}
		for _, c := range r.Inlined {
			sm.InlinedCallers = append(sm.InlinedCallers, fmt.Sprintf("%s (inlines %s)", c.Name, strings.Join(c.Inlined, ", ")))
		}
		for _, d := range r.Rodata {
			sm.Rodata = append(sm.Rodata, fmt.Sprintf("%s (%d bytes)", d.Name, d.Size))
		}
		if i < len(b.Modules) {
			sm.CodeBytes = len(b.Modules[i].Code)
			sm.Fixups = len(b.Modules[i].Fixups)
		}
		if m.FileSize > 0 {
			sm.Percent = 100 * float64(size) / float64(m.FileSize)
		}
		s.Modules = append(s.Modules, sm)
	}
	return s
}

// WriteText prints the summary for a patch author.
func (s Summary) WriteText(w io.Writer) {
	fmt.Fprintf(w, "patch %s level %d: %d module(s)\n", s.ID, s.Level, len(s.Modules))
	for _, m := range s.Modules {
		fmt.Fprintf(w, "module %s (build-id %s)\n", m.Target, m.BuildID)
		if m.Symbols != "" {
			fmt.Fprintf(w, "  symbols from %s (the target is stripped)\n", m.Symbols)
		}
		fmt.Fprintf(w, "  changed sources: %s\n", strings.Join(m.Sources, ", "))
		fmt.Fprintf(w, "  changed functions (%d):\n", len(m.Changed))
		for _, c := range m.Changed {
			file := ""
			if c.File != "" {
				file = " (static, " + c.File + ")"
			}
			inl := ""
			if len(c.Inlined) > 0 {
				inl = ", holds inlined " + strings.Join(c.Inlined, ", ")
			}
			fmt.Fprintf(w, "    %s%s at %s: %d -> %d bytes%s\n", c.Name, file, c.Site, c.OldSize, c.NewSize, inl)
		}
		if len(m.InlinedCallers) > 0 {
			fmt.Fprintf(w, "  callers changed through inlining (%d): %s\n", len(m.InlinedCallers), strings.Join(m.InlinedCallers, "; "))
		}
		if len(m.NotInTarget) > 0 {
			fmt.Fprintf(w, "  changed functions with no copy in the target, shipped as new code for their callers: %s\n", strings.Join(m.NotInTarget, ", "))
		}
		fmt.Fprintf(w, "  rebuilt original proved equal to the target for %d of %d replaced functions\n", m.Verified, len(m.Changed))
		if len(m.New) > 0 {
			fmt.Fprintf(w, "  new functions (%d): %s\n", len(m.New), strings.Join(m.New, ", "))
		}
		if len(m.Cold) > 0 {
			fmt.Fprintf(w, "  cold fragments: %s\n", strings.Join(m.Cold, ", "))
		}
		if len(m.Stubs) > 0 {
			fmt.Fprintf(w, "  library calls through the target's GOT: %s\n", strings.Join(m.Stubs, ", "))
		}
		fmt.Fprintf(w, "  new read-only data: %d bytes", m.RodataBytes)
		if len(m.Rodata) > 0 {
			fmt.Fprintf(w, ": %s", strings.Join(m.Rodata, ", "))
		}
		fmt.Fprintln(w)
		fmt.Fprintf(w, "  code %d bytes, %d fixups; bundle is %.3f%% of %s (%d bytes)\n", m.CodeBytes, m.Fixups, m.Percent, filepath.Base(m.Target), m.TargetBytes)
	}
	for _, t := range s.Untouched {
		fmt.Fprintf(w, "target %s: no changed object is linked into it; not in the bundle\n", t)
	}
	for _, n := range s.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	if s.Work != "" {
		fmt.Fprintf(w, "work directory kept: %s\n", s.Work)
	}
	fmt.Fprintf(w, "wrote %s: %d bytes\n", s.Output, s.BundleBytes)
}
