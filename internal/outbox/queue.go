package outbox

import "sort"

// entry is one item in memory with its size in the log.
type entry struct {
	Item
	size int64
	dead bool // dropped by the bound; removed from e lazily
}

// queue is the in-memory mirror of the live items of the log, oldest first.
// Items dropped from the middle are marked dead and squeezed out in bulk, so
// that a drop costs O(log n) and not a copy of the queue.
type queue struct {
	e     []entry // ascending Seq; may hold dead entries
	live  int
	bytes int64          // sum of live sizes
	dead  int            // dead entries still in e
	keys  map[string]int // live items per non-empty Key
	dups  int            // live items whose Key another live item also has, minus one per Key
}

func (q *queue) push(it Item, size int64) {
	q.e = append(q.e, entry{Item: it, size: size})
	q.live++
	q.bytes += size
	if it.Key != "" {
		if q.keys == nil {
			q.keys = make(map[string]int)
		}
		if q.keys[it.Key] > 0 {
			q.dups++
		}
		q.keys[it.Key]++
	}
}

func (q *queue) forget(e *entry) {
	q.live--
	q.bytes -= e.size
	if e.Key != "" {
		q.keys[e.Key]--
		if q.keys[e.Key] == 0 {
			delete(q.keys, e.Key)
		} else {
			q.dups--
		}
	}
}

// oldest returns the smallest live Seq, or 0 when the queue is empty.
func (q *queue) oldest() uint64 {
	q.tidy()
	if len(q.e) == 0 {
		return 0
	}
	return q.e[0].Seq
}

// ackUpTo removes every item with Seq <= upTo and returns how many.
func (q *queue) ackUpTo(upTo uint64) int {
	i := sort.Search(len(q.e), func(i int) bool { return q.e[i].Seq > upTo })
	n := 0
	for j := range q.e[:i] {
		if q.e[j].dead {
			q.dead--
			continue
		}
		q.forget(&q.e[j])
		n++
	}
	clear(q.e[:i]) // let the bodies be collected
	q.e = q.e[i:]
	q.tidy()
	return n
}

// remove drops the item with seq, reporting whether it was live.
func (q *queue) remove(seq uint64) bool {
	i := sort.Search(len(q.e), func(i int) bool { return q.e[i].Seq >= seq })
	if i == len(q.e) || q.e[i].Seq != seq || q.e[i].dead {
		return false
	}
	q.forget(&q.e[i])
	q.e[i].dead = true
	q.e[i].Body = nil
	q.dead++
	q.tidy()
	return true
}

// tidy squeezes dead entries out once they are as many as the live ones, and
// always off the front, so that the front of e is live.
func (q *queue) tidy() {
	for len(q.e) > 0 && q.e[0].dead {
		q.e[0] = entry{}
		q.e = q.e[1:]
		q.dead--
	}
	if q.dead > 0 && q.dead >= q.live {
		kept := q.e[:0]
		for _, e := range q.e {
			if !e.dead {
				kept = append(kept, e)
			}
		}
		clear(q.e[len(kept):])
		q.e = kept
		q.dead = 0
	}
}

// peek returns up to n live items, oldest first, with bodies the caller may
// keep and modify.
func (q *queue) peek(n int) []Item {
	var out []Item
	for i := 0; i < len(q.e) && len(out) < n; i++ {
		if q.e[i].dead {
			continue
		}
		it := q.e[i].Item
		it.Body = append([]byte(nil), it.Body...)
		out = append(out, it)
	}
	return out
}

// victims says which items to drop so that the queue, with extra appended
// (when not nil), holds at most maxItems items and maxBytes bytes: first older
// items whose Key a newer item repeats (only the newest state of a Key
// matters), oldest first, then the oldest items. extra itself is never a
// victim. victims changes nothing.
func (q *queue) victims(maxItems int, maxBytes int64, extra *entry) []uint64 {
	count, bytes := q.live, q.bytes
	dups := q.dups
	if extra != nil {
		count++
		bytes += extra.size
		if extra.Key != "" && q.keys[extra.Key] > 0 {
			dups++
		}
	}
	over := func() bool { return count > maxItems || bytes > maxBytes }
	if !over() {
		return nil
	}
	var out []uint64
	chosen := make(map[uint64]bool)
	if dups > 0 {
		taken := make(map[string]int) // per Key, how many victims so far
		for i := range q.e {
			if !over() {
				break
			}
			e := &q.e[i]
			if e.dead || e.Key == "" {
				continue
			}
			n := q.keys[e.Key] - taken[e.Key]
			if extra != nil && extra.Key == e.Key {
				n++
			}
			if n > 1 { // a newer item with this Key stays
				taken[e.Key]++
				chosen[e.Seq] = true
				out = append(out, e.Seq)
				count--
				bytes -= e.size
			}
		}
	}
	for i := 0; i < len(q.e) && over(); i++ {
		e := &q.e[i]
		if e.dead || chosen[e.Seq] {
			continue
		}
		out = append(out, e.Seq)
		count--
		bytes -= e.size
	}
	return out
}
