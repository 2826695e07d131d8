package outbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

type report struct {
	N   int    `json:"n"`
	Pad string `json:"pad,omitempty"`
}

func open(t testing.TB, dir string, opts Options) *Outbox {
	t.Helper()
	o, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

func appendN(t testing.TB, o *Outbox, key string, n int) []Item {
	t.Helper()
	var out []Item
	for range n {
		it, err := o.Append("apply", key, report{N: len(out)})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, it)
	}
	return out
}

// bodies returns the N of every queued report, oldest first.
func bodies(t testing.TB, o *Outbox) []int {
	t.Helper()
	items, err := o.Peek(1 << 30)
	if err != nil {
		t.Fatal(err)
	}
	out := []int{}
	for _, it := range items {
		var r report
		if err := json.Unmarshal(it.Body, &r); err != nil {
			t.Fatalf("item %d: body %q: %v", it.Seq, it.Body, err)
		}
		out = append(out, r.N)
	}
	return out
}

// sizeOf is the size a report with this key and body takes against MaxBytes.
func sizeOf(kind, key string, body any) int64 {
	raw, _ := json.Marshal(body)
	return int64(frameHeader + 1 + len(encodeItem(Item{Kind: kind, Key: key, Body: raw, Time: time.Now()})))
}

func TestBoundAndCoalescing(t *testing.T) {
	small := sizeOf("apply", "k", report{N: 1})
	big := sizeOf("apply", "k", report{N: 1, Pad: strings.Repeat("x", 100)})
	for _, tc := range []struct {
		name     string
		opts     Options
		keys     []string
		pads     map[int]int // report index -> pad length
		wantN    []int       // the reports left, by index, oldest first
		wantDrop uint64
	}{
		{name: "under the bound nothing drops", opts: Options{MaxItems: 5},
			keys: []string{"a", "b", "c"}, wantN: []int{0, 1, 2}},
		{name: "distinct keys drop the oldest", opts: Options{MaxItems: 3},
			keys: []string{"a", "b", "c", "d", "e"}, wantN: []int{2, 3, 4}, wantDrop: 2},
		{name: "a repeated key drops before the oldest", opts: Options{MaxItems: 3},
			keys: []string{"a", "b", "a", "c"}, wantN: []int{1, 2, 3}, wantDrop: 1},
		{name: "the oldest repeated key goes, not the oldest item", opts: Options{MaxItems: 3},
			keys: []string{"a", "b", "b", "c"}, wantN: []int{0, 2, 3}, wantDrop: 1},
		{name: "the new item's key counts as the newer", opts: Options{MaxItems: 2},
			keys: []string{"a", "b", "a"}, wantN: []int{1, 2}, wantDrop: 1},
		{name: "empty keys never coalesce", opts: Options{MaxItems: 2},
			keys: []string{"", "x", ""}, wantN: []int{1, 2}, wantDrop: 1},
		{name: "one key keeps its newest states", opts: Options{MaxItems: 3},
			keys: []string{"a", "a", "a", "a", "a"}, wantN: []int{2, 3, 4}, wantDrop: 2},
		{name: "coalescing alternates keys", opts: Options{MaxItems: 4},
			keys: []string{"s1", "s2", "s1", "s2", "s1", "x"}, wantN: []int{2, 3, 4, 5}, wantDrop: 2},
		{name: "a duplicate newer than the unique oldest still goes first", opts: Options{MaxItems: 3},
			keys: []string{"u", "a", "a", "b"}, wantN: []int{0, 2, 3}, wantDrop: 1},
		{name: "bytes bound drops the oldest", opts: Options{MaxBytes: 3*small + small/2},
			keys: []string{"a", "b", "c", "d", "e"}, wantN: []int{2, 3, 4}, wantDrop: 2},
		{name: "a big report pushes out several small ones", opts: Options{MaxBytes: 2*small + big - 1},
			keys: []string{"a", "b", "c", "d"}, pads: map[int]int{3: 100}, wantN: []int{2, 3}, wantDrop: 2},
		{name: "bytes bound coalesces first", opts: Options{MaxBytes: 3*small + small/2},
			keys: []string{"a", "b", "c", "b"}, wantN: []int{0, 2, 3}, wantDrop: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			o := open(t, dir, tc.opts)
			for i, k := range tc.keys {
				if _, err := o.Append("apply", k, report{N: i, Pad: strings.Repeat("x", tc.pads[i])}); err != nil {
					t.Fatal(err)
				}
			}
			if got := bodies(t, o); !slices.Equal(got, tc.wantN) {
				t.Errorf("queued reports %v, want %v", got, tc.wantN)
			}
			if o.Len() != len(tc.wantN) || o.Dropped() != tc.wantDrop {
				t.Errorf("Len %d Dropped %d, want %d and %d", o.Len(), o.Dropped(), len(tc.wantN), tc.wantDrop)
			}
			// The drops are durable: a reopen sees the same queue and count.
			o.Close()
			o = open(t, dir, tc.opts)
			if got := bodies(t, o); !slices.Equal(got, tc.wantN) || o.Dropped() != tc.wantDrop {
				t.Errorf("after reopen: reports %v dropped %d, want %v and %d", got, o.Dropped(), tc.wantN, tc.wantDrop)
			}
		})
	}
}

