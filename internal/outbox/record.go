package outbox

import (
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"time"
)

// The log is a sequence of records, each framed as
//
//	length  uint32 LE: bytes of type+payload
//	crc     uint32 LE: CRC32C of length, type and payload
//	type    byte
//	payload
//
// The CRC covers the length so that a torn or overwritten length is caught
// instead of sending the reader to a wrong offset that happens to check out.
const (
	frameHeader = 8

	recHeader byte = 'H' // version u8, nextSeq u64, dropped u64: first record of every log file
	recItem   byte = 'I' // seq u64, time i64 (Unix ns), kind uvarint+bytes, key uvarint+bytes, body
	recAck    byte = 'A' // upTo u64
	recDrop   byte = 'D' // dropped-so-far u64, then the dropped seqs, u64 each

	// formatVersion is written in the header record; a newer one is refused
	// so that an old agent never rewrites a log it does not understand.
	formatVersion = 1
)

const (
	// maxItemBytes bounds one report's encoded size: reports are a few
	// hundred bytes; a megabyte means a caller bug, and a queue of such would
	// blow MaxBytes at once.
	maxItemBytes = 1 << 20
	// maxDropSeqs bounds the seqs in one drop record, so that a large drop
	// (a lowered bound at Open) never makes a record larger than an item.
	maxDropSeqs = 4096
	// maxRecordBytes bounds the length field a reader believes; anything
	// larger is corruption.
	maxRecordBytes = maxItemBytes + 64
	// minItemFrame is the smallest item record: frame, Seq, time, two empty
	// strings and a one-byte JSON body.
	minItemFrame = frameHeader + 1 + 16 + 1 + 1 + 1
	// maxSeq bounds a Seq a reader believes: a billion reports a second
	// for a century stays below it, and arithmetic on it cannot wrap.
	maxSeq = 1 << 62
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// appendFrame appends one framed record to b.
func appendFrame(b []byte, typ byte, payload []byte) []byte {
	start := len(b)
	b = binary.LittleEndian.AppendUint32(b, uint32(1+len(payload)))
	b = binary.LittleEndian.AppendUint32(b, 0)
	b = append(b, typ)
	b = append(b, payload...)
	crc := crc32.Update(0, castagnoli, b[start:start+4])
	crc = crc32.Update(crc, castagnoli, b[start+8:])
	binary.LittleEndian.PutUint32(b[start+4:], crc)
	return b
}

// parseFrame reads the record at the start of b. ok is false when b does not
// start with a whole record whose checksum matches.
func parseFrame(b []byte) (typ byte, payload []byte, size int, ok bool) {
	if len(b) < frameHeader+1 {
		return 0, nil, 0, false
	}
	n := binary.LittleEndian.Uint32(b)
	if n < 1 || n > maxRecordBytes || int(n) > len(b)-frameHeader {
		return 0, nil, 0, false
	}
	body := b[frameHeader : frameHeader+int(n)]
	crc := crc32.Update(0, castagnoli, b[:4])
	crc = crc32.Update(crc, castagnoli, body)
	if crc != binary.LittleEndian.Uint32(b[4:]) {
		return 0, nil, 0, false
	}
	return body[0], body[1:], frameHeader + int(n), true
}

func encodeItem(it Item) []byte {
	p := make([]byte, 0, 16+2*binary.MaxVarintLen64+len(it.Kind)+len(it.Key)+len(it.Body))
	p = binary.LittleEndian.AppendUint64(p, it.Seq)
	p = binary.LittleEndian.AppendUint64(p, uint64(it.Time.UnixNano()))
	p = binary.AppendUvarint(p, uint64(len(it.Kind)))
	p = append(p, it.Kind...)
	p = binary.AppendUvarint(p, uint64(len(it.Key)))
	p = append(p, it.Key...)
	p = append(p, it.Body...)
	return p
}

func decodeItem(p []byte) (Item, bool) {
	if len(p) < 16 {
		return Item{}, false
	}
	var it Item
	it.Seq = binary.LittleEndian.Uint64(p)
	it.Time = time.Unix(0, int64(binary.LittleEndian.Uint64(p[8:]))).UTC()
	p = p[16:]
	var ok bool
	if it.Kind, p, ok = readString(p); !ok {
		return Item{}, false
	}
	if it.Key, p, ok = readString(p); !ok {
		return Item{}, false
	}
	if !json.Valid(p) {
		return Item{}, false
	}
	it.Body = json.RawMessage(append([]byte(nil), p...))
	return it, true
}

func readString(p []byte) (string, []byte, bool) {
	n, k := binary.Uvarint(p)
	if k <= 0 || n > uint64(len(p)-k) {
		return "", nil, false
	}
	return string(p[k : k+int(n)]), p[k+int(n):], true
}

func encodeHeader(nextSeq, dropped uint64) []byte {
	p := []byte{formatVersion}
	p = binary.LittleEndian.AppendUint64(p, nextSeq)
	return binary.LittleEndian.AppendUint64(p, dropped)
}

func encodeU64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

func encodeDrop(dropped uint64, seqs []uint64) []byte {
	p := make([]byte, 0, 8*(1+len(seqs)))
	p = binary.LittleEndian.AppendUint64(p, dropped)
	for _, s := range seqs {
		p = binary.LittleEndian.AppendUint64(p, s)
	}
	return p
}
