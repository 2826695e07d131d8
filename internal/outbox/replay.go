package outbox

import (
	"encoding/binary"
	"fmt"
)

// replayed is the state a log describes.
type replayed struct {
	q         queue
	lastSeq   uint64 // highest item Seq seen, live or not
	ackedUpTo uint64
	nextSeq   uint64
	dropped   uint64
	recovery  Recovery
}

// replay reads a log. Records that are torn, fail their checksum or do not
// fit the log's story (a Seq that does not increase) are skipped to the next
// record that checks out, and counted. Only a log from a newer format is an
// error.
func replay(data []byte) (*replayed, error) {
	r := &replayed{nextSeq: 1}
	off := 0
	for off < len(data) {
		if size, ok, err := r.apply(data[off:]); err != nil {
			return nil, fmt.Errorf("record at offset %d: %w", off, err)
		} else if ok {
			off += size
			continue
		}
		start := off
		for off++; off < len(data); off++ {
			if _, ok, _ := r.check(data[off:]); ok {
				break
			}
		}
		r.recovery.DiscardedBytes += int64(off - start)
		r.recovery.DiscardedRegions++
	}
	r.nextSeq = max(r.nextSeq, r.lastSeq+1, r.ackedUpTo+1)
	// The damaged bytes may have held items whose Append returned and whose
	// Seq the server may have seen; skip as many Seqs as they could hold, so
	// that none is reused. Gaps are harmless.
	r.nextSeq += uint64(r.recovery.DiscardedBytes+minItemFrame-1) / minItemFrame
	return r, nil
}

func (r *replayed) apply(b []byte) (int, bool, error) {
	size, ok, err := r.check(b)
	if !ok || err != nil {
		return 0, false, err
	}
	typ, p, _, _ := parseFrame(b)
	switch typ {
	case recHeader:
		r.nextSeq = max(r.nextSeq, binary.LittleEndian.Uint64(p[1:]))
		r.dropped = max(r.dropped, binary.LittleEndian.Uint64(p[9:]))
	case recItem:
		it, _ := decodeItem(p)
		r.lastSeq = it.Seq
		r.q.push(it, int64(size))
	case recAck:
		upTo := binary.LittleEndian.Uint64(p)
		r.ackedUpTo = max(r.ackedUpTo, upTo)
		r.q.ackUpTo(upTo)
	case recDrop:
		r.dropped = max(r.dropped, binary.LittleEndian.Uint64(p))
		for p = p[8:]; len(p) > 0; p = p[8:] {
			r.q.remove(binary.LittleEndian.Uint64(p))
		}
	}
	return size, true, nil
}

// check says whether b starts with a record that apply would accept, without
// changing anything.
func (r *replayed) check(b []byte) (int, bool, error) {
	typ, p, size, ok := parseFrame(b)
	if !ok {
		return 0, false, nil
	}
	switch typ {
	case recHeader:
		if len(p) != 17 || p[0] == 0 || binary.LittleEndian.Uint64(p[1:]) > maxSeq {
			return 0, false, nil
		}
		if p[0] > formatVersion {
			return 0, false, fmt.Errorf("%w: version %d, this hotfleet reads up to %d; upgrade hotfleet or move the outbox directory aside", ErrNewerFormat, p[0], formatVersion)
		}
	case recItem:
		it, ok := decodeItem(p)
		if !ok || it.Seq == 0 || it.Seq > maxSeq || it.Seq <= r.lastSeq || it.Seq <= r.ackedUpTo {
			return 0, false, nil
		}
	case recAck:
		if len(p) != 8 || binary.LittleEndian.Uint64(p) > maxSeq {
			return 0, false, nil
		}
	case recDrop:
		if len(p) < 16 || len(p)%8 != 0 {
			return 0, false, nil
		}
	default:
		return 0, false, nil
	}
	return size, true, nil
}
