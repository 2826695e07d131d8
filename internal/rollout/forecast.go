package rollout

import (
	"slices"
	"time"
)

const (
	// offlineFactor: a device silent for more than this many of its typical
	// intervals is taken to be away, not just late; agents jitter their
	// check-ins, but not threefold.
	offlineFactor = 3
	// assumedInterval stands in for the typical interval of a device with a
	// single check-in: the order of the agent's usual interval.
	assumedInterval = time.Hour
	// curveResolution rounds the curve's offsets up, bounding its points for
	// a large fleet; a forecast over days needs no finer steps.
	curveResolution = time.Minute
)

// DeviceHistory is what the forecast knows of a device.
type DeviceHistory struct {
	ID         string
	Ring       string // from Place
	Applicable bool
	CheckIns   []time.Time
}

// DeviceForecast is when a device is expected to get a release.
type DeviceForecast struct {
	ID, Ring string
	Eligible time.Time
	// Expected is the expected first check-in at or after eligibility,
	// when the device gets and applies the release. Zero when Unknown.
	Expected time.Time
	// Away: the device has been silent for more than offlineFactor typical
	// intervals, so Expected is its expected return.
	Away bool
	// Unknown: never checked in, or its ring is held by a pause.
	Unknown bool
}

// CurvePoint is the expected fraction of applicable devices compliant at
// Offset after publication.
type CurvePoint struct {
	Offset    time.Duration
	Compliant float64
}

// Forecast is who is expected to get a release when, and the resulting
// compliance curve.
type Forecast struct {
	Devices []DeviceForecast // applicable devices only
	Curve   []CurvePoint
	// NotApplicable devices are compliant from the start and left out of
	// the curve's denominator.
	NotApplicable int
}

// ForecastRelease estimates, for a schedule from Plan, when each applicable
// device first checks in after its ring becomes eligible, and the curve of
// the fraction of applicable devices compliant over time.
//
// The model: a device checks in every typical interval, the median of the
// gaps between its recent check-ins (the median, so that a night or a
// weekend switched off does not stretch it), on the beat of its last
// check-in. A device silent for longer than offlineFactor typical intervals
// is away, and is expected back after as long again as it has been away
// already: with no model of its outage the median remaining length of an
// outage is about its age so far, so a device off for a week is expected in
// a week, not at its next beat. From its return it beats again. Applying a
// hot patch takes seconds, so a device counts as compliant at that check-in;
// for a baseline release this is when the device learns of it, and restarts
// within windows and deadlines come after and are not modelled. Devices
// never seen, in a ring held by a pause, or in a ring the schedule lacks, are
// never compliant in the curve.
func ForecastRelease(s Schedule, devices []DeviceHistory, now time.Time) Forecast {
	var f Forecast
	var offsets []time.Duration
	for _, d := range devices {
		if !d.Applicable {
			f.NotApplicable++
			continue
		}
		df := DeviceForecast{ID: d.ID, Ring: d.Ring}
		rsch, ok := s.Ring(d.Ring)
		if !ok || rsch.Held || len(d.CheckIns) == 0 {
			df.Unknown = true
			f.Devices = append(f.Devices, df)
			continue
		}
		df.Eligible = rsch.Eligible
		df.Expected, df.Away = expectedCheckIn(d.CheckIns, rsch.Eligible, now)
		f.Devices = append(f.Devices, df)
		off := df.Expected.Sub(s.Published)
		if r := off % curveResolution; r > 0 {
			off += curveResolution - r
		}
		offsets = append(offsets, off)
	}
	slices.Sort(offsets)
	total := float64(len(f.Devices))
	for i, off := range offsets {
		if i+1 < len(offsets) && offsets[i+1] == off {
			continue
		}
		f.Curve = append(f.Curve, CurvePoint{Offset: off, Compliant: float64(i+1) / total})
	}
	return f
}

// TypicalInterval is the median gap between a device's check-ins.
func TypicalInterval(checkIns []time.Time) time.Duration {
	ts := slices.Clone(checkIns)
	slices.SortFunc(ts, time.Time.Compare)
	var gaps []time.Duration
	for i := 1; i < len(ts); i++ {
		if g := ts[i].Sub(ts[i-1]); g > 0 {
			gaps = append(gaps, g)
		}
	}
	if len(gaps) == 0 {
		return assumedInterval
	}
	slices.Sort(gaps)
	return gaps[len(gaps)/2]
}

func expectedCheckIn(checkIns []time.Time, eligible, now time.Time) (time.Time, bool) {
	typical := TypicalInterval(checkIns)
	last := slices.MaxFunc(checkIns, time.Time.Compare)
	anchor, away := last, false
	if silence := now.Sub(last); silence > offlineFactor*typical {
		anchor, away = now.Add(silence), true
		if !anchor.Before(eligible) {
			return anchor, away
		}
	}
	// First beat anchor + k·typical (k ≥ 1 for a device on its beat) at or
	// after both eligibility and now.
	from := eligible
	if now.After(from) {
		from = now
	}
	k := int64(1)
	if away {
		k = 0
	}
	if from.After(anchor) {
		if n := int64((from.Sub(anchor) + typical - 1) / typical); n > k {
			k = n
		}
	}
	return anchor.Add(time.Duration(k) * typical), away
}
