package outbox

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// benchBody is a report of the size the agent sends (~300 bytes as JSON).
var benchBody = report{N: 1, Pad: strings.Repeat("x", 280)}

func BenchmarkAppend(b *testing.B) {
	o := open(b, b.TempDir(), Options{})
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := o.Append("apply", "", benchBody); err != nil {
			b.Fatal(err)
		}
		if i%1000 == 999 { // stay under the bound: this measures appends, not drops
			items, _ := o.Peek(1000)
			o.Ack(items[len(items)-1].Seq)
		}
	}
}

// writeFullLog writes a log of n reports directly, without n fsyncs, with
// keys cycling over keys distinct values.
func writeFullLog(b *testing.B, dir string, n, keys int) {
	raw := []byte(fmt.Sprintf(`{"n":1,"pad":%q}`, benchBody.Pad))
	buf := appendFrame(nil, recHeader, encodeHeader(1, 0))
	for i := range n {
		it := Item{Seq: uint64(i + 1), Kind: "apply", Key: fmt.Sprintf("pid-%d", i%keys), Time: time.Now(), Body: raw}
		buf = appendFrame(buf, recItem, encodeItem(it))
	}
	if err := os.WriteFile(filepath.Join(dir, logName), buf, 0o600); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAppendFull appends to a queue at its bound of DefaultMaxItems, so
// that every Append also drops a report: the cost must stay that of one
// small write, not a rewrite of the queue.
func BenchmarkAppendFull(b *testing.B) {
	for _, keys := range []int{DefaultMaxItems, 100} {
		b.Run(fmt.Sprintf("keys=%d", keys), func(b *testing.B) {
			dir := b.TempDir()
			writeFullLog(b, dir, DefaultMaxItems, keys)
			o := open(b, dir, Options{})
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if _, err := o.Append("apply", fmt.Sprintf("pid-%d", i%keys), benchBody); err != nil {
					b.Fatal(err)
				}
			}
			if o.Len() != DefaultMaxItems {
				b.Fatalf("Len %d, want the bound %d", o.Len(), DefaultMaxItems)
			}
		})
	}
}

// BenchmarkPeekAck measures a sender's round: Peek a batch of 100 and Ack it.
func BenchmarkPeekAck(b *testing.B) {
	dir := b.TempDir()
	writeFullLog(b, dir, DefaultMaxItems, DefaultMaxItems)
	o := open(b, dir, Options{})
	b.ReportAllocs()
	for b.Loop() {
		if o.Len() == 0 {
			b.StopTimer()
			o.Close()
			writeFullLog(b, dir, DefaultMaxItems, DefaultMaxItems)
			var err error
			if o, err = Open(dir, Options{}); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		items, err := o.Peek(100)
		if err != nil {
			b.Fatal(err)
		}
		if err := o.Ack(items[len(items)-1].Seq); err != nil {
			b.Fatal(err)
		}
	}
	o.Close()
}

// BenchmarkOpen measures the start of an agent with a full queue: replaying
// DefaultMaxItems reports.
func BenchmarkOpen(b *testing.B) {
	dir := b.TempDir()
	writeFullLog(b, dir, DefaultMaxItems, DefaultMaxItems)
	fi, _ := os.Stat(filepath.Join(dir, logName))
	b.SetBytes(fi.Size())
	for b.Loop() {
		o, err := Open(dir, Options{})
		if err != nil {
			b.Fatal(err)
		}
		o.Close()
	}
}
