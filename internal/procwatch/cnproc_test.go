package procwatch

import (
	"errors"
	"syscall"
	"testing"
	"time"
)

// kernelMessage builds one datagram as the kernel sends it: nlmsghdr,
// cn_msg, proc_event header, then the event's 32-bit words.
func kernelMessage(what, cpu, seq uint32, words ...uint32) []byte {
	dlen := procHdrLen + 4*len(words)
	b := make([]byte, nlmsgHdrLen+cnMsgLen+dlen)
	ne.PutUint32(b[0:], uint32(len(b)))
	ne.PutUint16(b[4:], syscall.NLMSG_DONE)
	c := b[nlmsgHdrLen:]
	ne.PutUint32(c[0:], cnIdxProc)
	ne.PutUint32(c[4:], cnValProc)
	ne.PutUint32(c[8:], seq)
	ne.PutUint16(c[16:], uint16(dlen))
	d := c[cnMsgLen:]
	ne.PutUint32(d[0:], what)
	ne.PutUint32(d[4:], cpu)
	ne.PutUint64(d[8:], 12345)
	for i, w := range words {
		ne.PutUint32(d[procHdrLen+4*i:], w)
	}
	return b
}

func TestToEvent(t *testing.T) {
	now := time.Now()
	tests := []struct {
		name  string
		msg   []byte
		want  Event
		noEvt bool
	}{
		{"exec", kernelMessage(procEvExec, 0, 1, 100, 100),
			Event{Kind: Exec, Pid: 100, Tid: 100}, false},
		{"exit 3", kernelMessage(procEvExit, 0, 1, 100, 100, 3<<8, uint32(syscall.SIGCHLD), 1, 1),
			Event{Kind: Exit, Pid: 100, Tid: 100, ExitCode: 3, Parent: 1}, false},
		// exit_signal (SIGCHLD here) is what the parent gets, never the cause.
		{"killed by SIGSEGV with core", kernelMessage(procEvExit, 1, 1, 100, 100, uint32(syscall.SIGSEGV)|0x80, uint32(syscall.SIGCHLD), 1, 1),
			Event{Kind: Exit, Pid: 100, Tid: 100, Signal: syscall.SIGSEGV, CoreDumped: true, Parent: 1}, false},
		{"exit without the parent fields of old kernels", kernelMessage(procEvExit, 0, 1, 100, 100, 0, 17),
			Event{Kind: Exit, Pid: 100, Tid: 100}, false},
		{"thread exit", kernelMessage(procEvExit, 0, 1, 101, 100, 0, 0xffffffff, 1, 1), Event{}, true},
		{"process fork", kernelMessage(procEvFork, 0, 1, 50, 50, 100, 100),
			Event{Kind: Fork, Pid: 100, Tid: 50, Parent: 50}, false},
		{"thread creation", kernelMessage(procEvFork, 0, 1, 100, 100, 101, 100), Event{}, true},
		{"comm change", kernelMessage(0x200, 0, 1, 100, 100, 0, 0, 0, 0), Event{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pes, err := parseMessages(tc.msg, nil)
			if err != nil || len(pes) != 1 {
				t.Fatalf("parseMessages: %d events, %v", len(pes), err)
			}
			ev, ok := toEvent(pes[0], now)
			if ok == tc.noEvt {
				t.Fatalf("toEvent ok = %v, want %v (%+v)", ok, !tc.noEvt, ev)
			}
			if !ok {
				return
			}
			tc.want.Time, tc.want.Exact, tc.want.Stamp = now, true, 12345
			if ev != tc.want {
				t.Errorf("got %+v\nwant %+v", ev, tc.want)
			}
		})
	}
}

func TestParseMessagesRejectsTruncation(t *testing.T) {
	good := kernelMessage(procEvExit, 0, 1, 100, 100, 0, 17, 1, 1)
	for n := 0; n < len(good); n++ {
		pes, err := parseMessages(good[:n], nil)
		if n == 0 {
			if err != nil || len(pes) != 0 {
				t.Errorf("empty datagram: %v, %d events", err, len(pes))
			}
			continue
		}
		if !errors.Is(err, errShort) || len(pes) != 0 {
			t.Errorf("datagram cut to %d bytes: %d events, %v; want errShort", n, len(pes), err)
		}
	}
	// A length field that promises more than the payload holds.
	bad := kernelMessage(procEvExec, 0, 1, 100, 100)
	ne.PutUint16(bad[nlmsgHdrLen+16:], 200)
	if _, err := parseMessages(bad, nil); !errors.Is(err, errShort) {
		t.Errorf("cn_msg len past the end: %v, want errShort", err)
	}
	// Two messages in one datagram, the second one another connector's.
	two := append(kernelMessage(procEvExec, 0, 1, 7, 7), kernelMessage(procEvExec, 0, 2, 8, 8)...)
	ne.PutUint32(two[len(two)/2+nlmsgHdrLen:], 99) // idx of the second
	if pes, err := parseMessages(two, nil); err != nil || len(pes) != 1 || pes[0].tgid != 7 {
		t.Errorf("two messages: %+v, %v; want only pid 7", pes, err)
	}
}

