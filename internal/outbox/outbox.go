// Package outbox is the agent's durable queue of reports that the server has
// not yet acknowledged: a FIFO with at-least-once delivery that survives kill -9
// and power loss at any instant, bounded in items and bytes, so that an agent
// cut off from the server for days keeps its newest reports without filling
// the disk.
//
// On disk the queue is one append-only log (queue.log) of checksummed records:
// items, acks and drops. An Append writes one record and fsyncs, and never
// rewrites the queue; once the dead records outweigh the live ones the log is
// compacted into a fresh file that replaces it by rename. Opening replays the
// log, cuts a torn tail and skips damaged stretches (counted in Recovered).
//
// Trust: the directory is private to the agent (root-owned, 0700); the log
// is parsed defensively against damage (bad disks, crashes), not against an
// attacker who can write it. One process at a time owns the directory (a
// lock file enforces it).
package outbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"hotfleet/internal/atomicfile"
)

// Item is one queued report.
type Item struct {
	Seq  uint64 // assigned by Append, strictly increasing across restarts, never reused
	Kind string // e.g. "apply", "crash", "readiness"
	// Key coalesces: when the queue is over its bound, an older item with the
	// same Key is dropped first (only the newest state matters). An empty Key
	// never coalesces.
	Key  string
	Time time.Time // when Append was called, UTC, nanosecond precision
	Body json.RawMessage
}

const (
	// DefaultMaxItems is about a week of one report a minute (10080), so an
	// agent offline for a week loses nothing but coalesced states.
	DefaultMaxItems = 10000
	// DefaultMaxBytes lets the default count of items average 1.6 KiB, several
	// times a typical report, while the queue (held in memory too) stays small
	// next to the agent.
	DefaultMaxBytes = 16 << 20
)

// compactMinBytes is how many dead bytes the log carries before compaction
// is considered: replaying a megabyte at start is cheap, rewriting the queue
// after every ack is not. A variable so tests can compact often.
var compactMinBytes int64 = 1 << 20

// failpoint is called with a step's name between the steps of writes and
// compaction; crash tests set it to kill the process at that step.
var failpoint = func(string) {}

const (
	logName  = "queue.log"
	lockName = "lock"
)

// Options bound the queue. Zero fields take the defaults.
type Options struct {
	MaxItems int   // default DefaultMaxItems
	MaxBytes int64 // bytes of queued items as stored (about their size plus 30); default DefaultMaxBytes. The log may reach about twice this before compaction.
	Log      *slog.Logger
}

// Recovery says what Open had to discard from a damaged log.
type Recovery struct {
	DiscardedBytes   int64 // bytes that did not hold whole, checksummed, consistent records
	DiscardedRegions int   // damaged stretches; a torn tail is one
}

// ErrClosed is returned by every method after Close.
var ErrClosed = errors.New("outbox is closed")

// ErrNewerFormat means the log was written by a newer hotfleet.
var ErrNewerFormat = errors.New("outbox log has a newer format")

// Outbox is a durable FIFO of reports. It is safe for concurrent use.
type Outbox struct {
	mu       sync.Mutex
	dir      string
	opts     Options
	log      *slog.Logger
	f        *os.File // the log, opened for appending
	lock     *os.File
	size     int64 // bytes in f
	q        queue
	nextSeq  uint64
	dropped  uint64
	recovery Recovery
	broken   error // set when the log's state on disk is unknown; only a reopen helps
	closed   bool
	notify   chan struct{}
}

// Open opens the outbox in dir, creating it (0700) when missing, replays its
// log, and enforces the bound of opts (which may have shrunk since the last
// run). A damaged log is not an error: what could not be read is discarded,
// logged, counted in Recovered, and the log rewritten clean.
func Open(dir string, opts Options) (*Outbox, error) {
	if opts.MaxItems == 0 {
		opts.MaxItems = DefaultMaxItems
	}
	if opts.MaxBytes == 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.MaxItems < 0 || opts.MaxBytes < 0 {
		return nil, fmt.Errorf("open outbox %s: MaxItems %d and MaxBytes %d must not be negative (zero takes the default)", dir, opts.MaxItems, opts.MaxBytes)
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open outbox: create directory %s: %w", dir, err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open outbox %s: open lock file: %w", dir, err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("open outbox %s: another process holds it (is another hotfleet agent running?); stop it first: %w", dir, err)
		}
		return nil, fmt.Errorf("open outbox %s: lock: %w", dir, err)
	}
	o := &Outbox{dir: dir, opts: opts, log: opts.Log, lock: lock, notify: make(chan struct{}, 1)}
	if err := o.load(); err != nil {
		o.closeFiles()
		return nil, err
	}
	return o, nil
}

func (o *Outbox) logPath() string { return filepath.Join(o.dir, logName) }

