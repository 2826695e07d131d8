package rollout_test

import (
	"fmt"
	"time"

	"hotfleet/internal/rollout"
)

// A monthly release under the default rings, and what a pause of First
// during its first day does: First starts at the resume, the others keep
// their dates.
func ExamplePlan() {
	published := time.Date(2026, 3, 10, 18, 0, 0, 0, time.UTC)
	rel := rollout.Release{Published: published, Kind: rollout.Hotpatch, Pauses: []rollout.Pause{{
		Ring: "First", From: published.Add(12 * time.Hour), Until: published.Add(2 * rollout.Day),
		Reason: "checking a report from the lab", By: "ana",
	}}}
	s := rollout.Plan(rel, rollout.DefaultRings(), published.Add(3*rollout.Day))
	for _, r := range s.Rings {
		fmt.Printf("%-5s eligible %s deadline %s grace end %s assigns %v\n", r.Ring,
			r.Eligible.Format("Jan 02"), r.Deadline.Format("Jan 02"), r.GraceEnd.Format("Jan 02"), s.Assigns(r.Ring))
	}
	// Output:
	// Test  eligible Mar 10 deadline Mar 10 grace end Mar 10 assigns true
	// First eligible Mar 12 deadline Mar 14 grace end Mar 16 assigns true
	// Fast  eligible Mar 16 deadline Mar 18 grace end Mar 20 assigns false
	// Broad eligible Mar 19 deadline Mar 24 grace end Mar 26 assigns false
	// Last  eligible Mar 21 deadline Mar 26 grace end Mar 28 assigns false
}

// Which ring a device is in, and why.
func ExamplePlace() {
	rings := rollout.DefaultRings()
	o := rollout.Overrides{
		Pins:   map[string]string{"db-1": "Last"},
		Labels: []rollout.LabelRule{{Label: "env=lab", Ring: "Test"}},
	}
	for _, d := range []struct {
		id     string
		labels []string
	}{{"db-1", []string{"env=lab"}}, {"lab-3", []string{"env=lab"}}} {
		p := rollout.Place(d.id, d.labels, o, rings)
		fmt.Println(d.id, p.Ring, p.By)
	}
	// Output:
	// db-1 Last pin
	// lab-3 Test label
}
