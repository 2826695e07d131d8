package rollout

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// beats returns check-ins every interval (± jitter) from from to to.
func beats(r *rand.Rand, from, to time.Time, interval, jitter time.Duration) []time.Time {
	var ts []time.Time
	for t := from; !t.After(to); t = t.Add(interval) {
		j := time.Duration(0)
		if jitter > 0 {
			j = time.Duration(r.Int64N(int64(2*jitter))) - jitter
		}
		if at := t.Add(j); !at.After(to) {
			ts = append(ts, at)
		}
	}
	return ts
}

func compliantAt(c []CurvePoint, off time.Duration) float64 {
	f := 0.0
	for _, p := range c {
		if p.Offset <= off {
			f = p.Compliant
		}
	}
	return f
}

func TestForecastOnlineFleet(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	now := published
	rs := DefaultRings()
	o := Overrides{Labels: []LabelRule{{Label: "lab", Ring: "Test"}}}
	const n, interval, jitter = 2000, 30 * time.Minute, 5 * time.Minute
	var fleet []DeviceHistory
	for i := range n {
		id := fmt.Sprintf("srv-%05d", i)
		var labels []string
		if i%100 == 0 {
			labels = []string{"lab"}
		}
		fleet = append(fleet, DeviceHistory{
			ID: id, Ring: Place(id, labels, o, rs).Ring, Applicable: i%10 != 9,
			CheckIns: beats(r, now.Add(-2*Day), now, interval, jitter),
		})
	}
	s := Plan(Release{Published: now}, rs, now)
	f := ForecastRelease(s, fleet, now)
	if f.NotApplicable != n/10 || len(f.Devices) != n-n/10 {
		t.Fatalf("%d not applicable, %d forecast; want %d and %d", f.NotApplicable, len(f.Devices), n/10, n-n/10)
	}
	for _, d := range f.Devices {
		late := d.Expected.Sub(d.Eligible)
		if d.Unknown || d.Away || late < 0 || late > interval+2*jitter {
			t.Errorf("device %s in %s: expected %s after eligibility (away %v, unknown %v), want within one interval",
				d.ID, d.Ring, late, d.Away, d.Unknown)
		}
	}
	broad, _ := s.Ring("Broad")
	last := f.Curve[len(f.Curve)-1]
	if last.Compliant != 1 || last.Offset > broad.Eligible.Sub(now)+interval+2*jitter {
		t.Errorf("curve ends at %.3f compliant at P+%s, want 1 within an interval of Broad's eligibility (P+%s)", last.Compliant, last.Offset, broad.Eligible.Sub(now))
	}
	prev := CurvePoint{}
	for _, p := range f.Curve {
		if p.Offset <= prev.Offset && prev != (CurvePoint{}) || p.Compliant < prev.Compliant {
			t.Fatalf("curve not increasing: %+v after %+v", p, prev)
		}
		prev = p
	}
	// Before Fast starts only Test and First (about 1% + 1%) are compliant;
	// before Broad, about 11%.
	for _, c := range []struct {
		at       time.Duration
		min, max float64
	}{
		{5 * Day, 0.01, 0.035},
		{8 * Day, 0.08, 0.14},
		{9*Day + 2*time.Hour, 1, 1},
	} {
		if got := compliantAt(f.Curve, c.at); got < c.min || got > c.max {
			t.Errorf("compliant at P+%s = %.3f, want %.2f–%.2f", c.at, got, c.min, c.max)
		}
	}
	t.Logf("%d curve points; P+5d %.3f, P+8d %.3f, 100%% at P+%s", len(f.Curve), compliantAt(f.Curve, 5*Day), compliantAt(f.Curve, 8*Day), last.Offset)
}

