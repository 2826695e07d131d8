package procwatch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"
	"time"
)

// Wire layout of the process connector (include/uapi/linux/cn_proc.h and
// connector.h), in the host's byte order. Parsed by hand so that no cgo is
// needed and every length is checked.
const (
	nlmsgHdrLen  = 16 // struct nlmsghdr
	cnMsgLen     = 20 // struct cn_msg: id{idx,val}, seq, ack, len u16, flags u16
	procHdrLen   = 16 // struct proc_event up to event_data: what, cpu, timestamp_ns
	cnIdxProc    = 1  // CN_IDX_PROC
	cnValProc    = 1  // CN_VAL_PROC
	mcastListen  = 1  // PROC_CN_MCAST_LISTEN
	mcastIgnore  = 2  // PROC_CN_MCAST_IGNORE
	procEvNone   = 0x00000000
	procEvFork   = 0x00000001
	procEvExec   = 0x00000002
	procEvExit   = 0x80000000
	nlmsgAlignTo = 4
)

var ne = binary.NativeEndian

// procEvent is one decoded proc_event with the fields this package uses.
type procEvent struct {
	what   uint32
	cpu    uint32
	seq    uint32 // cn_msg seq: per-CPU counter of proc events, answers included
	ack    uint32 // cn_msg ack: a subscription's ack+1 in its answer
	stamp  uint64 // ns, CLOCK_MONOTONIC
	pid    int    // exec/exit: the thread; fork: the child thread
	tgid   int    // exec/exit: its process; fork: the child process
	ppid   int    // fork: parent thread; exit: parent thread (0 if absent)
	ptgid  int    // fork: parent process; exit: parent process (0 if absent)
	status uint32 // exit: wait(2) status word; none (ack): error number
}

var errShort = errors.New("message shorter than its header says")

// parseMessages decodes the netlink datagram b into proc events, appending to
// out. Messages that are not process connector messages are skipped; a
// malformed one ends the datagram with an error (the events before it stand).
func parseMessages(b []byte, out []procEvent) ([]procEvent, error) {
	for len(b) > 0 {
		if len(b) < nlmsgHdrLen {
			return out, fmt.Errorf("netlink header of %d bytes: %w", len(b), errShort)
		}
		n := int(ne.Uint32(b[0:4]))
		if n < nlmsgHdrLen || n > len(b) {
			return out, fmt.Errorf("netlink message length %d with %d bytes left: %w", n, len(b), errShort)
		}
		if ev, ok, err := parseCnMsg(b[nlmsgHdrLen:n]); err != nil {
			return out, err
		} else if ok {
			out = append(out, ev)
		}
		adv := (n + nlmsgAlignTo - 1) &^ (nlmsgAlignTo - 1)
		if adv >= len(b) {
			break
		}
		b = b[adv:]
	}
	return out, nil
}

// parseCnMsg decodes one connector message; ok is false for messages of
// other connector users.
func parseCnMsg(b []byte) (ev procEvent, ok bool, err error) {
	if len(b) < cnMsgLen {
		return ev, false, fmt.Errorf("connector header of %d bytes: %w", len(b), errShort)
	}
	if ne.Uint32(b[0:4]) != cnIdxProc || ne.Uint32(b[4:8]) != cnValProc {
		return ev, false, nil
	}
	ev.seq = ne.Uint32(b[8:12])
	ev.ack = ne.Uint32(b[12:16])
	dlen := int(ne.Uint16(b[16:18]))
	data := b[cnMsgLen:]
	if dlen > len(data) {
		return ev, false, fmt.Errorf("connector payload of %d bytes with %d present: %w", dlen, len(data), errShort)
	}
	data = data[:dlen]
	if len(data) < procHdrLen {
		return ev, false, fmt.Errorf("proc event of %d bytes: %w", len(data), errShort)
	}
	ev.what = ne.Uint32(data[0:4])
	ev.cpu = ne.Uint32(data[4:8])
	ev.stamp = ne.Uint64(data[8:16])
	d := data[procHdrLen:]
	u32 := func(i int) uint32 { return ne.Uint32(d[4*i : 4*i+4]) }
	need := func(words int) error {
		if len(d) < 4*words {
			return fmt.Errorf("proc event %#x with %d data bytes, want %d: %w", ev.what, len(d), 4*words, errShort)
		}
		return nil
	}
	switch ev.what {
	case procEvNone: // ack: err, then nothing we use
		if err := need(1); err != nil {
			return ev, false, err
		}
		ev.status = u32(0)
	case procEvFork: // parent_pid, parent_tgid, child_pid, child_tgid
		if err := need(4); err != nil {
			return ev, false, err
		}
		ev.ppid, ev.ptgid, ev.pid, ev.tgid = int(u32(0)), int(u32(1)), int(u32(2)), int(u32(3))
	case procEvExec: // process_pid, process_tgid
		if err := need(2); err != nil {
			return ev, false, err
		}
		ev.pid, ev.tgid = int(u32(0)), int(u32(1))
	case procEvExit: // process_pid, process_tgid, exit_code, exit_signal[, parent_pid, parent_tgid]
		if err := need(4); err != nil {
			return ev, false, err
		}
		ev.pid, ev.tgid, ev.status = int(u32(0)), int(u32(1)), u32(2)
		// u32(3) is exit_signal: the signal the parent is sent (SIGCHLD),
		// not the cause of death, which is in the status word.
		if len(d) >= 24 { // parent fields since Linux 4.18
			ev.ppid, ev.ptgid = int(u32(4)), int(u32(5))
		}
	}
	return ev, true, nil
}

