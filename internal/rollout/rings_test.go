package rollout

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden .err files in testdata/bad")

func TestDefaultRings(t *testing.T) {
	rs := DefaultRings()
	if err := rs.Validate(); err != nil {
		t.Fatalf("DefaultRings does not validate: %v", err)
	}
	want := []struct {
		name                      string
		share                     float64
		pinned                    bool
		deferral, deadline, grace int
	}{
		{"Test", 0, true, 0, 0, 0},
		{"First", 1, false, 1, 2, 2},
		{"Fast", 9, false, 6, 2, 2},
		{"Broad", 90, false, 9, 5, 2},
		{"Last", 0, true, 11, 5, 2},
	}
	if len(rs) != len(want) {
		t.Fatalf("DefaultRings has %d rings, want %d", len(rs), len(want))
	}
	for i, w := range want {
		r := rs[i]
		got := []time.Duration{r.Policy.Deferral, r.Policy.Deadline, r.Policy.Grace}
		exp := []time.Duration{time.Duration(w.deferral) * Day, time.Duration(w.deadline) * Day, time.Duration(w.grace) * Day}
		if r.Name != w.name || r.Share != w.share || r.PinnedOnly != w.pinned || got[0] != exp[0] || got[1] != exp[1] || got[2] != exp[2] {
			t.Errorf("ring %d = %+v, want %+v", i, r, w)
		}
	}
}

func TestRingsRoundTrip(t *testing.T) {
	data, err := EncodeRings(DefaultRings())
	if err != nil {
		t.Fatal(err)
	}
	rs, err := DecodeRings(data)
	if err != nil {
		t.Fatalf("decode encoded default rings: %v\n%s", err, data)
	}
	for i, r := range DefaultRings() {
		if rs[i] != r {
			t.Errorf("ring %d after round trip = %+v, want %+v", i, rs[i], r)
		}
	}
	half, err := DecodeRings([]byte(`{"rings":[{"name":"All","share":100,"deferral_days":0.5,"deadline_days":1,"grace_days":0}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if half[0].Policy.Deferral != 12*time.Hour {
		t.Errorf("deferral_days 0.5 = %s, want 12h", half[0].Policy.Deferral)
	}
}

// TestBadRings decodes every testdata/bad/*.json and compares the error with
// the golden .err next to it: each must be refused, naming ring and field.
func TestBadRings(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad inputs in testdata/bad: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			in, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			rs, err := DecodeRings(in)
			if err == nil {
				t.Fatalf("accepted: %+v", rs)
			}
			golden := strings.TrimSuffix(f, ".json") + ".err"
			if *update {
				if err := os.WriteFile(golden, []byte(err.Error()+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, rerr := os.ReadFile(golden)
			if rerr != nil {
				t.Fatalf("%v (run go test -update to create it)", rerr)
			}
			if got := err.Error() + "\n"; got != string(want) {
				t.Errorf("error:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestValidateNamesRingAndField(t *testing.T) {
	rs := DefaultRings()
	rs[2].Policy.Deadline = -Day
	rs[3].Name = "First"
	err := rs.Validate()
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("Validate = %v, want a *ConfigError", err)
	}
	var fields []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		c := e.(*ConfigError)
		fields = append(fields, c.Ring+"."+c.Field)
	}
	if got := strings.Join(fields, ","); got != "Fast.deadline,First.name" {
		t.Errorf("problems reported on %s, want Fast.deadline,First.name", got)
	}
	many := make(Rings, maxRings+1)
	for i := range many {
		many[i] = Ring{Name: string(rune('a' + i)), PinnedOnly: true}
	}
	if err := many.Validate(); err == nil || !strings.Contains(err.Error(), "at most 16") {
		t.Errorf("Validate of %d rings = %v, want a limit error", len(many), err)
	}
}
