package rollout

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

const (
	// maxRings bounds a rings config: rings are stages an admin watches one
	// by one, and dozens of them are a mistake rather than a plan.
	maxRings = 16
	// maxRingName bounds a ring name: it is shown in tables and CLI output.
	maxRingName = 64
	// maxPolicy bounds each of deferral, deadline and grace: a security fix
	// held back longer than a quarter is a forgotten setting, not a policy.
	maxPolicy = 90 * Day
	// shareTolerance absorbs float rounding when shares such as 33.3 + 33.3
	// + 33.4 are summed.
	shareTolerance = 1e-6
)

// Day is the unit policies are written in.
const Day = 24 * time.Hour

// Policy is when a ring gets a release, relative to its publication.
type Policy struct {
	// Deferral is how long after publication the release becomes eligible
	// in the ring.
	Deferral time.Duration
	// Deadline is how long after eligibility the release must be applied;
	// for a baseline release that means the restart is due.
	Deadline time.Duration
	// Grace is how long after the deadline a user may still postpone a
	// restart before it is forced.
	Grace time.Duration
}

// Ring is one rollout stage.
type Ring struct {
	Name string
	// Share is the percentage of the non-pinned fleet placed here by hash.
	// The shares of all rings that are not PinnedOnly sum to 100.
	Share float64
	// PinnedOnly rings take no share: only pinned devices and label matches
	// land in them.
	PinnedOnly bool
	Policy     Policy
}

// Rings is an ordered rings config: a release reaches rings in this order.
type Rings []Ring

// DefaultRings returns Windows Autopatch's rings. Autopatch leaves the Last
// ring to the admin; ours defers 11 days, two days after Broad so that Broad's
// first results are in before the devices an admin wants patched last (the
// critical servers) are touched, with Broad's deadline and grace.
func DefaultRings() Rings {
	return Rings{
		{Name: "Test", PinnedOnly: true},
		{Name: "First", Share: 1, Policy: Policy{Deferral: 1 * Day, Deadline: 2 * Day, Grace: 2 * Day}},
		{Name: "Fast", Share: 9, Policy: Policy{Deferral: 6 * Day, Deadline: 2 * Day, Grace: 2 * Day}},
		{Name: "Broad", Share: 90, Policy: Policy{Deferral: 9 * Day, Deadline: 5 * Day, Grace: 2 * Day}},
		{Name: "Last", PinnedOnly: true, Policy: Policy{Deferral: 11 * Day, Deadline: 5 * Day, Grace: 2 * Day}},
	}
}

// Index returns the position of the ring named name (case-insensitive, as
// names are unique without regard to case), or -1.
func (rs Rings) Index(name string) int {
	for i, r := range rs {
		if strings.EqualFold(r.Name, name) {
			return i
		}
	}
	return -1
}

// ConfigError is one problem in a rings config. Ring is empty when the
// problem is with the config as a whole (no rings, shares not summing to 100).
type ConfigError struct {
	Ring   string
	Index  int
	Field  string
	Reason string
}