// exitStatus splits a wait(2) status word: the terminating signal is in the
// low 7 bits, 0x80 flags a core dump, and a normal exit's code is in bits 8-15.
func exitStatus(status uint32) (code int, sig syscall.Signal, core bool) {
	if s := status & 0x7f; s != 0 {
		return 0, syscall.Signal(s), status&0x80 != 0
	}
	return int(status>>8) & 0xff, 0, false
}

// toEvent turns a kernel event into what the consumer sees; ok is false for
// events this package does not report (thread creation and exit, other kinds).
func toEvent(pe procEvent, now time.Time) (ev Event, ok bool) {
	ev = Event{Pid: pe.tgid, Tid: pe.pid, Time: now, Exact: true, Stamp: time.Duration(pe.stamp)}
	switch pe.what {
	case procEvExec:
		ev.Kind = Exec
	case procEvExit:
		if pe.pid != pe.tgid {
			return ev, false // a thread, not the process
		}
		ev.Kind = Exit
		ev.ExitCode, ev.Signal, ev.CoreDumped = exitStatus(pe.status)
		ev.Parent = pe.ptgid
	case procEvFork:
		if pe.pid != pe.tgid {
			return ev, false // a new thread
		}
		ev.Kind = Fork
		ev.Tid = pe.ppid
		ev.Parent = pe.ptgid
	default:
		return ev, false
	}
	return ev, true
}

// controlMessage builds the subscription message (op is mcastListen or
// mcastIgnore) sent to the kernel. The kernel's answer carries ack+1 (its seq
// is replaced by the per-CPU event counter), so ack tells our answer from the
// answers to other listeners. The 4-byte form is used, not the filtered
// form of Linux 6.6+, because older kernels ignore a message of another size
// without an answer.
func controlMessage(op, ack, portID uint32) []byte {
	const total = nlmsgHdrLen + cnMsgLen + 4
	b := make([]byte, total)
	ne.PutUint32(b[0:], total)
	ne.PutUint16(b[4:], syscall.NLMSG_DONE) // the connector's message type
	ne.PutUint32(b[12:], portID)
	c := b[nlmsgHdrLen:]
	ne.PutUint32(c[0:], cnIdxProc)
	ne.PutUint32(c[4:], cnValProc)
	ne.PutUint32(c[12:], ack)
	ne.PutUint16(c[16:], 4)
	ne.PutUint32(c[cnMsgLen:], op)
	return b
}

// seqTracker finds events the kernel dropped: the connector numbers proc
// events with one counter per CPU, so a gap in one CPU's numbers is events
// that never reached this socket.
type seqTracker struct{ last map[uint32]uint32 }

// maxSeqGap bounds a believable gap: a larger jump means the numbers are not
// what we think (a kernel change), and guessing a huge loss would be worse
// than reporting none.
const maxSeqGap = 1 << 24

func (t *seqTracker) gap(cpu, seq uint32) uint64 {
	if t.last == nil {
		t.last = make(map[uint32]uint32)
	}
	prev, seen := t.last[cpu]
	t.last[cpu] = seq
	if !seen {
		return 0
	}
	d := seq - prev - 1 // wraps with the kernel's u32 counter
	if d == 0 || d > maxSeqGap {
		return 0
	}
	return uint64(d)
}
