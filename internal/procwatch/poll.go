package procwatch

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"
)

// procID tells one process incarnation from another. The start time tells a
// reused pid; the addresses of the program's code and initial stack change
// on every exec (address space layout randomisation), which is how the poll
// notices an exec in a process it already knew.
type procID struct {
	start, startCode, endCode, startStack uint64
	ppid                                  int
	mmGone                                bool // main thread ended, others run: addresses unknown
}

func (a procID) sameProgram(b procID) bool {
	if a.mmGone || b.mmGone {
		return true // cannot tell; an exec would have replaced the main thread
	}
	return a.startCode == b.startCode && a.endCode == b.endCode && a.startStack == b.startStack
}

// statState reads the state (field 3) and num_threads (field 20) from the
// text of /proc/PID/stat; state 0 when it does not parse.
func statState(b []byte) (state byte, threads int) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0
	}
	fields := bytes.Fields(b[i+1:])
	if len(fields) <= 20-3 || len(fields[0]) != 1 {
		return 0, 0
	}
	n, err := strconv.Atoi(string(fields[20-3]))
	if err != nil {
		return 0, 0
	}
	return fields[0][0], n
}

const (
	// maxStat bounds one /proc/PID/stat read: 52 numbers and a comm of at
	// most 64 bytes (kernel threads' names) fit in well under 1 KiB.
	maxStat = 1024
	// maxProcs bounds one scan: the kernel's pid_max limit is 4194304.
	maxProcs = 1 << 22
)

type poller struct {
	w        *Watcher
	interval time.Duration
	known    map[int]procID
	stat     []byte
}

func (w *Watcher) startPoll(interval time.Duration) error {
	p := &poller{w: w, interval: interval, stat: make([]byte, maxStat)}
	known, err := p.scan()
	if err != nil {
		return fmt.Errorf("start polling /proc: %w", err)
	}
	p.known = known
	w.learnDescendants(known)
	stopped := make(chan struct{})
	w.mode = ModePoll
	w.stop = func() error { close(stopped); return nil }
	go p.run(stopped)
	return nil
}

func (p *poller) run(stopped <-chan struct{}) {
	w := p.w
	defer close(w.exited)
	defer close(w.events)
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-stopped:
			return
		case <-t.C:
		}
		now, err := p.scan()
		if err != nil {
			w.log.Warn("poll of /proc failed; retrying at the next interval", "err", err)
			continue
		}
		p.diff(now, time.Now())
		p.known = now
		if w.overflowPending {
			w.tryOverflow(time.Now())
		}
	}
}

// diff delivers the events that turn p.known into now: a pid gone is an
// Exit, a new pid or a known pid running another program is an Exec.
func (p *poller) diff(now map[int]procID, at time.Time) {
	w := p.w
	var gone, fresh []int
	for pid, old := range p.known {
		cur, ok := now[pid]
		switch {
		case !ok || cur.start != old.start:
			gone = append(gone, pid)
			if ok {
				fresh = append(fresh, pid) // pid reused by a new process
			}
		case !cur.sameProgram(old):
			fresh = append(fresh, pid)
		}
	}
	for pid := range now {
		if _, ok := p.known[pid]; !ok {
			fresh = append(fresh, pid)
		}
	}
	slices.Sort(gone)
	slices.Sort(fresh)
	for _, pid := range gone {
		if !w.ignored(Exit, pid, 0) {
			w.deliver(Event{Kind: Exit, Pid: pid, Tid: pid, Time: at, Parent: p.known[pid].ppid})
		}
	}
	for _, pid := range fresh {
		id := now[pid]
		if _, known := p.known[pid]; !known || id.start != p.known[pid].start {
			// A new process: learn whether it is one of the agent's.
			if w.ignored(Fork, pid, id.ppid) {
				continue
			}
		}
		if !w.ignored(Exec, pid, 0) {
			w.deliver(Event{Kind: Exec, Pid: pid, Tid: pid, Time: at, Exact: false, Parent: id.ppid})
		}
	}
}

// scan reads the identity of every process in /proc. Processes that vanish
// while it reads are left out: the next scan reports them as gone.
func (p *poller) scan() (map[int]procID, error) {
	d, err := os.Open("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w (is /proc mounted?)", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list processes in /proc: %w", err)
	}
	out := make(map[int]procID, len(p.known)+16)
	for _, name := range names {
		pid, err := strconv.Atoi(name)
		if err != nil || pid <= 0 {
			continue
		}
		if len(out) >= maxProcs {
			return nil, fmt.Errorf("more than %d processes in /proc; refusing to track more", maxProcs)
		}
		id, ok := p.readStat(pid)
		if ok {
			out[pid] = id
		}
	}
	return out, nil
}

// readStat reads /proc/PID/stat. ok is false when the process is gone, is a
// zombie, or the file does not parse (then it is treated as gone until it
// does).
func (p *poller) readStat(pid int) (procID, bool) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procID{}, false
	}
	n, _ := f.Read(p.stat)
	f.Close()
	return parseStat(p.stat[:n])
}

// parseStat takes the fields after the command name, which is in parentheses
// and may itself contain spaces and parentheses: it ends at the last ')'.
func parseStat(b []byte) (procID, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return procID{}, false
	}
	fields := bytes.Fields(b[i+1:])
	// fields[0] is field 3 of proc_pid_stat(5) (state).
	const (
		ppid       = 4 - 3
		numThreads = 20 - 3
		starttime  = 22 - 3
		startcode  = 26 - 3
		endcode    = 27 - 3
		startstack = 28 - 3
	)
	if len(fields) <= startstack {
		return procID{}, false
	}
	if st := fields[0]; len(st) == 1 && (st[0] == 'Z' || st[0] == 'X') {
		// A zombie has exited (its parent has not reaped it yet): it
		// counts as gone, unless only its main thread ended and others
		// run on; then its memory fields read 0 and say nothing.
		if n, err := strconv.Atoi(string(fields[numThreads])); err != nil || n <= 1 {
			return procID{}, false
		}
		start, err := strconv.ParseUint(string(fields[starttime]), 10, 64)
		pp, err2 := strconv.Atoi(string(fields[ppid]))
		return procID{start: start, ppid: pp, mmGone: true}, err == nil && err2 == nil
	}
	num := func(i int) (uint64, bool) {
		v, err := strconv.ParseUint(string(fields[i]), 10, 64)
		return v, err == nil
	}
	var id procID
	var ok [5]bool
	var pp uint64
	pp, ok[0] = num(ppid)
	id.ppid = int(pp)
	id.start, ok[1] = num(starttime)
	id.startCode, ok[2] = num(startcode)
	id.endCode, ok[3] = num(endcode)
	id.startStack, ok[4] = num(startstack)
	return id, ok == [5]bool{true, true, true, true, true}
}