func TestReopenPersistence(t *testing.T) {
	dir := t.TempDir()
	o := open(t, dir, Options{})
	items := appendN(t, o, "", 10)
	for i, it := range items {
		if it.Seq != uint64(i+1) {
			t.Fatalf("item %d has Seq %d, want %d", i, it.Seq, i+1)
		}
	}
	if err := o.Ack(4); err != nil {
		t.Fatal(err)
	}
	o.Close()

	o = open(t, dir, Options{})
	got, err := o.Peek(100)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 6 {
		t.Fatalf("after ack of 4 of 10 and reopen, %d items queued, want 6", len(got))
	}
	for i, it := range got {
		want := items[4+i]
		if it.Seq != want.Seq || it.Kind != want.Kind || it.Key != want.Key || !it.Time.Equal(want.Time) || string(it.Body) != string(want.Body) {
			t.Errorf("item %d after reopen: %+v, want %+v", i, it, want)
		}
	}
	// Acking everything and compacting must not let Seq restart.
	if err := o.Ack(10); err != nil {
		t.Fatal(err)
	}
	if err := o.compact(); err != nil {
		t.Fatal(err)
	}
	o.Close()
	o = open(t, dir, Options{})
	if o.Len() != 0 {
		t.Fatalf("%d items left after acking all", o.Len())
	}
	it, err := o.Append("crash", "", report{N: 99})
	if err != nil {
		t.Fatal(err)
	}
	if it.Seq != 11 {
		t.Errorf("first Seq after everything was acked and compacted: %d, want 11 (never reused)", it.Seq)
	}
}

func TestAck(t *testing.T) {
	o := open(t, t.TempDir(), Options{})
	appendN(t, o, "", 5)
	for _, tc := range []struct {
		upTo  uint64
		wantN []int
	}{
		{0, []int{0, 1, 2, 3, 4}},
		{2, []int{2, 3, 4}},
		{1, []int{2, 3, 4}}, // an old ack changes nothing
		{3, []int{3, 4}},
		{1000, []int{}}, // beyond the newest: everything queued goes ...
	} {
		if err := o.Ack(tc.upTo); err != nil {
			t.Fatal(err)
		}
		if got := bodies(t, o); !slices.Equal(got, tc.wantN) {
			t.Errorf("after Ack(%d): reports %v, want %v", tc.upTo, got, tc.wantN)
		}
	}
	// ... but not the reports appended after it.
	it, err := o.Append("apply", "", report{N: 7})
	if err != nil {
		t.Fatal(err)
	}
	if it.Seq != 6 || o.Len() != 1 {
		t.Errorf("append after Ack(1000): Seq %d Len %d, want 6 and 1", it.Seq, o.Len())
	}
}

