package rollout

import (
	"fmt"
	"math"
	"strings"
	"testing"
)

func syntheticIDs(prefix string, n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%08d", prefix, i)
	}
	return ids
}

// TestPlaceShares places 100k synthetic ids and checks each hash-placed ring
// holds its share within ±0.5 percentage points, for several configs.
func TestPlaceShares(t *testing.T) {
	const n = 100_000
	ids := syntheticIDs("dev", n)
	for _, tc := range []struct {
		name string
		rs   Rings
	}{
		{"default", DefaultRings()},
		{"thirds", Rings{{Name: "A", Share: 33.3}, {Name: "B", Share: 33.3}, {Name: "C", Share: 33.4}}},
		{"one ring", Rings{{Name: "T", PinnedOnly: true}, {Name: "All", Share: 100}}},
		{"tiny first", Rings{{Name: "Canary", Share: 0.5}, {Name: "Rest", Share: 99.5}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.rs.Validate(); err != nil {
				t.Fatal(err)
			}
			count := map[string]int{}
			for _, id := range ids {
				p := Place(id, nil, Overrides{}, tc.rs)
				if p.By != ByHash {
					t.Fatalf("%s placed by %s with no overrides", id, p.By)
				}
				count[p.Ring]++
			}
			for _, r := range tc.rs {
				got := 100 * float64(count[r.Name]) / n
				if math.Abs(got-r.Share) > 0.5 {
					t.Errorf("ring %s holds %.3f%% of devices, want %g%% ±0.5", r.Name, got, r.Share)
				}
				t.Logf("ring %s: %.3f%% (share %g%%)", r.Name, got, r.Share)
			}
		})
	}
}

// TestPlaceStable: devices joining never move a placed device, and changing
// one share moves exactly the devices whose position lies between the old
// and the new band edge, and nothing else.
func TestPlaceStable(t *testing.T) {
	rs := DefaultRings()
	old := syntheticIDs("old", 20_000)
	before := map[string]string{}
	for _, id := range old {
		before[id] = Place(id, nil, Overrides{}, rs).Ring
	}
	for _, id := range syntheticIDs("new", 50_000) {
		Place(id, nil, Overrides{}, rs) // a placement has no side effects to undo
	}
	for _, id := range old {
		if got := Place(id, nil, Overrides{}, rs).Ring; got != before[id] {
			t.Fatalf("%s moved from %s to %s when devices joined", id, before[id], got)
		}
	}

	for _, tc := range []struct {
		name        string
		first, fast float64 // Broad takes the rest
		lo, hi      float64 // the band of positions (in %) that must move
	}{
		{"First 1→2, Fast 9→8", 2, 8, 1, 2},
		{"Fast 9→14, Broad 90→85", 1, 14, 10, 15},
		{"First 1→0.5, Fast 9→9.5", 0.5, 9.5, 0.5, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			changed := DefaultRings()
			changed[1].Share, changed[2].Share, changed[3].Share = tc.first, tc.fast, 100-tc.first-tc.fast
			if err := changed.Validate(); err != nil {
				t.Fatal(err)
			}
			moved := 0
			for _, id := range old {
				pos := Position(id) * 100
				inBand := pos >= tc.lo && pos < tc.hi
				got := Place(id, nil, Overrides{}, changed).Ring
				if (got != before[id]) != inBand {
					t.Errorf("%s at %.3f%%: %s → %s, in changed band [%g,%g): %v", id, pos, before[id], got, tc.lo, tc.hi, inBand)
				}
				if got != before[id] {
					moved++
				}
			}
			wantMoved := float64(len(old)) * (tc.hi - tc.lo) / 100
			if math.Abs(float64(moved)-wantMoved) > 0.5*float64(len(old))/100 {
				t.Errorf("%d devices moved, want about %.0f", moved, wantMoved)
			}
			t.Logf("%d of %d devices moved", moved, len(old))
		})
	}
}

func TestPlaceOverrides(t *testing.T) {
	rs := DefaultRings()
	o := Overrides{
		Pins: map[string]string{"db-1": "Last", "lab-7": "test", "gone": "Nope"},
		Labels: []LabelRule{
			{Label: "env=lab", Ring: "Test"},
			{Label: "role=db", Ring: "Last"},
			{Label: "dangling", Ring: "Nope"},
		},
	}
	for _, tc := range []struct {
		id     string
		labels []string
		ring   string
		by     PlacedBy
	}{
		{"db-1", []string{"env=lab"}, "Last", ByPin},               // pin before label
		{"lab-7", nil, "Test", ByPin},                              // ring names match without case
		{"web-3", []string{"role=db", "env=lab"}, "Test", ByLabel}, // rule order, not label order
		{"db-2", []string{"role=db"}, "Last", ByLabel},
		{"web-4", []string{"env=prod"}, Place("web-4", nil, Overrides{}, rs).Ring, ByHash},
		{"gone", []string{"dangling"}, Place("gone", nil, Overrides{}, rs).Ring, ByHash}, // missing ring: skipped
	} {
		p := Place(tc.id, tc.labels, o, rs)
		if p.Ring != tc.ring || p.By != tc.by || rs[p.Index].Name != p.Ring {
			t.Errorf("Place(%s, %v) = %+v, want ring %s by %s", tc.id, tc.labels, p, tc.ring, tc.by)
		}
	}
	if err := o.Validate(rs); err == nil || !strings.Contains(err.Error(), `device gone is pinned to ring "Nope"`) {
		t.Errorf("Overrides.Validate = %v, want the pin of gone to missing ring Nope refused", err)
	}
	o.Pins = nil
	if err := o.Validate(rs); err == nil || !strings.Contains(err.Error(), `label rule 3 (dangling) names ring "Nope"`) {
		t.Errorf("Overrides.Validate = %v, want label rule 3 refused", err)
	}
	good := Overrides{Pins: map[string]string{"db-1": "Last"}, Labels: []LabelRule{{"env=lab", "Test"}}}
	if err := good.Validate(rs); err != nil {
		t.Errorf("Overrides.Validate refused valid overrides: %v", err)
	}
	// A hash-placed device never lands in a pinned-only ring.
	for _, id := range syntheticIDs("x", 10_000) {
		if p := Place(id, nil, Overrides{}, rs); rs[p.Index].PinnedOnly {
			t.Fatalf("%s hash-placed in pinned-only ring %s", id, p.Ring)
		}
	}
}

func BenchmarkPlace(b *testing.B) {
	rs := DefaultRings()
	o := Overrides{Pins: map[string]string{"db-1": "Last"}, Labels: []LabelRule{{"env=lab", "Test"}}}
	labels := []string{"env=prod", "role=web"}
	ids := syntheticIDs("bench", 1024)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		Place(ids[i%len(ids)], labels, o, rs)
	}
}
