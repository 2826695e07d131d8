package rollout

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
)

// hashDomain separates the ring hash from any other hash of a device id, so
// that reusing the id elsewhere cannot correlate with ring placement.
const hashDomain = "hotfleet ring placement v1\x00"

// LabelRule places every device carrying Label in Ring.
type LabelRule struct {
	Label string
	Ring  string
}

// Overrides are the admin's exceptions to hash placement.
type Overrides struct {
	// Pins maps a device id to a ring name; a pin wins over everything.
	Pins map[string]string
	// Labels are tried in order; the first rule whose label the device
	// carries wins.
	Labels []LabelRule
}

// Validate checks that every pin and label rule names a ring in rs, so that
// an admin learns of a typo when saving it rather than by a device landing
// in a hash-placed ring.
func (o Overrides) Validate(rs Rings) error {
	for _, dev := range slices.Sorted(maps.Keys(o.Pins)) {
		if ring := o.Pins[dev]; rs.Index(ring) < 0 {
			return fmt.Errorf("ring overrides: device %s is pinned to ring %q, which does not exist; pin it to one of %s", dev, ring, rs.names())
		}
	}
	for i, l := range o.Labels {
		if l.Label == "" {
			return fmt.Errorf("ring overrides: label rule %d has an empty label; give the label it matches", i+1)
		}
		if rs.Index(l.Ring) < 0 {
			return fmt.Errorf("ring overrides: label rule %d (%s) names ring %q, which does not exist; use one of %s", i+1, l.Label, l.Ring, rs.names())
		}
	}
	return nil
}

// PlacedBy says why a device is in its ring, for the admin asking.
type PlacedBy string

const (
	ByPin   PlacedBy = "pin"
	ByLabel PlacedBy = "label"
	ByHash  PlacedBy = "hash"
)

// Placement is the ring a device is in and why.
type Placement struct {
	Ring  string
	Index int // position in the rings config
	By    PlacedBy
	// Label is the label that matched when By is ByLabel.
	Label string
}

// Position maps a device id to [0, 1) by SHA-256. It depends on nothing but
// the id, so a device keeps its position whoever else joins or leaves, and it
// is uniform, so shares of the fleet come out as configured.
func Position(deviceID string) float64 {
	h := sha256.New()
	h.Write([]byte(hashDomain))
	h.Write([]byte(deviceID))
	var sum [sha256.Size]byte
	// The top 53 bits fill a float64 mantissa exactly: uniform, and never 1.
	return float64(binary.BigEndian.Uint64(h.Sum(sum[:0]))>>11) / (1 << 53)
}

// Place returns the ring of a device: its pin, else the first label rule it
// matches, else the hash-placed ring whose band of cumulative shares holds
// Position(deviceID). Bands are laid out in ring order, so changing one
// share moves only the devices between the old and the new band edge.
// Pins and rules naming a missing ring are skipped (Overrides.Validate
// rejects them); rs must be valid.
func Place(deviceID string, labels []string, o Overrides, rs Rings) Placement {
	if name, ok := o.Pins[deviceID]; ok {
		if i := rs.Index(name); i >= 0 {
			return Placement{Ring: rs[i].Name, Index: i, By: ByPin}
		}
	}
	for _, rule := range o.Labels {
		for _, l := range labels {
			if l != rule.Label {
				continue
			}
			if i := rs.Index(rule.Ring); i >= 0 {
				return Placement{Ring: rs[i].Name, Index: i, By: ByLabel, Label: l}
			}
		}
	}
	pos := Position(deviceID) * 100
	cum, last := 0.0, -1
	for i, r := range rs {
		if r.PinnedOnly {
			continue
		}
		last = i
		cum += r.Share
		if pos < cum {
			return Placement{Ring: r.Name, Index: i, By: ByHash}
		}
	}
	// Rounding left pos above the summed shares: it belongs to the last band.
	if last < 0 {
		return Placement{Index: -1, By: ByHash}
	}
	return Placement{Ring: rs[last].Name, Index: last, By: ByHash}
}
