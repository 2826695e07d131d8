package rollout

import (
	"fmt"
	"time"
)

const (
	// maxWindowLength bounds a maintenance window: a week-long window is
	// "any time", which is what configuring no windows already means.
	maxWindowLength = 7 * Day
	// maxWindows bounds a device's windows; a few per week is the norm.
	maxWindows = 64
)

// Window is a weekly maintenance window in local wall-clock time: from Start
// after midnight on Weekday, for Length. Both are wall-clock amounts, so
// "Sunday 01:00 for 4h" ends at 05:00 local even on a day the clocks change
// (then it lasts 3 or 5 real hours).
type Window struct {
	Weekday time.Weekday
	Start   time.Duration
	Length  time.Duration
}

// ValidateWindows checks windows as an admin wrote them.
func ValidateWindows(ws []Window) error {
	if len(ws) > maxWindows {
		return fmt.Errorf("maintenance windows: %d, at most %d; merge adjacent windows", len(ws), maxWindows)
	}
	for i, w := range ws {
		switch {
		case w.Weekday < time.Sunday || w.Weekday > time.Saturday:
			return fmt.Errorf("maintenance window %d: weekday %d is not 0 (Sunday) to 6 (Saturday)", i+1, w.Weekday)
		case w.Start < 0 || w.Start >= Day:
			return fmt.Errorf("maintenance window %d: start %s is not within the day (00:00 to 23:59)", i+1, w.Start)
		case w.Length <= 0 || w.Length > maxWindowLength:
			return fmt.Errorf("maintenance window %d: length %s must be above 0 and at most %s", i+1, w.Length, maxWindowLength)
		}
	}
	return nil
}

// NextWindow returns the maintenance window in progress at now, or else the
// next one to begin: start <= now < end means a baseline release may be
// applied now. Windows are read in loc (from time.LoadLocation; not nil). A
// start that falls in a spring-forward gap moves forward by the gap (02:30
// becomes 03:30); a start repeated by a fall-back is its first occurrence.
// Overlapping windows are not merged. With no windows both results are zero.
func NextWindow(now time.Time, ws []Window, loc *time.Location) (start, end time.Time) {
	local := now.In(loc)
	y, m, d := local.Date()
	// A window begun up to maxWindowLength ago may still be in progress, and
	// every weekday recurs within the week ahead.
	const back = int(maxWindowLength/Day) + 1
	for k := -back; k <= 7; k++ {
		wd := time.Date(y, m, d+k, 12, 0, 0, 0, time.UTC).Weekday()
		for _, w := range ws {
			if w.Weekday != wd {
				continue
			}
			s := wallClock(y, m, d+k, w.Start, loc)
			e := wallClock(y, m, d+k, w.Start+w.Length, loc)
			if !e.After(now) {
				continue
			}
			if start.IsZero() || s.Before(start) {
				start, end = s, e
			}
		}
	}
	return start, end
}

// CanApply reports whether a release of kind may be applied at now: a
// hotpatch always, a baseline inside a window (any time when none are set).
func CanApply(kind Kind, now time.Time, ws []Window, loc *time.Location) bool {
	if kind != Baseline || len(ws) == 0 {
		return true
	}
	s, e := NextWindow(now, ws, loc)
	return !now.Before(s) && now.Before(e)
}

// wallClock is the instant the clocks in loc show off after midnight of the
// given date (day may overflow the month; off may exceed a day). time.Date
// leaves the choice in a gap or overlap unspecified, so it is made here:
// both offsets in effect around the moment are tried, and a reading valid in
// both (an overlap) takes the earlier instant, one valid in neither (a gap)
// takes the offset from before the gap, which moves it forward by the gap.
// Assumes at most one offset change within a day either side, true of every
// zone in the tz database.
func wallClock(y int, m time.Month, d int, off time.Duration, loc *time.Location) time.Time {
	naive := time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Add(off)
	_, before := naive.Add(-Day).In(loc).Zone()
	_, after := naive.Add(Day).In(loc).Zone()
	valid := func(offset int) (time.Time, bool) {
		t := naive.Add(-time.Duration(offset) * time.Second)
		_, o := t.In(loc).Zone()
		return t.In(loc), o == offset
	}
	tb, okb := valid(before)
	ta, oka := valid(after)
	switch {
	case okb && oka:
		if ta.Before(tb) {
			return ta
		}
		return tb
	case oka:
		return ta
	default:
		return tb
	}
}
