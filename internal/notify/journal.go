package notify

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	// journalPriority is syslog's "notice": normal but significant.
	journalPriority = 5
	// syslogFacilityDaemon is the syslog facility of system daemons (3) in
	// the place the PRI field puts it.
	syslogFacilityDaemon = 3 << 3
	// logWriteTimeout bounds a write to a journal or syslog socket whose
	// reader is stuck; the message is not worth hanging the agent for.
	logWriteTimeout = 2 * time.Second
)

// journalOrSyslog sends msg to the system journal through its native
// protocol, or when there is no journal to syslog. It reports false without
// error when neither socket exists.
func (p paths) journalOrSyslog(ctx context.Context, msg string) (bool, error) {
	if _, err := os.Stat(p.journal); err == nil {
		if err := sendDatagram(ctx, p.journal, journalEntry(map[string]string{
			"MESSAGE":           msg,
			"PRIORITY":          strconv.Itoa(journalPriority),
			"SYSLOG_IDENTIFIER": appName,
		})); err != nil {
			return false, fmt.Errorf("write to the system journal %s: %w", p.journal, err)
		}
		return true, nil
	}
	if _, err := os.Stat(p.syslog); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	// Syslog messages are one line.
	line := strings.Join(strings.Fields(msg), " ")
	rec := fmt.Sprintf("<%d>%s %s[%d]: %s", syslogFacilityDaemon|journalPriority, time.Now().Format(time.Stamp), appName, os.Getpid(), line)
	err := sendDatagram(ctx, p.syslog, []byte(rec))
	if err != nil {
		// Some syslog daemons listen on a stream socket; records are then
		// ended by a newline.
		if serr := sendStream(ctx, p.syslog, []byte(rec+"\n")); serr != nil {
			return false, fmt.Errorf("write to syslog %s: %w (as a stream: %v)", p.syslog, err, serr)
		}
	}
	return true, nil
}

// journalEntry encodes fields in the journal's native protocol: KEY=value
// lines, or for a value holding a newline, the key, a newline, the value's
// length as 64-bit little endian, the value and a newline.
func journalEntry(fields map[string]string) []byte {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	// A fixed order makes the datagram reproducible.
	sort.Strings(keys)
	var b bytes.Buffer
	for _, k := range keys {
		v := fields[k]
		if !strings.Contains(v, "\n") {
			b.WriteString(k + "=" + v + "\n")
			continue
		}
		b.WriteString(k + "\n")
		_ = binary.Write(&b, binary.LittleEndian, uint64(len(v)))
		b.WriteString(v + "\n")
	}
	return b.Bytes()
}

func sendDatagram(ctx context.Context, path string, b []byte) error {
	return send(ctx, "unixgram", path, b)
}

func sendStream(ctx context.Context, path string, b []byte) error {
	return send(ctx, "unix", path, b)
}

func send(ctx context.Context, network, path string, b []byte) error {
	var d net.Dialer
	ctx, cancel := context.WithTimeout(ctx, logWriteTimeout)
	defer cancel()
	c, err := d.DialContext(ctx, network, path)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetWriteDeadline(dl)
	}
	_, err = c.Write(b)
	return err
}