func TestPeekReturnsCopies(t *testing.T) {
	o := open(t, t.TempDir(), Options{})
	appendN(t, o, "", 3)
	first, _ := o.Peek(2)
	if len(first) != 2 {
		t.Fatalf("Peek(2) returned %d items", len(first))
	}
	copy(first[0].Body, "XXXX")
	if got := bodies(t, o); !slices.Equal(got, []int{0, 1, 2}) {
		t.Errorf("changing a peeked body changed the queue: %v", got)
	}
	if none, _ := o.Peek(0); len(none) != 0 {
		t.Errorf("Peek(0) returned %d items", len(none))
	}
}

func TestNotify(t *testing.T) {
	o := open(t, t.TempDir(), Options{})
	select {
	case <-o.Notify():
		t.Fatal("Notify fired before any Append")
	default:
	}
	appendN(t, o, "", 3) // three appends, nobody listening: must not block
	select {
	case <-o.Notify():
	case <-time.After(time.Second):
		t.Fatal("Notify did not fire after Append")
	}
	select {
	case <-o.Notify():
		t.Fatal("Notify fired twice for appends made while nobody listened; capacity must be 1")
	default:
	}
}

func TestSecondOpenRefused(t *testing.T) {
	dir := t.TempDir()
	o := open(t, dir, Options{})
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "another process holds it") {
		t.Fatalf("second Open of a held outbox: %v, want an error saying another process holds it", err)
	}
	o.Close()
	o2 := open(t, dir, Options{})
	o2.Close()
}

func TestClosed(t *testing.T) {
	o := open(t, t.TempDir(), Options{})
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if err := o.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := o.Append("apply", "", 1); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close: %v, want ErrClosed", err)
	}
	if _, err := o.Peek(1); !errors.Is(err, ErrClosed) {
		t.Errorf("Peek after Close: %v, want ErrClosed", err)
	}
	if err := o.Ack(1); !errors.Is(err, ErrClosed) {
		t.Errorf("Ack after Close: %v, want ErrClosed", err)
	}
}

func TestTooLargeReportRefused(t *testing.T) {
	o := open(t, t.TempDir(), Options{MaxBytes: 200})
	appendN(t, o, "", 1)
	_, err := o.Append("apply", "", report{Pad: strings.Repeat("x", 300)})
	if err == nil || !strings.Contains(err.Error(), "more than one report may take") {
		t.Fatalf("Append of a report over MaxBytes: %v, want a refusal", err)
	}
	if got := bodies(t, o); !slices.Equal(got, []int{0}) || o.Dropped() != 0 {
		t.Errorf("a refused report changed the queue: %v, dropped %d", got, o.Dropped())
	}
	if _, err := o.Append("apply", "", func() {}); err == nil {
		t.Error("Append of a body JSON cannot encode succeeded")
	}
}

// TestLoweredBoundAtOpen checks that a bound lowered between runs is enforced
// at Open, durably and counted.
func TestLoweredBoundAtOpen(t *testing.T) {
	dir := t.TempDir()
	o := open(t, dir, Options{MaxItems: 100})
	keys := []string{"a", "b", "a", "c", "d", "e"}
	for i, k := range keys {
		if _, err := o.Append("apply", k, report{N: i}); err != nil {
			t.Fatal(err)
		}
	}
	o.Close()
	o = open(t, dir, Options{MaxItems: 3})
	want := []int{3, 4, 5} // the old "a" coalesces first, then the oldest go
	if got := bodies(t, o); !slices.Equal(got, want) || o.Dropped() != 3 {
		t.Fatalf("after reopening with MaxItems 3: %v dropped %d, want %v and 3", got, o.Dropped(), want)
	}
	o.Close()
	o = open(t, dir, Options{MaxItems: 100})
	if got := bodies(t, o); !slices.Equal(got, want) || o.Dropped() != 3 {
		t.Errorf("the drops at Open were not durable: %v dropped %d", got, o.Dropped())
	}
}

