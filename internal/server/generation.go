package server

import (
	"context"
	"sync"
)

// generations fans the database's generation counter out to the watches
// this replica holds: one poller, any number of waiters.
type generations struct {
	mu      sync.Mutex
	n       int64
	changed chan struct{} // closed and replaced when n changes
}

func newGenerations() *generations { return &generations{changed: make(chan struct{})} }

func (g *generations) set(n int64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if n != g.n {
		g.n = n
		close(g.changed)
		g.changed = make(chan struct{})
	}
}

func (g *generations) current() (int64, <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.n, g.changed
}

// wait returns when the generation differs from known or ctx ends, with the
// generation then.
func (g *generations) wait(ctx context.Context, known int64) int64 {
	for {
		n, ch := g.current()
		if n != known && n != 0 {
			return n
		}
		select {
		case <-ctx.Done():
			n, _ := g.current()
			return n
		case <-ch:
		}
	}
}