func FuzzParseMessages(f *testing.F) {
	f.Add(kernelMessage(procEvExit, 0, 1, 100, 100, 0, 17, 1, 1))
	f.Add(kernelMessage(procEvFork, 1, 2, 1, 1, 2, 2))
	f.Add(append(kernelMessage(procEvExec, 0, 1, 7, 7), kernelMessage(procEvNone, 0, 2, 0)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		pes, _ := parseMessages(b, nil)
		for _, pe := range pes {
			toEvent(pe, time.Time{})
		}
	})
}

func TestSeqGaps(t *testing.T) {
	var s seqTracker
	steps := []struct {
		cpu, seq uint32
		gap      uint64
	}{
		{0, 10, 0}, // first seen: no baseline
		{1, 500, 0},
		{0, 11, 0},
		{0, 15, 3},
		{1, 501, 0},
		{0, 0xffffffff, 0}, // implausible jump: not counted
		{0, 1, 1},          // wrapped past 0
	}
	for i, st := range steps {
		if got := s.gap(st.cpu, st.seq); got != st.gap {
			t.Errorf("step %d (cpu %d seq %d): gap %d, want %d", i, st.cpu, st.seq, got, st.gap)
		}
	}
}

// TestDeliverNeverBlocks: a full channel costs events, counted in Lost, and
// an Overflow comes first once there is room again.
func TestDeliverNeverBlocks(t *testing.T) {
	w := &Watcher{events: make(chan Event, 2)}
	for pid := 1; pid <= 5; pid++ {
		w.deliver(Event{Kind: Exec, Pid: pid})
	}
	if w.Lost() != 3 {
		t.Fatalf("Lost() = %d after 5 events into room for 2, want 3", w.Lost())
	}
	<-w.events
	<-w.events
	w.deliver(Event{Kind: Exec, Pid: 6})
	if ev := <-w.events; ev.Kind != Overflow {
		t.Fatalf("first event after the loss: %+v, want Overflow", ev)
	}
	if ev := <-w.events; ev.Pid != 6 {
		t.Fatalf("second event after the loss: %+v, want pid 6", ev)
	}
	if w.overflowPending {
		t.Error("Overflow still owed after it was delivered")
	}
}

func TestExitStatus(t *testing.T) {
	tests := []struct {
		status uint32
		code   int
		sig    syscall.Signal
		core   bool
	}{
		{0, 0, 0, false},
		{3 << 8, 3, 0, false},
		{255 << 8, 255, 0, false},
		{uint32(syscall.SIGKILL), 0, syscall.SIGKILL, false},
		{uint32(syscall.SIGABRT) | 0x80, 0, syscall.SIGABRT, true},
	}
	for _, tc := range tests {
		code, sig, core := exitStatus(tc.status)
		if code != tc.code || sig != tc.sig || core != tc.core {
			t.Errorf("exitStatus(%#x) = %d, %v, %v; want %d, %v, %v", tc.status, code, sig, core, tc.code, tc.sig, tc.core)
		}
	}
}

func TestParseStat(t *testing.T) {
	// Field 2 may hold spaces and parentheses; fields 4, 22, 26-28 matter.
	line := "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 777 1000 50 18446744073709551615 94000 95000 140000 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	id, ok := parseStat([]byte(line))
	want := procID{ppid: 1, start: 777, startCode: 94000, endCode: 95000, startStack: 140000}
	if !ok || id != want {
		t.Errorf("parseStat = %+v, %v; want %+v", id, ok, want)
	}
	for _, bad := range []string{
		"",
		"4242 (x",
		"4242 (x) S 1 2 3",
		"4242 (x) Z 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 777 1000 50 1 0 0 0", // zombie
	} {
		if _, ok := parseStat([]byte(bad)); ok {
			t.Errorf("parseStat(%q) accepted", bad)
		}
	}
}
