package procwatch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

const (
	// rcvBuf is the socket receive buffer asked for: each event takes about
	// 1 KiB of buffer (skb overhead), so 16 MiB holds some 15000 events, a
	// few seconds of an exec storm while the reader is descheduled.
	rcvBuf = 16 << 20
	// recvBuf is the read buffer: one datagram carries one event of under
	// 100 bytes, and a page leaves room for kernels that batch.
	recvBuf = 4096
	// ackTimeout bounds the wait for the kernel's answer to the subscription.
	// The kernel answers while sendto runs, so the wait is only long where it
	// stays silent: outside the initial namespaces, or without
	// CONFIG_PROC_EVENTS, where a falling-back agent pays it once at start.
	ackTimeout = time.Second
	// maxHeld bounds the exits held for processes whose main thread ended
	// first (see connector.exit); few programs do that, and past the bound
	// such exits are delivered at once, as the kernel reports them.
	maxHeld = 1024
)

// Tests change these to make the kernel drop events: a tiny buffer, and a
// reader that waits before each read.
var (
	socketRcvBuf = rcvBuf
	testHookRecv func()
)

// connector is the reader's state for the netlink source.
type connector struct {
	w      *Watcher
	file   *os.File
	portID uint32
	ack    uint32 // the ack our subscription carries
	seqs   seqTracker
	// credit is events already counted as lost on ENOBUFS whose sequence
	// gap has not been seen yet, so a loss is not counted twice.
	credit uint64
	buf    []byte
	parsed []procEvent
	// held: exits of main threads whose process lives on (see exit).
	held map[int]Event
}