func (e *ConfigError) Error() string {
	if e.Ring == "" && e.Field == "" {
		return "rings: " + e.Reason
	}
	if e.Ring == "" && e.Index < 0 {
		return fmt.Sprintf("rings: %s: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("ring %d %q: %s: %s", e.Index+1, e.Ring, e.Field, e.Reason)
}

// Validate reports every problem in the config at once, each a *ConfigError
// naming the ring and field, so an admin fixes them in one round.
func (rs Rings) Validate() error {
	if len(rs) == 0 {
		return &ConfigError{Index: -1, Reason: "no rings; define at least one ring with a share of 100"}
	}
	if len(rs) > maxRings {
		return &ConfigError{Index: -1, Reason: fmt.Sprintf("%d rings, at most %d are allowed; merge rings", len(rs), maxRings)}
	}
	var errs []error
	bad := func(i int, field, format string, args ...any) {
		errs = append(errs, &ConfigError{Ring: rs[i].Name, Index: i, Field: field, Reason: fmt.Sprintf(format, args...)})
	}
	seen := map[string]int{}
	sum, hashed := 0.0, 0
	for i, r := range rs {
		switch {
		case r.Name == "":
			bad(i, "name", "empty; give every ring a name")
		case len(r.Name) > maxRingName:
			bad(i, "name", "%d bytes, at most %d", len(r.Name), maxRingName)
		case strings.TrimSpace(r.Name) != r.Name:
			bad(i, "name", "leading or trailing space")
		default:
			if j, dup := seen[strings.ToLower(r.Name)]; dup {
				bad(i, "name", "same as ring %d %q (names are compared without case); rename one", j+1, rs[j].Name)
			} else {
				seen[strings.ToLower(r.Name)] = i
			}
		}
		switch {
		case math.IsNaN(r.Share) || math.IsInf(r.Share, 0):
			bad(i, "share", "not a number")
		case r.PinnedOnly && r.Share != 0:
			bad(i, "share", "%g on a pinned-only ring; set it to 0 or drop pinned_only", r.Share)
		case r.PinnedOnly:
		case r.Share <= 0 || r.Share > 100:
			bad(i, "share", "%g, must be above 0 and at most 100 (or make the ring pinned-only)", r.Share)
		default:
			sum += r.Share
			hashed++
		}
		for _, d := range []struct {
			field string
			v     time.Duration
		}{{"deferral", r.Policy.Deferral}, {"deadline", r.Policy.Deadline}, {"grace", r.Policy.Grace}} {
			switch {
			case d.v < 0:
				bad(i, d.field, "negative (%s)", days(d.v))
			case d.v > maxPolicy:
				bad(i, d.field, "%s, at most %s", days(d.v), days(maxPolicy))
			}
		}
	}
	if len(errs) == 0 {
		if hashed == 0 {
			errs = append(errs, &ConfigError{Index: -1, Field: "share", Reason: "every ring is pinned-only; give at least one ring a share so unpinned devices have a ring"})
		} else if math.Abs(sum-100) > shareTolerance {
			errs = append(errs, &ConfigError{Index: -1, Field: "share", Reason: fmt.Sprintf("shares of the hash-placed rings sum to %g, must sum to 100", sum)})
		}
	}
	return errors.Join(errs...)
}

func days(d time.Duration) string {
	return fmt.Sprintf("%g days", float64(d)/float64(Day))
}

// ringJSON is a ring as admins write it: durations in (possibly fractional)
// days.
type ringJSON struct {
	Name         string  `json:"name"`
	Share        float64 `json:"share,omitempty"`
	PinnedOnly   bool    `json:"pinned_only,omitempty"`
	DeferralDays float64 `json:"deferral_days"`
	DeadlineDays float64 `json:"deadline_days"`
	GraceDays    float64 `json:"grace_days"`
}

type ringsJSON struct {
	Rings []ringJSON `json:"rings"`
}

func fromDays(d float64) time.Duration {
	// Beyond a million days the conversion would overflow; any such value
	// is out of range, and Validate reports it with its sign.
	if d > 1e6 {
		return maxPolicy + Day
	}
	if d < -1e6 {
		return -Day
	}
	return time.Duration(math.Round(d * float64(Day)))
}

// DecodeRings reads a rings config ({"rings": [{"name": ..., "share": ...,
// "pinned_only": ..., "deferral_days": ..., "deadline_days": ...,
// "grace_days": ...}]}) strictly, unknown fields being typos, and validates it.
func DecodeRings(data []byte) (Rings, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var in ringsJSON
	if err := dec.Decode(&in); err != nil {
		return nil, fmt.Errorf("decode rings config: %w; see DefaultRings for the shape", err)
	}
	if dec.More() {
		return nil, errors.New("decode rings config: data after the config object; send one object")
	}
	rs := make(Rings, len(in.Rings))
	for i, r := range in.Rings {
		rs[i] = Ring{Name: r.Name, Share: r.Share, PinnedOnly: r.PinnedOnly, Policy: Policy{
			Deferral: fromDays(r.DeferralDays), Deadline: fromDays(r.DeadlineDays), Grace: fromDays(r.GraceDays),
		}}
	}
	if err := rs.Validate(); err != nil {
		return nil, err
	}
	return rs, nil
}

// EncodeRings writes rs in the form DecodeRings reads.
func EncodeRings(rs Rings) ([]byte, error) {
	out := ringsJSON{Rings: make([]ringJSON, len(rs))}
	for i, r := range rs {
		out.Rings[i] = ringJSON{Name: r.Name, Share: r.Share, PinnedOnly: r.PinnedOnly,
			DeferralDays: float64(r.Policy.Deferral) / float64(Day),
			DeadlineDays: float64(r.Policy.Deadline) / float64(Day),
			GraceDays:    float64(r.Policy.Grace) / float64(Day)}
	}
	return json.MarshalIndent(out, "", "  ")
}

func (rs Rings) names() string {
	names := make([]string, len(rs))
	for i, r := range rs {
		names[i] = r.Name
	}
	return strings.Join(names, ", ")
}
