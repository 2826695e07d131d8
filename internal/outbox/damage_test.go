package outbox

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// logWith builds a log by appending n reports (and acking the first acked)
// and returns its bytes and the offset where each record ends.
func logWith(t testing.TB, n int, acked uint64) ([]byte, []int) {
	t.Helper()
	dir := t.TempDir()
	o := open(t, dir, Options{})
	appendN(t, o, "", n)
	if acked > 0 {
		if err := o.Ack(acked); err != nil {
			t.Fatal(err)
		}
	}
	o.Close()
	data, err := os.ReadFile(filepath.Join(dir, logName))
	if err != nil {
		t.Fatal(err)
	}
	var ends []int
	for off := 0; off < len(data); {
		_, _, size, ok := parseFrame(data[off:])
		if !ok {
			t.Fatalf("the log just written has a bad record at offset %d", off)
		}
		off += size
		ends = append(ends, off)
	}
	return data, ends
}

func openBytes(t testing.TB, data []byte, opts Options) (*Outbox, string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, logName), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return open(t, dir, opts), dir
}

// TestTornTail cuts the log at every byte of its last records, as a power
// loss during a write can, and checks that Open keeps exactly the whole
// records before the cut, says how much it cut, and keeps working.
func TestTornTail(t *testing.T) {
	data, ends := logWith(t, 4, 0) // header + 4 items
	for cut := ends[1]; cut <= len(data); cut++ {
		o, dir := openBytes(t, data[:cut], Options{})
		whole := 0
		for _, e := range ends[1:] {
			if e <= cut {
				whole++
			}
		}
		want := []int{0, 1, 2, 3}[:whole]
		if got := bodies(t, o); !slices.Equal(got, want) {
			t.Fatalf("cut at %d of %d: reports %v, want %v", cut, len(data), got, want)
		}
		torn := int64(cut - ends[whole])
		if r := o.Recovered(); r.DiscardedBytes != torn || (torn > 0) != (r.DiscardedRegions == 1) {
			t.Fatalf("cut at %d: Recovered %+v, want %d bytes in one region", cut, r, torn)
		}
		it, err := o.Append("apply", "", report{N: 9})
		if err != nil {
			t.Fatalf("cut at %d: Append after recovery: %v", cut, err)
		}
		// A torn record may have been item whole+1 with a returned Append:
		// its Seq must not come again.
		if minSeq := uint64(whole + 1); it.Seq < minSeq || (torn > 0 && it.Seq == minSeq) {
			t.Fatalf("cut at %d: Seq %d after %d whole items and %d torn bytes", cut, it.Seq, whole, torn)
		}
		o.Close()
		o2 := open(t, dir, Options{})
		if got := bodies(t, o2); !slices.Equal(got, append(want, 9)) || o2.Recovered() != (Recovery{}) {
			t.Fatalf("cut at %d: after the clean rewrite and reopen: %v, %+v", cut, got, o2.Recovered())
		}
		o2.Close()
	}
}

// TestDamageInTheMiddle flips bytes inside one record and checks that only
// that record is lost: the records after it are found again.
func TestDamageInTheMiddle(t *testing.T) {
	data, ends := logWith(t, 5, 0)
	for _, tc := range []struct {
		name  string
		at    int // offset of the damaged byte
		wantN []int
	}{
		{"length of item 2", ends[1], []int{0, 2, 3, 4}},
		{"checksum of item 3", ends[2] + 5, []int{0, 1, 3, 4}},
		{"body of item 5", ends[5] - 3, []int{0, 1, 2, 3}},
		{"header", 10, []int{0, 1, 2, 3, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := bytes.Clone(data)
			bad[tc.at] ^= 0x55
			o, _ := openBytes(t, bad, Options{})
			if got := bodies(t, o); !slices.Equal(got, tc.wantN) {
				t.Errorf("reports %v, want %v", got, tc.wantN)
			}
			if r := o.Recovered(); r.DiscardedRegions != 1 || r.DiscardedBytes == 0 {
				t.Errorf("Recovered %+v, want one damaged region", r)
			}
			it, err := o.Append("apply", "", report{N: 9})
			if err != nil || it.Seq <= 5 {
				t.Errorf("Append after recovery: Seq %d, %v; want a Seq above the 5 ever assigned", it.Seq, err)
			}
		})
	}
}

func TestNewerFormatRefused(t *testing.T) {
	log := appendFrame(nil, recHeader, append([]byte{formatVersion + 1}, make([]byte, 16)...))
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, logName), log, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, Options{})
	if !errors.Is(err, ErrNewerFormat) {
		t.Fatalf("Open of a newer format: %v, want ErrNewerFormat", err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, logName)); !bytes.Equal(got, log) {
		t.Error("Open changed a log of a newer format")
	}
}

// FuzzOpen feeds damaged logs to Open: it must never panic, must open
// anything but a newer format, and the queue must then keep working and
// survive a reopen unchanged.
func FuzzOpen(f *testing.F) {
	valid, ends := logWith(f, 6, 2)
	f.Add(valid)
	f.Add(valid[:len(valid)-7])
	f.Add(valid[ends[0]:])
	f.Add(append(bytes.Clone(valid), valid...))
	f.Add([]byte{})
	f.Add(make([]byte, 4096))
	drop := appendFrame(bytes.Clone(valid), recDrop, encodeDrop(7, []uint64{5, 6, 99}))
	f.Add(drop)
	f.Add(appendFrame(bytes.Clone(valid), recHeader, encodeHeader(1<<63, 1<<63)))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, logName), data, 0o600); err != nil {
			t.Fatal(err)
		}
		opts := Options{MaxItems: 8}
		o, err := Open(dir, opts)
		if errors.Is(err, ErrNewerFormat) {
			return
		}
		if err != nil {
			t.Fatalf("Open of a damaged log: %v", err)
		}
		defer o.Close()
		before, err := o.Peek(100)
		if err != nil {
			t.Fatal(err)
		}
		if len(before) != o.Len() || len(before) > opts.MaxItems {
			t.Fatalf("Peek returned %d items, Len %d, bound %d", len(before), o.Len(), opts.MaxItems)
		}
		for i := 1; i < len(before); i++ {
			if before[i].Seq <= before[i-1].Seq {
				t.Fatalf("Seqs out of order: %d after %d", before[i].Seq, before[i-1].Seq)
			}
		}
		it, err := o.Append("apply", "k", report{N: 1})
		if err != nil {
			t.Fatalf("Append after Open: %v", err)
		}
		if len(before) > 0 && it.Seq <= before[len(before)-1].Seq {
			t.Fatalf("Append got Seq %d, not above the queued %d", it.Seq, before[len(before)-1].Seq)
		}
		dropped := o.Dropped()
		want, _ := o.Peek(100)
		o.Close()
		o2, err := Open(dir, opts)
		if err != nil {
			t.Fatalf("reopen after recovery: %v", err)
		}
		defer o2.Close()
		got, _ := o2.Peek(100)
		if len(got) != len(want) || o2.Dropped() != dropped || o2.Recovered() != (Recovery{}) {
			t.Fatalf("reopen: %d items dropped %d recovered %+v; want %d items dropped %d, nothing to recover", len(got), o2.Dropped(), o2.Recovered(), len(want), dropped)
		}
		for i := range got {
			if got[i].Seq != want[i].Seq || !bytes.Equal(got[i].Body, want[i].Body) {
				t.Fatalf("reopen: item %d is %d %s, want %d %s", i, got[i].Seq, got[i].Body, want[i].Seq, want[i].Body)
			}
		}
	})
}