func (w *Watcher) startNetlink(ctx context.Context) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_CONNECTOR)
	if err != nil {
		return fmt.Errorf("open process connector socket: %w: %w (kernel without CONFIG_CONNECTOR?)", ErrUnavailable, err)
	}
	keep := false
	defer func() {
		if !keep {
			unix.Close(fd)
		}
	}()
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, socketRcvBuf); err != nil {
		// Without CAP_NET_ADMIN the buffer is capped by net.core.rmem_max.
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, socketRcvBuf); err != nil {
			w.log.Warn("cannot enlarge the process connector's receive buffer; bursts may lose events", "err", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: cnIdxProc}); err != nil {
		return fmt.Errorf("join the process events group: %w: %w (before Linux 6.6 this needs CAP_NET_ADMIN; run the agent as root)", ErrUnavailable, err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fmt.Errorf("read the process connector socket's address: %w", err)
	}
	nl, ok := sa.(*unix.SockaddrNetlink)
	if !ok {
		return fmt.Errorf("process connector socket has address %T, want netlink", sa)
	}
	c := &connector{w: w, portID: nl.Pid, ack: nl.Pid, buf: make([]byte, recvBuf)}
	if err := unix.Sendto(fd, controlMessage(mcastListen, c.ack, c.portID), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("subscribe to process events: %w: %w", ErrUnavailable, err)
	}
	if err := c.awaitAck(ctx, fd); err != nil {
		return err
	}
	if w.ignore != nil {
		// Subscribed first, so a helper forked from now on is seen
		// forking, and one forked before is in /proc.
		procs, err := (&poller{stat: make([]byte, maxStat)}).scan()
		if err != nil {
			return fmt.Errorf("find the agent's running helpers to ignore: %w", err)
		}
		w.learnDescendants(procs)
	}
	c.file = os.NewFile(uintptr(fd), "process-connector")
	keep = true
	rc, err := c.file.SyscallConn()
	if err != nil {
		c.file.Close()
		return fmt.Errorf("poll the process connector socket: %w", err)
	}
	w.mode = ModeNetlink
	w.stop = func() error {
		var serr error
		// Tell the kernel we stop listening: it keeps a count of listeners
		// and generates events while it is above zero.
		cerr := rc.Control(func(fd uintptr) {
			serr = unix.Sendto(int(fd), controlMessage(mcastIgnore, c.ack+2, c.portID), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		})
		err := c.file.Close()
		if serr != nil && cerr == nil {
			return fmt.Errorf("unsubscribe from process events: %w", serr)
		}
		if err != nil {
			return fmt.Errorf("close process connector socket: %w", err)
		}
		return nil
	}
	go c.run(rc)
	return nil
}

// awaitAck waits for the kernel's answer to the subscription, delivering the
// events that arrive meanwhile. Silence means the kernel ignored us.
func (c *connector) awaitAck(ctx context.Context, fd int) error {
	deadline := time.Now().Add(ackTimeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("subscribe to process events: %w: the kernel did not answer in %v (not in the initial user and pid namespaces, or kernel without CONFIG_PROC_EVENTS)", ErrUnavailable, ackTimeout)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("subscribe to process events: %w", err)
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(pfd, int(min(left, 100*time.Millisecond)/time.Millisecond)+1); err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("wait for the kernel's answer on the process connector: %w", err)
		}
		n, from, err := unix.Recvfrom(fd, c.buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		done, aerr := c.handle(n, from, err)
		if done {
			return aerr
		}
	}
}

// run is the reader goroutine.
func (c *connector) run(rc interface {
	Read(func(uintptr) bool) error
}) {
	w := c.w
	defer close(w.exited)
	defer close(w.events)
	deadline := false
	for {
		var n int
		var from unix.Sockaddr
		var rerr error
		if testHookRecv != nil {
			testHookRecv()
		}
		err := rc.Read(func(fd uintptr) bool {
			n, from, rerr = unix.Recvfrom(int(fd), c.buf, 0)
			return !errors.Is(rerr, unix.EAGAIN) && !errors.Is(rerr, unix.EINTR)
		})
		if errors.Is(err, os.ErrDeadlineExceeded) {
			w.tryOverflow(time.Now())
			c.recheck(time.Now())
		} else if err != nil {
			return // closed
		} else {
			c.handle(n, from, rerr)
		}
		// A pending Overflow and held exits are retried on a timer so that
		// a quiet device still gets told.
		if w.overflowPending || len(c.held) > 0 {
			c.file.SetReadDeadline(time.Now().Add(overflowRetry))
			deadline = true
		} else if deadline {
			c.file.SetReadDeadline(time.Time{})
			deadline = false
		}
	}
}

// handle processes one recvfrom result. During the subscription it reports
// done when the kernel's answer arrived, with the error the kernel gave.
func (c *connector) handle(n int, from unix.Sockaddr, rerr error) (ackDone bool, ackErr error) {
	w := c.w
	now := time.Now()
	if rerr != nil {
		if errors.Is(rerr, unix.ENOBUFS) {
			// The receive buffer overflowed: at least one event is gone.
			// The sequence gaps tell how many; count one now in case they
			// never show.
			c.credit++
			w.kernelLost(1)
			return false, nil
		}
		w.log.Warn("read from the process connector failed; retrying", "err", rerr)
		time.Sleep(overflowRetry) // an unknown error must not spin the CPU
		return false, nil
	}
	if nl, ok := from.(*unix.SockaddrNetlink); !ok || nl.Pid != 0 {
		return false, nil // not from the kernel
	}
	var err error
	c.parsed, err = parseMessages(c.buf[:n], c.parsed[:0])
	if err != nil {
		w.log.Warn("malformed process connector message skipped", "err", err)
	}
	for _, pe := range c.parsed {
		// Answers to subscriptions take numbers from the same per-CPU
		// counter as events, so they count for the gaps.
		if d := c.seqs.gap(pe.cpu, pe.seq); d > 0 {
			if d <= c.credit {
				c.credit -= d
			} else {
				w.kernelLost(d - c.credit)
				c.credit = 0
			}
		}
		if pe.what == procEvNone {
			if pe.ack == c.ack+1 {
				ackDone = true
				if pe.status != 0 {
					ackErr = fmt.Errorf("subscribe to process events: %w: %w (needs CAP_NET_ADMIN in the initial user namespace)", ErrUnavailable, unix.Errno(pe.status))
				}
			}
			continue // answers to subscriptions, ours or others'
		}
		if pe.what == procEvExit {
			c.exit(pe, now)
			continue
		}
		if pe.what == procEvExec {
			delete(c.held, pe.tgid) // its main thread's exit was the exec's doing
		}
		ev, ok := toEvent(pe, now)
		if !ok || w.ignored(ev.Kind, ev.Pid, ev.Parent) || (ev.Kind == Fork && !w.forks) {
			continue
		}
		w.deliver(ev)
	}
	return ackDone, ackErr
}

// exit handles a thread's exit. The kernel reports it once the thread is a
// zombie (or released), so the process's state in /proc tells what the exit
// means. The main thread's exit is the process's, except:
//   - it ended alone (pthread_exit) and other threads run on: the exit is
//     held until the last of them ends, whose exit carries the process's
//     status;
//   - a thread executed a program, which ends every other thread, the main
//     one included, and takes over the process id: the exit is dropped, the
//     Exec follows.
//
// Both leave the main thread's exit with status 0, so only such exits cost a
// read of /proc.
func (c *connector) exit(pe procEvent, now time.Time) {
	w := c.w
	ev, _ := toEvent(procEvent{what: procEvExit, pid: pe.tgid, tgid: pe.tgid, status: pe.status, ptgid: pe.ptgid, stamp: pe.stamp}, now)
	ev.Tid = pe.pid
	if pe.pid != pe.tgid {
		held, ok := c.held[pe.tgid]
		if !ok {
			return // a thread, not the process
		}
		switch state, threads := leaderState(pe.tgid); {
		case state == 0 || (isZombie(state) && threads <= 1):
			delete(c.held, pe.tgid)
			ev.Parent = held.Parent
		case !isZombie(state):
			delete(c.held, pe.tgid) // a thread executed a program
			return
		default:
			return // other threads run on
		}
	} else if pe.status == 0 {
		switch state, threads := leaderState(pe.tgid); {
		case state != 0 && !isZombie(state):
			return // a thread executed a program
		case state != 0 && threads > 1 && len(c.held) < maxHeld:
			if c.held == nil {
				c.held = make(map[int]Event)
			}
			c.held[pe.tgid] = ev
			return
		}
	}
	if !w.ignored(Exit, ev.Pid, 0) {
		w.deliver(ev)
	}
}

// settleAfter is how long a held exit waits for the last thread's own exit
// event before recheck settles it: that event is usually read within
// microseconds, but a busy machine may delay the reader, and settling early
// loses the process's exit status.
const settleAfter = time.Second

// recheck settles held exits whose last threads ended unseen (a lost event):
// a process now gone is delivered with Exact false, since how it ended was
// not seen.
func (c *connector) recheck(now time.Time) {
	for tgid, ev := range c.held {
		if now.Sub(ev.Time) < settleAfter {
			continue // the last thread's exit may still be on its way
		}
		state, threads := leaderState(tgid)
		switch {
		case state == 0 || (isZombie(state) && threads <= 1):
			ev.Time, ev.Exact = now, false
			if !c.w.ignored(Exit, tgid, 0) {
				c.w.deliver(ev)
			}
		case isZombie(state):
			continue
		}
		delete(c.held, tgid)
	}
}

func isZombie(state byte) bool { return state == 'Z' || state == 'X' }

// leaderState reads the state of a process's main thread and its number of
// threads from /proc/PID/stat; state 0 means the process is gone.
func leaderState(pid int) (state byte, threads int) {
	var buf [maxStat]byte
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0
	}
	n, _ := f.Read(buf[:])
	f.Close()
	return statState(buf[:n])
}