func (o *Outbox) load() error {
	// We hold the lock, so every temp file is a crashed compaction's.
	atomicfile.RemoveLeftovers(o.dir, logName)
	data, err := os.ReadFile(o.logPath())
	switch {
	case errors.Is(err, os.ErrNotExist):
		o.nextSeq = 1
		if err := o.compact(); err != nil {
			return fmt.Errorf("open outbox %s: create the log: %w", o.dir, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("open outbox %s: read the log: %w", o.dir, err)
	}
	r, err := replay(data)
	if err != nil {
		return fmt.Errorf("open outbox %s: %w", o.dir, err)
	}
	o.q, o.nextSeq, o.dropped, o.recovery = r.q, r.nextSeq, r.dropped, r.recovery
	if r.recovery.DiscardedBytes > 0 {
		o.log.Warn("outbox log was damaged; discarded what could not be read and rewrote it",
			"dir", o.dir, "discarded_bytes", r.recovery.DiscardedBytes, "regions", r.recovery.DiscardedRegions, "kept_items", o.q.live)
		if err := o.compact(); err != nil {
			return fmt.Errorf("open outbox %s: rewrite the damaged log: %w", o.dir, err)
		}
	} else {
		f, err := os.OpenFile(o.logPath(), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return fmt.Errorf("open outbox %s: open the log for appending: %w", o.dir, err)
		}
		o.f, o.size = f, int64(len(data))
	}
	if v := o.q.victims(o.opts.MaxItems, o.opts.MaxBytes, nil); len(v) > 0 {
		o.log.Warn("outbox holds more than its bound; dropping the oldest reports", "dir", o.dir, "dropping", len(v),
			"items", o.q.live, "max_items", o.opts.MaxItems, "bytes", o.q.bytes, "max_bytes", o.opts.MaxBytes)
		if err := o.write(o.dropRecords(nil, v), "open"); err != nil {
			return fmt.Errorf("open outbox %s: %w", o.dir, err)
		}
		o.applyDrops(v)
	}
	o.maybeCompact()
	return nil
}

func (o *Outbox) usable() error {
	if o.closed {
		return ErrClosed
	}
	return o.broken
}

// Append queues a report; it is durable when Append returns. body is
// marshalled to JSON. When the queue goes over its bound, older reports are
// dropped (see Item.Key) and counted in Dropped.
func (o *Outbox) Append(kind, key string, body any) (Item, error) {
	raw, err := json.Marshal(body)
	if err != nil {
		return Item{}, fmt.Errorf("queue %s report %q: encode body %T as JSON: %w", kind, key, body, err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.usable(); err != nil {
		return Item{}, fmt.Errorf("queue %s report %q: %w", kind, key, err)
	}
	it := Item{Seq: o.nextSeq, Kind: kind, Key: key, Time: time.Unix(0, time.Now().UnixNano()).UTC(), Body: raw}
	payload := encodeItem(it)
	size := int64(frameHeader + 1 + len(payload))
	if len(payload)+1 > maxItemBytes || size > o.opts.MaxBytes {
		return Item{}, fmt.Errorf("queue %s report %q: %d bytes is more than one report may take (%d, and MaxBytes %d); the caller must send less", kind, key, size, min(maxItemBytes, o.opts.MaxBytes), o.opts.MaxBytes)
	}
	buf := appendFrame(nil, recItem, payload)
	victims := o.q.victims(o.opts.MaxItems, o.opts.MaxBytes, &entry{Item: it, size: size})
	buf = o.dropRecords(buf, victims)
	if err := o.write(buf, "append"); err != nil {
		return Item{}, fmt.Errorf("queue %s report %q in %s: %w", kind, key, o.dir, err)
	}
	o.nextSeq++
	o.q.push(it, size)
	if len(victims) > 0 {
		o.applyDrops(victims)
		o.log.Debug("outbox over its bound; dropped older reports", "dropped", len(victims), "dropped_total", o.dropped)
	}
	o.maybeCompact()
	select {
	case o.notify <- struct{}{}:
	default:
	}
	it.Body = append(json.RawMessage(nil), raw...)
	return it, nil
}

// dropRecords appends the drop records for victims to buf.
func (o *Outbox) dropRecords(buf []byte, victims []uint64) []byte {
	total := o.dropped
	for len(victims) > 0 {
		chunk := victims[:min(len(victims), maxDropSeqs)]
		victims = victims[len(chunk):]
		total += uint64(len(chunk))
		buf = appendFrame(buf, recDrop, encodeDrop(total, chunk))
	}
	return buf
}

func (o *Outbox) applyDrops(victims []uint64) {
	for _, s := range victims {
		if o.q.remove(s) {
			o.dropped++
		}
	}
}

// write appends records to the log and fsyncs it. A failed write is cut off
// again so the log ends on a record; a failed fsync leaves the log's content
// unknown (the kernel may have dropped the dirty pages), so the outbox stops
// until it is reopened and replays what really is on disk.
func (o *Outbox) write(buf []byte, step string) error {
	n, err := o.f.Write(buf)
	if err != nil {
		if terr := o.f.Truncate(o.size); terr != nil {
			o.broken = fmt.Errorf("the log %s may end in a partial record (write: %v; cut it back: %v); reopen the outbox", o.logPath(), err, terr)
		}
		return fmt.Errorf("write %d bytes to %s: %w (is the disk full?)", len(buf), o.logPath(), err)
	}
	failpoint(step + ":written")
	if err := o.f.Sync(); err != nil {
		o.broken = fmt.Errorf("fsync of %s failed earlier (%v); reopen the outbox to learn what is stored", o.logPath(), err)
		return fmt.Errorf("fsync %s: %w; the last write may or may not be stored", o.logPath(), err)
	}
	o.size += int64(n)
	failpoint(step + ":synced")
	return nil
}

// Peek returns up to n queued items, oldest first. The items stay queued
// until acknowledged.
func (o *Outbox) Peek(n int) ([]Item, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.usable(); err != nil {
		return nil, fmt.Errorf("peek at outbox %s: %w", o.dir, err)
	}
	return o.q.peek(n), nil
}

// Ack drops every item with Seq <= upTo, durably: the server has them.
func (o *Outbox) Ack(upTo uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := o.usable(); err != nil {
		return fmt.Errorf("acknowledge reports up to %d in outbox %s: %w", upTo, o.dir, err)
	}
	// Seqs not yet assigned cannot have been delivered; an ack for them is
	// a caller bug that must not swallow future reports.
	upTo = min(upTo, o.nextSeq-1)
	if first := o.q.oldest(); first == 0 || first > upTo {
		return nil
	}
	if err := o.write(appendFrame(nil, recAck, encodeU64(upTo)), "ack"); err != nil {
		return fmt.Errorf("acknowledge reports up to %d in outbox %s: %w", upTo, o.dir, err)
	}
	o.q.ackUpTo(upTo)
	o.maybeCompact()
	return nil
}

// Len is the number of queued items.
func (o *Outbox) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.q.live
}

// Dropped is how many items the bound has dropped since the outbox was
// created; it survives restarts, and the agent reports it.
func (o *Outbox) Dropped() uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.dropped
}

// Recovered says what Open discarded from a damaged log.
func (o *Outbox) Recovered() Recovery {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.recovery
}

// Notify returns a channel that receives (non-blocking, capacity 1) after
// each Append, so a sender can wake. It is never closed.
func (o *Outbox) Notify() <-chan struct{} { return o.notify }

// Close releases the outbox; everything appended is already durable.
// Closing twice is harmless.
func (o *Outbox) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil
	}
	o.closed = true
	return o.closeFiles()
}

