package server

import (
	"context"
	"fmt"
	"sort"
	"strconv"

	"hotfleet/internal/rollout"
	"hotfleet/internal/store"
)

// rings reads the ring configuration as the rollout package sees it.
func (s *Server) rings(ctx context.Context) (rollout.Rings, error) {
	srs, err := s.st.Rings(ctx)
	if err != nil {
		return nil, err
	}
	rs := make(rollout.Rings, 0, len(srs))
	for _, r := range srs {
		rs = append(rs, rollout.Ring{Name: r.Name, Share: float64(r.Percent), PinnedOnly: r.PinnedOnly,
			Policy: rollout.Policy{Deferral: r.Deferral, Deadline: r.Deadline, Grace: r.Grace}})
	}
	return rs, nil
}

// overrides reads the admin's label rules; pins are per device (ring_pin).
func (s *Server) overrides(ctx context.Context) (rollout.Overrides, error) {
	var o rollout.Overrides
	if _, err := s.st.Setting(ctx, store.SettingOverrides, &o); err != nil {
		return o, err
	}
	return o, nil
}

// placement is the ring of a device: its pin (set at enrollment by its
// token, or by an admin), else a label rule, else the hash of its id.
func placement(d store.Device, rs rollout.Rings, o rollout.Overrides) rollout.Placement {
	id := strconv.FormatInt(d.ID, 10)
	if d.RingPin != "" {
		o.Pins = map[string]string{id: d.RingPin}
	}
	return rollout.Place(id, deviceLabels(d), o, rs)
}

// deviceLabels are a device's labels as the rollout matches them: "key"
// and "key=value" for each.
func deviceLabels(d store.Device) []string {
	var ls []string
	for k, v := range d.Labels {
		ls = append(ls, k, fmt.Sprintf("%s=%s", k, v))
	}
	sort.Strings(ls)
	return ls
}
