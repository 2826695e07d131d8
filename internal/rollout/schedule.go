package rollout

import (
	"strings"
	"time"
)

// Kind is what applying a release takes.
type Kind string

const (
	// Hotpatch releases apply to running processes, no restart.
	Hotpatch Kind = "hotpatch"
	// Baseline releases need a restart or package update, so they apply only
	// inside a maintenance window.
	Baseline Kind = "baseline"
)

// Pause is one pause of a release, or of one ring of it, as recorded.
type Pause struct {
	// Ring is the paused ring's name, or "" for the whole release.
	Ring string
	// From is when the pause began; Until when it was resumed, zero while
	// it lasts.
	From, Until time.Time
	Reason, By  string
}

func (p Pause) covers(ring string, t time.Time) bool {
	return (p.Ring == "" || strings.EqualFold(p.Ring, ring)) && !t.Before(p.From) && (p.Until.IsZero() || t.Before(p.Until))
}

// Release is what the schedule of a release depends on.
type Release struct {
	Published time.Time
	Kind      Kind
	// Expedited is when the release was expedited, zero if it was not. An
	// out-of-band release published expedited has Expedited == Published.
	Expedited time.Time
	Pauses    []Pause
}

// RingSchedule is when one ring gets a release.
type RingSchedule struct {
	Ring string
	// Eligible is when devices in the ring may first be assigned the
	// release; Deadline when it must be applied; GraceEnd when a postponed
	// restart is forced. All zero while Held.
	Eligible, Deadline, GraceEnd time.Time
	// Held: a pause still in effect keeps the ring from starting, so when it
	// starts is not known yet.
	Held bool
	// Paused: the ring or the release is paused at the schedule's time.
	Paused bool
}

// Schedule is a release's plan at one moment.
type Schedule struct {
	Published time.Time
	At        time.Time
	Rings     []RingSchedule
}

// Ring returns the schedule of the named ring (names match without case,
// as in Rings.Index).
func (s Schedule) Ring(name string) (RingSchedule, bool) {
	for _, r := range s.Rings {
		if strings.EqualFold(r.Ring, name) {
			return r, true
		}
	}
	return RingSchedule{}, false
}

// Assigns reports whether the named ring hands the release to devices at
// s.At: it has started and is not paused. A paused ring assigns nothing new;
// devices that already have the release keep it.
func (s Schedule) Assigns(ring string) bool {
	r, ok := s.Ring(ring)
	return ok && !r.Held && !r.Paused && !s.At.Before(r.Eligible)
}

// Plan computes each ring's schedule of rel at now.
//
// A ring becomes eligible at Published + its deferral, but not before the
// previous ring did: rings go in order even when a later ring's deferral is
// shorter. Deadline counts from eligibility, grace from the deadline.
//
// Expedite: every ring not paused becomes eligible at the later of
// publication and the expedite (or earlier, if its schedule already was), in
// no particular order: a zero-day fix does not wait for rings to go first.
// A ring paused at that moment waits for its resume and is eligible then.
//
// Pauses do not shift deferral clocks (Autopatch does the same): a ring whose
// eligibility passed during a pause becomes eligible at resume, and a pause
// that ended before a ring's eligibility changes nothing for it. The pause is
// the delay the admin asked for; shifting every later ring by its length
// would hold a security fix back from Broad by the length of an
// investigation in First. A ring delayed by a pause delays the rings after it
// through the ordering rule; to hold every ring, pause the release. Deadlines
// still count from the actual eligibility, so a device is never given less
// notice than its ring's deadline.
func Plan(rel Release, rs Rings, now time.Time) Schedule {
	s := Schedule{Published: rel.Published, At: now, Rings: make([]RingSchedule, len(rs))}
	expedite := rel.Published
	if rel.Expedited.After(expedite) {
		expedite = rel.Expedited
	}
	var prev time.Time
	prevHeld := false
	for i, r := range rs {
		rsch := RingSchedule{Ring: r.Name}
		for _, p := range rel.Pauses {
			if p.covers(r.Name, now) {
				rsch.Paused = true
			}
		}
		start, known := rel.Published.Add(r.Policy.Deferral), !prevHeld
		if known && start.Before(prev) {
			start = prev
		}
		if !rel.Expedited.IsZero() && (!known || expedite.Before(start)) {
			start, known = expedite, true
		}
		if known {
			start, known = resumeAt(start, rel.Pauses, r.Name)
		}
		if known {
			rsch.Eligible = start
			rsch.Deadline = start.Add(r.Policy.Deadline)
			rsch.GraceEnd = rsch.Deadline.Add(r.Policy.Grace)
			prev = start
		} else {
			rsch.Held = true
		}
		prevHeld = !known
		s.Rings[i] = rsch
	}
	return s
}

// resumeAt returns the first moment at or after t when neither the ring nor
// the release is paused, and false if a pause still in effect covers it.
// Each pause can move t only once (to its end), so this ends.
func resumeAt(t time.Time, pauses []Pause, ring string) (time.Time, bool) {
	for moved := true; moved; {
		moved = false
		for _, p := range pauses {
			if !p.covers(ring, t) {
				continue
			}
			if p.Until.IsZero() {
				return time.Time{}, false
			}
			t, moved = p.Until, true
		}
	}
	return t, true
}