// TestCompactionKeepsLogSmall checks that acked reports do not pile up on
// disk and that compaction keeps every queued report.
func TestCompactionKeepsLogSmall(t *testing.T) {
	defer func(v int64) { compactMinBytes = v }(compactMinBytes)
	compactMinBytes = 4 << 10
	dir := t.TempDir()
	o := open(t, dir, Options{})
	pad := strings.Repeat("p", 250)
	var seqs []uint64
	for i := range 400 {
		it, err := o.Append("apply", "", report{N: i, Pad: pad})
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, it.Seq)
		if i%10 == 9 && i >= 20 {
			if err := o.Ack(seqs[i-20]); err != nil { // the sender lags twenty reports behind
				t.Fatal(err)
			}
		}
	}
	fi, err := os.Stat(filepath.Join(dir, logName))
	if err != nil {
		t.Fatal(err)
	}
	live := int64(o.Len()) * sizeOf("apply", "", report{N: 100, Pad: pad})
	t.Logf("log %d bytes for %d queued reports (%d bytes live) after 400 appends", fi.Size(), o.Len(), live)
	if fi.Size() > 2*live+compactMinBytes+1024 {
		t.Errorf("log is %d bytes for %d live bytes: compaction does not keep it under twice the live size plus %d", fi.Size(), live, compactMinBytes)
	}
	o.Close()
	o = open(t, dir, Options{})
	got := bodies(t, o)
	want := []int{}
	for n := 380; n < 400; n++ {
		want = append(want, n)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("reports after reopen %v, want %v", got, want)
	}
}

func TestLeftoverTempRemovedAtOpen(t *testing.T) {
	dir := t.TempDir()
	o := open(t, dir, Options{})
	appendN(t, o, "", 2)
	o.Close()
	stale := filepath.Join(dir, fmt.Sprintf(".%s.tmp-%d-1", logName, 1<<22+1))
	if err := os.WriteFile(stale, []byte("half a compaction"), 0o600); err != nil {
		t.Fatal(err)
	}
	o = open(t, dir, Options{})
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("leftover temp file of a crashed compaction still there after Open: %v", err)
	}
	if o.Len() != 2 {
		t.Errorf("Len %d after Open, want 2", o.Len())
	}
}

// TestConcurrentSender runs appenders and a sender that wakes on Notify, as
// the agent does, and checks that every report is delivered once, in Seq
// order.
func TestConcurrentSender(t *testing.T) {
	o := open(t, t.TempDir(), Options{})
	const appenders, each = 4, 100
	done := make(chan struct{})
	delivered := map[string]bool{}
	var lastSeq uint64
	senderErr := make(chan error, 1)
	go func() {
		defer close(senderErr)
		for {
			items, err := o.Peek(7)
			if err != nil {
				senderErr <- err
				return
			}
			for _, it := range items {
				if it.Seq <= lastSeq {
					senderErr <- fmt.Errorf("Seq %d delivered after %d", it.Seq, lastSeq)
					return
				}
				lastSeq = it.Seq
				if delivered[it.Key] {
					senderErr <- fmt.Errorf("report %s delivered twice", it.Key)
					return
				}
				delivered[it.Key] = true
			}
			if len(items) > 0 {
				if err := o.Ack(items[len(items)-1].Seq); err != nil {
					senderErr <- err
					return
				}
				continue
			}
			select {
			case <-o.Notify():
			case <-done:
				if o.Len() == 0 {
					return
				}
			}
		}
	}()
	errs := make(chan error, appenders)
	for a := range appenders {
		go func() {
			for i := range each {
				if _, err := o.Append("apply", fmt.Sprintf("%d-%d", a, i), report{N: i}); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range appenders {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(done)
	if err := <-senderErr; err != nil {
		t.Fatal(err)
	}
	if len(delivered) != appenders*each {
		t.Fatalf("%d reports delivered, want %d", len(delivered), appenders*each)
	}
}
