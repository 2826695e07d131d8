package inventory

// mapLine is the part of one /proc/PID/maps line the inventory needs. Path
// aliases the buffer the line was parsed from.
type mapLine struct {
	start, end, offset uint64
	major, minor       uint64
	inode              uint64
	path               []byte
}

// nextLine splits the first line off data.
func nextLine(data []byte) (line, rest []byte) {
	for i, c := range data {
		if c == '\n' {
			return data[:i], data[i+1:]
		}
	}
	return data, nil
}

// hexField parses lowercase or uppercase hex digits up to sep and returns the
// value and what follows sep. ok is false on an empty field, a non-hex digit,
// an overflow or a missing separator.
func hexField(b []byte, sep byte) (v uint64, rest []byte, ok bool) {
	n := 0
	for n < len(b) && b[n] != sep {
		c := b[n]
		var d uint64
		switch {
		case c >= '0' && c <= '9':
			d = uint64(c - '0')
		case c >= 'a' && c <= 'f':
			d = uint64(c-'a') + 10
		case c >= 'A' && c <= 'F':
			d = uint64(c-'A') + 10
		default:
			return 0, nil, false
		}
		if v>>60 != 0 {
			return 0, nil, false
		}
		v = v<<4 | d
		n++
	}
	if n == 0 || n == len(b) {
		return 0, nil, false
	}
	return v, b[n+1:], true
}

// decField parses decimal digits up to a space or the end of b.
func decField(b []byte) (v uint64, rest []byte, ok bool) {
	n := 0
	for n < len(b) && b[n] != ' ' {
		c := b[n]
		if c < '0' || c > '9' || v > (^uint64(0)-9)/10 {
			return 0, nil, false
		}
		v = v*10 + uint64(c-'0')
		n++
	}
	if n == 0 {
		return 0, nil, false
	}
	return v, b[n:], true
}

// parseMapLine parses "start-end perms offset major:minor inode   path"
// without allocating. The path is everything after the padding that follows
// the inode, so paths with spaces survive.
func parseMapLine(b []byte) (m mapLine, ok bool) {
	if m.start, b, ok = hexField(b, '-'); !ok {
		return m, false
	}
	if m.end, b, ok = hexField(b, ' '); !ok || m.end < m.start {
		return m, false
	}
	if len(b) < 5 || b[4] != ' ' {
		return m, false
	}
	b = b[5:]
	if m.offset, b, ok = hexField(b, ' '); !ok {
		return m, false
	}
	if m.major, b, ok = hexField(b, ':'); !ok {
		return m, false
	}
	if m.minor, b, ok = hexField(b, ' '); !ok {
		return m, false
	}
	if m.inode, b, ok = decField(b); !ok {
		return m, false
	}
	for len(b) > 0 && b[0] == ' ' {
		b = b[1:]
	}
	m.path = b
	return m, true
}