func (o *Outbox) closeFiles() error {
	var err error
	if o.f != nil {
		if cerr := o.f.Close(); cerr != nil {
			err = fmt.Errorf("close outbox log %s: %w", o.logPath(), cerr)
		}
	}
	o.lock.Close() // releases the flock
	return err
}

// maybeCompact compacts once the dead records outweigh the live ones and
// are more than compactMinBytes, which keeps the log under about twice the
// live bytes plus compactMinBytes and makes the rewrite cost amortised O(1)
// per byte appended. A failed compaction is only logged: the old log is
// still whole and current.
func (o *Outbox) maybeCompact() {
	dead := o.size - o.q.bytes
	if dead < compactMinBytes || dead < o.q.bytes {
		return
	}
	if err := o.compact(); err != nil {
		o.log.Warn("outbox compaction failed; the log keeps growing until it succeeds", "dir", o.dir, "err", err)
	}
}

// compact writes the live state to a temp file and renames it over the log:
// a crash before the rename leaves the old log (and a leftover temp file
// that the next Open removes), after it the new one; both hold the same
// items.
func (o *Outbox) compact() error {
	failpoint("compact:begin")
	buf := appendFrame(nil, recHeader, encodeHeader(o.nextSeq, o.dropped))
	for i := range o.q.e {
		if e := &o.q.e[i]; !e.dead {
			buf = appendFrame(buf, recItem, encodeItem(e.Item))
		}
	}
	tmp := filepath.Join(o.dir, fmt.Sprintf(".%s.tmp-%d-%d", logName, os.Getpid(), rand.Uint64()))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("compact: create %s: %w", tmp, err)
	}
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if _, err := f.Write(buf); err != nil {
		return fail(fmt.Errorf("compact: write %d bytes to %s: %w (is the disk full?)", len(buf), tmp, err))
	}
	failpoint("compact:temp-written")
	if err := f.Sync(); err != nil {
		return fail(fmt.Errorf("compact: fsync %s: %w", tmp, err))
	}
	failpoint("compact:temp-synced")
	if err := os.Rename(tmp, o.logPath()); err != nil {
		return fail(fmt.Errorf("compact: rename %s over %s: %w", tmp, o.logPath(), err))
	}
	failpoint("compact:renamed")
	if o.f != nil {
		o.f.Close()
	}
	o.f, o.size = f, int64(len(buf))
	if err := atomicfile.SyncDir(o.dir); err != nil {
		// Until the rename is durable a power loss may bring back the old
		// log, which would lack every later append.
		o.broken = fmt.Errorf("compaction's rename may not be durable (%v); reopen the outbox", err)
		return fmt.Errorf("compact: %w", err)
	}
	failpoint("compact:done")
	return nil
}
