package agent

import (
	"container/heap"
	"context"
	"sync"
	"syscall"
	"time"
)

// scheduler hands pids to workers when they are due. A pid is never worked
// on by two workers at once: a pid that comes due while it is being worked on
// is run again right after.
type scheduler struct {
	mu      sync.Mutex
	h       dueHeap
	running map[int]bool
	again   map[int]bool
	wake    chan struct{}
	work    chan int
	sweepC  chan struct{}
}

type due struct {
	at  time.Time
	pid int
}

type dueHeap []due

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(due)) }
func (h *dueHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func newScheduler() *scheduler {
	return &scheduler{
		running: map[int]bool{}, again: map[int]bool{},
		wake: make(chan struct{}, 1), work: make(chan int), sweepC: make(chan struct{}, 1),
	}
}

// at schedules pid at t.
func (s *scheduler) at(pid int, t time.Time) {
	s.mu.Lock()
	heap.Push(&s.h, due{at: t, pid: pid})
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// queued tells how many checks wait.
func (s *scheduler) queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.h)
}

func (s *scheduler) run(ctx context.Context) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.mu.Lock()
		var next time.Time
		pid := 0
		now := time.Now()
		for len(s.h) > 0 {
			d := s.h[0]
			if d.at.After(now) {
				next = d.at
				break
			}
			heap.Pop(&s.h)
			if s.running[d.pid] {
				s.again[d.pid] = true
				continue
			}
			s.running[d.pid] = true
			pid = d.pid
			break
		}
		s.mu.Unlock()
		if pid != 0 {
			select {
			case s.work <- pid:
				continue
			case <-ctx.Done():
				return
			}
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = time.Until(next)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		case <-timer.C:
		}
	}
}

// done releases pid after a worker finished it.
func (s *scheduler) done(pid int) {
	s.mu.Lock()
	delete(s.running, pid)
	again := s.again[pid]
	delete(s.again, pid)
	s.mu.Unlock()
	if again {
		s.at(pid, time.Now())
	}
}

// budget keeps the agent's patch work within a share of one core: it measures
// the process's CPU time and makes workers wait when they used more than the
// share over the recent past. A short burst (up to budgetBurst of CPU) is
// free, so one apply to a new process is never delayed.
type budget struct {
	mu     sync.Mutex
	share  float64
	tokens time.Duration
	last   time.Time
	cpu    time.Duration
	// The clocks, replaced by tests.
	now      func() time.Time
	cpuClock func() time.Duration
	sleep    func(ctx context.Context, d time.Duration)
}

// budgetBurst is the CPU time a burst of work may use before pacing starts.
const budgetBurst = 200 * time.Millisecond

func newBudget(share float64) *budget {
	b := &budget{share: share, tokens: budgetBurst, now: time.Now, cpuClock: processCPU, sleep: sleepCtx}
	b.last, b.cpu = b.now(), b.cpuClock()
	return b
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// wait blocks until the budget allows more work.
func (b *budget) wait(ctx context.Context) {
	for {
		b.mu.Lock()
		now, cpu := b.now(), b.cpuClock()
		b.tokens += time.Duration(float64(now.Sub(b.last)) * b.share)
		b.tokens -= cpu - b.cpu
		b.tokens = min(b.tokens, budgetBurst)
		b.last, b.cpu = now, cpu
		short := -b.tokens
		b.mu.Unlock()
		if short <= 0 {
			return
		}
		if ctx.Err() != nil {
			return
		}
		b.sleep(ctx, min(time.Duration(float64(short)/b.share), time.Second))
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
