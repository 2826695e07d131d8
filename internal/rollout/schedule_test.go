package rollout

import (
	"testing"
	"time"
)

var published = time.Date(2026, 3, 10, 18, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return published.Add(d) }

const held = -1 // expected offset of a ring held by a pause

func TestPlan(t *testing.T) {
	h := time.Hour
	for _, tc := range []struct {
		name     string
		rs       Rings
		rel      Release
		now      time.Duration
		eligible []time.Duration // per ring, from publication; held if held
		paused   []string
		assigns  []string // rings that assign at now
	}{
		{
			name:     "default policy",
			rel:      Release{Published: published},
			now:      7 * Day,
			eligible: []time.Duration{0, 1 * Day, 6 * Day, 9 * Day, 11 * Day},
			assigns:  []string{"Test", "First", "Fast"},
		},
		{
			name: "rings go in order whatever their deferrals",
			rs: Rings{
				{Name: "A", Share: 50, Policy: Policy{Deferral: 0}},
				{Name: "B", Share: 25, Policy: Policy{Deferral: 5 * Day}},
				{Name: "C", Share: 25, Policy: Policy{Deferral: 2 * Day}},
			},
			rel:      Release{Published: published},
			now:      3 * Day,
			eligible: []time.Duration{0, 5 * Day, 5 * Day},
			assigns:  []string{"A"},
		},
		{
			name:     "expedite after publication: every ring at the expedite",
			rel:      Release{Published: published, Expedited: at(2 * h)},
			now:      3 * h,
			eligible: []time.Duration{0, 2 * h, 2 * h, 2 * h, 2 * h},
			assigns:  []string{"Test", "First", "Fast", "Broad", "Last"},
		},
		{
			name:     "out-of-band release published expedited",
			rel:      Release{Published: published, Expedited: published},
			now:      0,
			eligible: []time.Duration{0, 0, 0, 0, 0},
			assigns:  []string{"Test", "First", "Fast", "Broad", "Last"},
		},
		{
			name: "expedite skips a paused ring, not the rings after it",
			rel: Release{Published: published, Expedited: at(2 * h), Pauses: []Pause{
				{Ring: "Fast", From: at(1 * h), Reason: "crash on one lab box", By: "ana"},
			}},
			now:      3 * h,
			eligible: []time.Duration{0, 2 * h, held, 2 * h, 2 * h},
			paused:   []string{"Fast"},
			assigns:  []string{"Test", "First", "Broad", "Last"},
		},
		{
			name: "expedited ring resumed: eligible at resume",
			rel: Release{Published: published, Expedited: at(2 * h), Pauses: []Pause{
				{Ring: "Fast", From: at(1 * h), Until: at(5 * h)},
			}},
			now:      6 * h,
			eligible: []time.Duration{0, 2 * h, 5 * h, 2 * h, 2 * h},
			assigns:  []string{"Test", "First", "Fast", "Broad", "Last"},
		},
		{
			name: "release paused and resumed: no shift of deferral clocks",
			rel: Release{Published: published, Pauses: []Pause{
				{From: at(12 * h), Until: at(3 * Day)},
			}},
			now:      4 * Day,
			eligible: []time.Duration{0, 3 * Day, 6 * Day, 9 * Day, 11 * Day},
			assigns:  []string{"Test", "First"},
		},
		{
			name: "ring pause past a later ring's deferral delays it through the order",
			rel: Release{Published: published, Pauses: []Pause{
				{Ring: "First", From: at(12 * h), Until: at(7 * Day)},
			}},
			now:      8 * Day,
			eligible: []time.Duration{0, 7 * Day, 7 * Day, 9 * Day, 11 * Day},
			assigns:  []string{"Test", "First", "Fast"},
		},
		{
			name: "open ring pause holds it and every later ring",
			rel: Release{Published: published, Pauses: []Pause{
				{Ring: "Fast", From: at(2 * Day)},
			}},
			now:      10 * Day,
			eligible: []time.Duration{0, 1 * Day, held, held, held},
			paused:   []string{"Fast"},
			assigns:  []string{"Test", "First"},
		},
		{
			name: "pause of a started ring: keeps its dates, assigns nothing new",
			rel: Release{Published: published, Pauses: []Pause{
				{Ring: "First", From: at(36 * h)},
			}},
			now:      2 * Day,
			eligible: []time.Duration{0, 1 * Day, 6 * Day, 9 * Day, 11 * Day},
			paused:   []string{"First"},
			assigns:  []string{"Test"},
		},
		{
			name: "open release pause: all paused, unstarted rings held",
			rel: Release{Published: published, Pauses: []Pause{
				{From: at(30 * h), Reason: "automatic halt"},
			}},
			now:      2 * Day,
			eligible: []time.Duration{0, 1 * Day, held, held, held},
			paused:   []string{"Test", "First", "Fast", "Broad", "Last"},
		},
		{
			name: "back-to-back pauses chain",
			rel: Release{Published: published, Pauses: []Pause{
				{Ring: "First", From: at(20 * h), Until: at(30 * h)},
				{From: at(30 * h), Until: at(40 * h)},
			}},
			now:      2 * Day,
			eligible: []time.Duration{0, 40 * h, 6 * Day, 9 * Day, 11 * Day},
			assigns:  []string{"Test", "First"},
		},
		{
			name: "resume recorded before the pause is ignored",
			rel: Release{Published: published, Pauses: []Pause{
				{From: at(20 * h), Until: at(10 * h)},
			}},
			now:      2 * Day,
			eligible: []time.Duration{0, 1 * Day, 6 * Day, 9 * Day, 11 * Day},
			assigns:  []string{"Test", "First"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rs := tc.rs
			if rs == nil {
				rs = DefaultRings()
			}
			s := Plan(tc.rel, rs, at(tc.now))
			for i, r := range rs {
				got := s.Rings[i]
				if want := tc.eligible[i]; want == held {
					if !got.Held || !got.Eligible.IsZero() {
						t.Errorf("ring %s: %+v, want held", r.Name, got)
					}
					continue
				}
				if got.Held || !got.Eligible.Equal(at(tc.eligible[i])) {
					t.Errorf("ring %s eligible at P+%s (held %v), want P+%s", r.Name, got.Eligible.Sub(published), got.Held, tc.eligible[i])
				}
				if !got.Deadline.Equal(got.Eligible.Add(r.Policy.Deadline)) || !got.GraceEnd.Equal(got.Deadline.Add(r.Policy.Grace)) {
					t.Errorf("ring %s: deadline %s grace end %s, want eligibility + %s + %s", r.Name, got.Deadline, got.GraceEnd, r.Policy.Deadline, r.Policy.Grace)
				}
			}
			for _, r := range rs {
				rsch, _ := s.Ring(r.Name)
				if want := contains(tc.paused, r.Name); rsch.Paused != want {
					t.Errorf("ring %s paused = %v, want %v", r.Name, rsch.Paused, want)
				}
				if want := contains(tc.assigns, r.Name); s.Assigns(r.Name) != want {
					t.Errorf("ring %s assigns at P+%s = %v, want %v", r.Name, tc.now, !want, want)
				}
			}
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestPlanDefaultDates(t *testing.T) {
	s := Plan(Release{Published: published}, DefaultRings(), published)
	broad, _ := s.Ring("Broad")
	if want := at(9 * Day); !broad.Eligible.Equal(want) {
		t.Errorf("Broad eligible %s, want %s", broad.Eligible, want)
	}
	if want := at(14 * Day); !broad.Deadline.Equal(want) {
		t.Errorf("Broad deadline %s, want %s", broad.Deadline, want)
	}
	if want := at(16 * Day); !broad.GraceEnd.Equal(want) {
		t.Errorf("Broad grace end %s, want %s", broad.GraceEnd, want)
	}
	if s.Assigns("Nope") {
		t.Error("a missing ring assigns")
	}
}