func TestForecastDevices(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	now := published
	h := time.Hour
	// A laptop off at night: hourly during the day, so its median interval
	// stays an hour, and it is online now.
	var laptop []time.Time
	for d := 6; d >= 0; d-- {
		day := now.Add(-time.Duration(d) * Day)
		laptop = append(laptop, beats(r, day.Add(-10*h), day, h, 0)...)
	}
	for _, tc := range []struct {
		name     string
		dev      DeviceHistory
		rel      Release
		min, max time.Duration // expected compliance, from publication
		away     bool
		unknown  bool
	}{
		{
			name: "online, in First: at its first beat after P+1d",
			dev:  DeviceHistory{Ring: "First", CheckIns: beats(r, now.Add(-Day), now, h, 0)},
			min:  Day, max: Day + h,
		},
		{
			name: "offline for the last week: expected back in a week",
			dev:  DeviceHistory{Ring: "First", CheckIns: beats(r, now.Add(-30*Day), now.Add(-7*Day), h, 0)},
			min:  7 * Day, max: 7*Day + h, away: true,
		},
		{
			name: "offline for a day, in Broad: back before Broad starts, on time",
			dev:  DeviceHistory{Ring: "Broad", CheckIns: beats(r, now.Add(-10*Day), now.Add(-Day), h, 0)},
			min:  9 * Day, max: 9*Day + h, away: true,
		},
		{
			name: "off at night, on now: a night does not stretch its interval",
			dev:  DeviceHistory{Ring: "First", CheckIns: laptop},
			min:  Day, max: Day + h,
		},
		{
			name: "one check-in, recent: assumed interval",
			dev:  DeviceHistory{Ring: "Test", CheckIns: []time.Time{now.Add(-10 * time.Minute)}},
			min:  0, max: assumedInterval,
		},
		{
			name: "expedited: every ring at once",
			dev:  DeviceHistory{Ring: "Broad", CheckIns: beats(r, now.Add(-Day), now, h, 0)},
			rel:  Release{Published: now, Expedited: now},
			min:  0, max: h,
		},
		{
			name:    "never checked in",
			dev:     DeviceHistory{Ring: "Fast"},
			unknown: true,
		},
		{
			name:    "ring held by a pause",
			dev:     DeviceHistory{Ring: "Fast", CheckIns: beats(r, now.Add(-Day), now, h, 0)},
			rel:     Release{Published: now, Pauses: []Pause{{Ring: "Fast", From: now}}},
			unknown: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.dev.ID, tc.dev.Applicable = "d1", true
			rel := tc.rel
			if rel.Published.IsZero() {
				rel.Published = now
			}
			f := ForecastRelease(Plan(rel, DefaultRings(), now), []DeviceHistory{tc.dev}, now)
			d := f.Devices[0]
			if d.Unknown != tc.unknown || d.Away != tc.away {
				t.Fatalf("forecast %+v, want unknown %v away %v", d, tc.unknown, tc.away)
			}
			if tc.unknown {
				if len(f.Curve) != 0 {
					t.Errorf("curve %+v for a device with no forecast, want none", f.Curve)
				}
				return
			}
			if got := d.Expected.Sub(now); got < tc.min || got > tc.max {
				t.Errorf("expected compliant at P+%s, want P+%s to P+%s", got, tc.min, tc.max)
			}
			if got := f.Curve[len(f.Curve)-1]; got.Compliant != 1 || got.Offset < d.Expected.Sub(now) || got.Offset >= d.Expected.Sub(now)+curveResolution {
				t.Errorf("curve %+v, want 1 at the expected time rounded up to %s", f.Curve, curveResolution)
			}
		})
	}
}

func TestTypicalInterval(t *testing.T) {
	base := published
	ts := []time.Time{base.Add(5 * time.Hour), base, base.Add(time.Hour), base.Add(2 * time.Hour), base.Add(2 * time.Hour)}
	// Gaps 1h, 1h, 3h (unsorted input, a duplicate): the median is 1h.
	if got := TypicalInterval(ts); got != time.Hour {
		t.Errorf("TypicalInterval = %s, want 1h", got)
	}
	if got := TypicalInterval(ts[:1]); got != assumedInterval {
		t.Errorf("TypicalInterval of one check-in = %s, want %s", got, assumedInterval)
	}
}
