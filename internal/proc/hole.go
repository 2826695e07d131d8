package proc

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

const (
	// rel32Reach is how far a rel32 jump or PC32 reference reaches either way.
	rel32Reach = 2 << 30
	// reachMargin keeps holes a few MiB inside rel32 reach, so that a patch
	// region may grow a little and rounding never pushes a target out of reach.
	reachMargin = 8 << 20
	// low32Limit is the end of the region reachable with 32-bit absolute
	// (sign-extended) addresses.
	low32Limit = 2 << 30
	// userSpaceEnd is the end of the x86-64 4-level-paging user address space
	// (TASK_SIZE_MAX); mmap never hands out addresses above it without a hint.
	userSpaceEnd = 1<<47 - 4096
	// stackGuard keeps holes away from below a [stack] mapping: the kernel's
	// default stack_guard_gap is 256 pages, and the stack must be able to grow.
	stackGuard = 1 << 20
	// defaultMmapMinAddr is the kernel default for vm.mmap_min_addr, used when
	// the sysctl cannot be read.
	defaultMmapMinAddr = 64 << 10
)

// mmapMinAddr reads /proc/sys/vm/mmap_min_addr: the kernel refuses mappings
// below it.
func mmapMinAddr() uint64 {
	b, err := os.ReadFile("/proc/sys/vm/mmap_min_addr")
	if err != nil {
		return defaultMmapMinAddr
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return defaultMmapMinAddr
	}
	return v
}

// FindHole finds a page-aligned free address range of spec.Size bytes in
// maps such that every byte of it is within rel32 reach (less a margin) of
// every byte of every spec.Near range, that overlaps no spec.Avoid range, lies
// above vm.mmap_min_addr and, with spec.Low32, below 2 GiB. Among the
// candidates it returns the one closest to the Near ranges. The error wraps
// ErrNoHole when there is none.
func FindHole(maps []Mapping, spec HoleSpec) (uint64, error) {
	return findHole(maps, spec, mmapMinAddr(), uint64(os.Getpagesize()))
}

func findHole(maps []Mapping, spec HoleSpec, minAddr, page uint64) (uint64, error) {
	if spec.Size == 0 {
		return 0, fmt.Errorf("find a free address range: size is 0; ask for at least one byte")
	}
	if spec.Size > userSpaceEnd {
		return 0, holeError{fmt.Sprintf("no free address range of %d bytes: larger than the address space; build a smaller patch", spec.Size)}
	}
	size := (spec.Size + page - 1) &^ (page - 1)
	alignUp := func(a uint64) uint64 { return (a + page - 1) &^ (page - 1) }
	alignDown := func(a uint64) uint64 { return a &^ (page - 1) }

	// The window [lo, hi) the whole hole must lie in.
	lo, hi := alignUp(max(minAddr, page)), uint64(userSpaceEnd)
	if spec.Low32 {
		hi = min(hi, low32Limit)
	}
	const reach = rel32Reach - reachMargin
	var nearLo, nearHi uint64 = ^uint64(0), 0
	for _, r := range spec.Near {
		if r.End <= r.Start {
			continue
		}
		nearLo, nearHi = min(nearLo, r.Start), max(nearHi, r.End)
		if r.End > reach {
			lo = max(lo, alignUp(r.End-reach))
		}
		if r.Start < userSpaceEnd {
			hi = min(hi, alignDown(r.Start+reach))
		}
	}
	noHole := func(why string) error {
		return holeError{fmt.Sprintf("no free address range of %d bytes%s (searched [%#x, %#x)%s); "+
			"the process has reserved that address space: restart it with less address space reserved, or build a smaller patch",
			size, nearText(spec.Near), lo, hi, why)}
	}
	if hi <= lo || hi-lo < size {
		return 0, noHole(": the reach window is smaller than the size")
	}

	// Occupied intervals: mappings, ranges to avoid, stack growth room.
	busy := make([]Range, 0, len(maps)+len(spec.Avoid))
	for _, m := range maps {
		r := Range{alignDown(m.Start), alignUp(m.End)}
		if m.Path == "[stack]" {
			r.Start = alignDown(max(r.Start, stackGuard) - stackGuard)
		}
		busy = append(busy, r)
	}
	for _, r := range spec.Avoid {
		if r.End > r.Start {
			busy = append(busy, Range{alignDown(r.Start), alignUp(r.End)})
		}
	}
	sort.Slice(busy, func(i, j int) bool { return busy[i].Start < busy[j].Start })

	center := uint64(0)
	haveNear := nearHi > nearLo
	if haveNear {
		center = nearLo + (nearHi-nearLo)/2
	}
	best, bestDist, found := uint64(0), ^uint64(0), false
	try := func(gs, ge uint64) {
		gs, ge = max(gs, lo), min(ge, hi)
		if ge <= gs || ge-gs < size {
			return
		}
		a := gs
		if haveNear {
			// Place the hole's middle as close to the Near ranges' middle as the gap allows.
			want := alignDown(max(center, size/2) - size/2)
			a = min(max(want, gs), ge-size)
		}
		d := dist(a+size/2, center)
		if !haveNear {
			d = a
		}
		if !found || d < bestDist {
			best, bestDist, found = a, d, true
		}
	}
	cursor := uint64(0)
	for _, r := range busy {
		if r.Start > cursor {
			try(cursor, r.Start)
		}
		cursor = max(cursor, r.End)
	}
	try(cursor, userSpaceEnd)
	if !found {
		return 0, noHole("")
	}
	return best, nil
}

// holeError is the message of a failed FindHole; it matches ErrNoHole.
type holeError struct{ msg string }

func (e holeError) Error() string        { return e.msg }
func (e holeError) Unwrap() error        { return ErrNoHole }
func (e holeError) Is(target error) bool { return target == ErrNoHole }

func dist(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return b - a
}

func nearText(near []Range) string {
	if len(near) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString(" within ±2 GiB of")
	for i, r := range near {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, " [%#x, %#x)", r.Start, r.End)
	}
	return b.String()
}
