package rollout

import (
	"strings"
	"testing"
	"time"
	// Tests need Europe/Berlin and America/New_York even on a machine
	// without the tzdata package; the server binary must embed it too.
	_ "time/tzdata"
)

func mustLoad(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatalf("load time zone %s: %v (install tzdata)", name, err)
	}
	return loc
}

func utc(s string) time.Time {
	t, err := time.Parse("2006-01-02 15:04", s)
	if err != nil {
		panic(err)
	}
	return t
}

func TestNextWindow(t *testing.T) {
	berlin := mustLoad(t, "Europe/Berlin")
	newYork := mustLoad(t, "America/New_York")
	h := time.Hour
	sun := func(start, length time.Duration) Window {
		return Window{Weekday: time.Sunday, Start: start, Length: length}
	}
	for _, tc := range []struct {
		name       string
		loc        *time.Location
		windows    []Window
		now        string // UTC
		start, end string // UTC; "" for zero
	}{
		{"ordinary Sunday in winter", berlin, []Window{sun(2*h, 2*h)}, "2026-03-18 12:00", "2026-03-22 01:00", "2026-03-22 03:00"},
		{"ordinary Sunday in summer", berlin, []Window{sun(2*h, 2*h)}, "2026-04-01 12:00", "2026-04-05 00:00", "2026-04-05 02:00"},
		// 29 March 2026 02:00 CET becomes 03:00 CEST: 02:30 does not exist.
		{"spring forward: start in the gap moves forward by the gap", berlin, []Window{sun(2*h+30*time.Minute, 2*h)}, "2026-03-28 12:00", "2026-03-29 01:30", "2026-03-29 02:30"},
		{"spring forward: wall-clock end, 3 real hours", berlin, []Window{sun(1*h, 4*h)}, "2026-03-28 12:00", "2026-03-29 00:00", "2026-03-29 03:00"},
		{"spring forward: in progress", berlin, []Window{sun(1*h, 4*h)}, "2026-03-29 02:00", "2026-03-29 00:00", "2026-03-29 03:00"},
		// 25 October 2026 03:00 CEST becomes 02:00 CET: 02:30 happens twice.
		{"fall back: repeated start is the first one", berlin, []Window{sun(2*h+30*time.Minute, 30*time.Minute)}, "2026-10-24 12:00", "2026-10-25 00:30", "2026-10-25 02:00"},
		{"fall back: wall-clock end, 5 real hours", berlin, []Window{sun(1*h, 4*h)}, "2026-10-24 12:00", "2026-10-24 23:00", "2026-10-25 04:00"},
		{"fall back: in progress in the repeated hour", berlin, []Window{sun(1*h, 4*h)}, "2026-10-25 01:30", "2026-10-24 23:00", "2026-10-25 04:00"},
		{"week after fall back", berlin, []Window{sun(1*h, 4*h)}, "2026-10-25 05:00", "2026-11-01 00:00", "2026-11-01 04:00"},
		{"crossing midnight, in progress after midnight", berlin, []Window{{Weekday: time.Saturday, Start: 23 * h, Length: 3 * h}}, "2026-06-06 23:30", "2026-06-06 21:00", "2026-06-07 00:00"},
		{"the earliest of several", berlin, []Window{
			{Weekday: time.Friday, Start: 22 * h, Length: h},
			{Weekday: time.Wednesday, Start: 3 * h, Length: h},
		}, "2026-06-01 08:00", "2026-06-03 01:00", "2026-06-03 02:00"},
		{"window just ended: next week's", berlin, []Window{{Weekday: time.Wednesday, Start: 3 * h, Length: h}}, "2026-06-03 02:00", "2026-06-10 01:00", "2026-06-10 02:00"},
		// 8 March 2026 02:00 EST becomes 03:00 EDT.
		{"other zone: New York spring forward", newYork, []Window{sun(1*h, 3*h)}, "2026-03-07 12:00", "2026-03-08 06:00", "2026-03-08 08:00"},
		{"no windows", berlin, nil, "2026-06-01 08:00", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := ValidateWindows(tc.windows); err != nil {
				t.Fatal(err)
			}
			start, end := NextWindow(utc(tc.now), tc.windows, tc.loc)
			ws, we := time.Time{}, time.Time{}
			if tc.start != "" {
				ws, we = utc(tc.start), utc(tc.end)
			}
			if !start.Equal(ws) || !end.Equal(we) {
				t.Errorf("NextWindow(%s) = %s – %s, want %s – %s (UTC)", tc.now, start.UTC(), end.UTC(), ws, we)
			}
			if !start.IsZero() && start.Location() != tc.loc {
				t.Errorf("window start in %s, want it in %s for display", start.Location(), tc.loc)
			}
		})
	}
}

func TestCanApply(t *testing.T) {
	berlin := mustLoad(t, "Europe/Berlin")
	ws := []Window{{Weekday: time.Sunday, Start: time.Hour, Length: 4 * time.Hour}}
	for _, tc := range []struct {
		kind    Kind
		windows []Window
		now     string
		want    bool
	}{
		{Hotpatch, ws, "2026-06-03 12:00", true},
		{Baseline, ws, "2026-06-03 12:00", false},
		{Baseline, ws, "2026-06-07 00:00", true},  // 02:00 CEST Sunday
		{Baseline, ws, "2026-06-07 03:00", false}, // 05:00 CEST: window over
		{Baseline, nil, "2026-06-03 12:00", true},
	} {
		if got := CanApply(tc.kind, utc(tc.now), tc.windows, berlin); got != tc.want {
			t.Errorf("CanApply(%s, %d windows, %s) = %v, want %v", tc.kind, len(tc.windows), tc.now, got, tc.want)
		}
	}
}

func TestValidateWindows(t *testing.T) {
	for _, tc := range []struct {
		w    Window
		want string
	}{
		{Window{Weekday: 7, Start: 0, Length: time.Hour}, "weekday 7"},
		{Window{Weekday: time.Monday, Start: -time.Minute, Length: time.Hour}, "start -1m0s"},
		{Window{Weekday: time.Monday, Start: Day, Length: time.Hour}, "start 24h0m0s"},
		{Window{Weekday: time.Monday, Start: 0, Length: 0}, "length 0s"},
		{Window{Weekday: time.Monday, Start: 0, Length: 8 * Day}, "length 192h0m0s"},
	} {
		err := ValidateWindows([]Window{{Weekday: time.Sunday, Length: time.Hour}, tc.w})
		if err == nil || !strings.Contains(err.Error(), "window 2: "+tc.want) {
			t.Errorf("ValidateWindows(%+v) = %v, want an error about window 2: %s", tc.w, err, tc.want)
		}
	}
}
