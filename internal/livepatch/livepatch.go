// Package livepatch applies, reverts and reports hot patches on one running
// process, keeping the state of every patch inside the target in a region
// header so that any later run can tell exactly what is applied and finish or
// undo an operation that was interrupted.
//
// Trust: the bundle is trusted to be authentic (the caller checked it) but is
// still checked against the target: build-id and the hash of the old bytes of
// every site. The target's memory is not trusted: region headers read from it
// are bounds-checked before use. One hotfleet at a time works on a process;
// the region states make any crash of that hotfleet recoverable, not two
// concurrent writers. How apply, revert and recover work is in docs/engine.md;
// the region layout in docs/region-format.md.
package livepatch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"hotfleet/internal/bundle"
	"hotfleet/internal/proc"

	"golang.org/x/sys/unix"
)

// Options tune one operation on one process.
type Options struct {
	Deadline  time.Duration     // how long to retry a busy function (default 10s)
	Quiescent bool              // force quiescent mode for every function
	Log       *slog.Logger      // nil: no logging
	Failpoint func(name string) // test hook, called at named points; nil in production
}

// Result tells what an operation did to one process.
type Result struct {
	Pid       int
	PatchID   string
	Level     uint32
	Functions int           // sites switched (or restored, for revert)
	Replaced  string        // id of the level that was replaced, if any
	Pause     time.Duration // threads stopped, first interrupt to last detach
	Recovered []string      // what an interrupted earlier run left and what was done about it
	// AlreadyApplied is set when the same patch id and level was already
	// applied to every module: nothing was written.
	AlreadyApplied bool
	// Quiescent lists the functions switched in quiescent mode, with the
	// reason when it was forced (a branch into the overwritten bytes).
	Quiescent []string
}

// Applied is one region found in a process.
type Applied struct {
	Pid     int
	PatchID string
	Level   uint32
	BuildID []byte
	Module  string
	State   string // "prepared", "switching", "applied", "reverting", "reverted", "superseded"
	Region  uint64
	// Mapping is the region's name in /proc/PID/maps:
	// "[anon:hotfleet:ID:Ln]" (prctl), "/memfd:hotfleet:ID:Ln (deleted)"
	// (memfd-backed, kernels without anonymous mapping names), or "" when
	// the kernel allowed neither.
	Mapping   string
	Functions []AppliedFunc
	// Consistent tells whether the state and the bytes at the sites agree
	// and no operation was left half done; Problem explains otherwise.
	Consistent bool
	Problem    string
	AppliedAt  time.Time // zero when the switch never completed
}

// AppliedFunc is one site of a region and whether it jumps to the region now.
type AppliedFunc struct {
	Name   string
	Site   uint64
	New    uint64
	Active bool
}

var (
	// ErrBuildIDMismatch means the process maps the module the bundle names,
	// but another build of it.
	ErrBuildIDMismatch = errors.New("build-id mismatch")
	// ErrOldBytes means a function's current code is not what the bundle was
	// built against.
	ErrOldBytes = errors.New("old bytes differ")
	// ErrTooSmall means a function is too short to hold the jump.
	ErrTooSmall = errors.New("function too small")
	// ErrBusy means a function stayed busy past the deadline (see BusyError).
	ErrBusy = errors.New("function busy")
	// ErrNotApplied means the patch to revert is not applied.
	ErrNotApplied = errors.New("patch not applied")
	// ErrLevel means an equal or higher level of the module's patch is applied.
	ErrLevel = errors.New("patch level conflict")
	// ErrNotMapped means the process maps no module of the bundle.
	ErrNotMapped = errors.New("module not mapped")
)

// lpError carries a complete message while matching one of the sentinels.
type lpError struct {
	kind error
	msg  string
}

func (e *lpError) Error() string { return e.msg }
func (e *lpError) Unwrap() error { return e.kind }

func newErr(kind error, format string, args ...any) error {
	return &lpError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

const (
	// maxMapAttempts bounds the retries when the hole found in the maps was
	// taken by the target before our mmap reached it.
	maxMapAttempts = 5
	// brkReserve is kept free above the heap (or the executable when there is
	// no heap yet): brk grows the heap into it, and a region there would make
	// malloc fail in the target.
	brkReserve = 1 << 30
	// mmap and prctl constants, spelled out so the package needs no cgo.
	protRead          = 0x1
	protExec          = 0x4
	mapPrivate        = 0x02
	mapAnonymous      = 0x20
	mapFixed          = 0x10
	mapFixedNoreplace = 0x100000
	mfdCloexec        = 0x1
	mfdExec           = 0x10
	prSetVMA          = 0x53564d41
	prSetVMAAnonName  = 0
)

// session is one operation on one process.
type session struct {
	ctx  context.Context
	pid  int
	t    *proc.Tracer
	mem  *proc.Mem
	opts Options
	log  *slog.Logger
	// wroteSites is set before the first site is rewritten: from then on a
	// prepared region may be jumped to and must never be discarded.
	wroteSites bool
	// stackBuf is reused by every scan of the stacks of one operation.
	stackBuf []byte
}

func (o Options) withDefaults() Options {
	if o.Deadline <= 0 {
		o.Deadline = defaultDeadline
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

func attach(ctx context.Context, pid int, opts Options) (*session, error) {
	opts = opts.withDefaults()
	t, err := proc.Attach(ctx, pid)
	if err != nil {
		return nil, err
	}
	t.SetLogger(opts.Log)
	return &session{ctx: ctx, pid: pid, t: t, mem: t.Mem(), opts: opts, log: opts.Log}, nil
}

func (s *session) close() {
	if s.stackBuf != nil {
		b := s.stackBuf[:0]
		stackBufs.Put(&b)
		s.stackBuf = nil
	}
	if err := s.t.Close(); err != nil {
		s.log.Warn("close tracer", "pid", s.pid, "err", err)
	}
}

// sitePlan is one function of the bundle checked against the target.
type sitePlan struct {
	f       bundle.Func
	addr    uint64 // runtime address of the old function
	cur     []byte // its current bytes [addr, addr+OldSize)
	orig    []byte // the same with the replaced level's jump undone
	skip    uint8
	old     *siteRec // the replaced level's record for this site, nil if none
	rec     siteRec  // what the region header records
	reason  string   // why quiescent mode was forced
	quiesce bool
}

// modPlan is the part of the bundle for one module mapped in the target.
type modPlan struct {
	bm    *bundle.Module
	mod   proc.Module
	old   *region // the applied lower level being replaced, nil if none
	sites []*sitePlan
	hdr   header
	addr  uint64 // where the region was mapped
	stubs []byte // the sites' stubs, written after the code
}

// stubBase is the offset of the first stub in a region.
func stubBase(h *header) uint64 { return (h.CodeOffset + h.CodeSize + 15) &^ 15 }

// Apply applies the bundle to every module of it that the process maps, all
// sites switching in one stop of the world.
func Apply(ctx context.Context, pid int, b *bundle.Bundle, opts Options) (Result, error) {
	res := Result{Pid: pid}
	if b == nil {
		return res, errors.New("apply: no bundle given")
	}
	res.PatchID, res.Level = b.ID, b.Level
	wrap := func(err error) error { return fmt.Errorf("apply %s to pid %d: %w", b.ID, pid, err) }
	if err := b.Validate(); err != nil {
		return res, wrap(fmt.Errorf("%w: %w", bundle.ErrMalformed, err))
	}
	// Where an apply's time goes, for the debug log: a new process waits
	// for all of it, not only for the pause.
	var steps []any
	last := time.Now()
	mark := func(name string) {
		now := time.Now()
		steps = append(steps, name, now.Sub(last))
		last = now
	}
	s, err := attach(ctx, pid, opts)
	if err != nil {
		return res, wrap(err)
	}
	defer func() {
		s.close()
		mark("detach")
		s.log.Debug("apply steps", append([]any{"pid", pid, "patch", b.ID}, steps...)...)
	}()
	mark("attach")
	plans, err := s.matchModules(b)
	if err != nil {
		return res, wrap(err)
	}
	mark("modules")
	res.Recovered, err = s.recover()
	if err != nil {
		return res, wrap(fmt.Errorf("finish what an earlier run left: %w", err))
	}
	regions, err := s.regions()
	if err != nil {
		return res, wrap(err)
	}
	plans, err = checkLevels(b, plans, regions, pid)
	if err != nil {
		return res, wrap(err)
	}
	mark("regions")
	if len(plans) == 0 {
		res.AlreadyApplied = true
		return res, nil
	}
	for _, p := range plans {
		if err := s.checkSites(p); err != nil {
			return res, wrap(err)
		}
	}
	mark("check")
	if err := s.prepare(b, plans); err != nil {
		return res, wrap(err)
	}
	mark("prepare")
	s.opts.failpoint("prepared")
	// The stop, the scan, the writes and the resume run on the tracer's
	// thread as one sequence, so no thread hand-over lengthens the pause.
	release := noGC()
	err = s.t.Run(s.ctx, func() error { return s.switchOver(plans, &res) })
	release()
	if err != nil {
		if !s.wroteSites && !errors.Is(err, proc.ErrExited) {
			s.discard(plans)
		}
		return res, wrap(err)
	}
	mark("switch")
	s.opts.failpoint("applied")
	for _, p := range plans {
		for _, sp := range p.sites {
			if sp.quiesce {
				note := sp.f.Name
				if sp.reason != "" {
					note += ": " + sp.reason
				}
				res.Quiescent = append(res.Quiescent, note)
			}
		}
	}
	return res, nil
}

// matchModules pairs the bundle's modules with the process's by build-id.
func (s *session) matchModules(b *bundle.Bundle) ([]*modPlan, error) {
	mods, err := proc.Modules(s.pid)
	if err != nil {
		return nil, err
	}
	var plans []*modPlan
	for _, m := range mods {
		if bm := b.Module(m.BuildID); bm != nil {
			plans = append(plans, &modPlan{bm: bm, mod: m})
		}
	}
	if len(plans) > 0 {
		return plans, nil
	}
	// A process that exits while its modules are read shows fewer of them,
	// or none: that is its exit, not a wrong pid.
	if proc.Gone(s.pid) {
		return nil, proc.ExitedError{Pid: s.pid}
	}
	for _, bm := range b.Modules {
		base := filepath.Base(bm.Name)
		for _, m := range mods {
			if base != "" && base != "." && filepath.Base(m.Path) == base {
				return nil, newErr(ErrBuildIDMismatch, "pid %d maps %s with build-id %x, but the bundle is for %s: the bundle was built for another version of this binary", s.pid, m.Path, m.BuildID, bm.BuildID)
			}
		}
	}
	names := make([]string, len(b.Modules))
	for i, bm := range b.Modules {
		names[i] = fmt.Sprintf("%s (build-id %s)", bm.Name, bm.BuildID)
	}
	return nil, newErr(ErrNotMapped, "pid %d does not map any module of this bundle (%s); check the pid, or list the processes that do with --all", s.pid, strings.Join(names, ", "))
}

// regions lists the hotfleet regions in the process now.
func (s *session) regions() ([]*region, error) {
	maps, err := proc.ReadMaps(s.pid)
	if err != nil {
		return nil, err
	}
	return findRegions(s.mem, maps)
}

// checkLevels finds the applied region each module plan replaces and drops
// the modules where this very patch is already applied.
func checkLevels(b *bundle.Bundle, plans []*modPlan, regions []*region, pid int) ([]*modPlan, error) {
	var out []*modPlan
	for _, p := range plans {
		var live *region
		for _, r := range regions {
			if r.State == stateApplied && bytes.Equal(r.BuildID, p.mod.BuildID) {
				live = r
				break
			}
		}
		switch {
		case live == nil:
		case live.PatchID == b.ID && live.Level == b.Level:
			continue // already applied: nothing to write for this module
		case live.Level >= b.Level:
			return nil, newErr(ErrLevel, "level %d of %s is already applied to %s in pid %d; this bundle is level %d: revert it first or apply a higher level", live.Level, live.PatchID, p.mod.Path, pid, b.Level)
		default:
			p.old = live
		}
		out = append(out, p)
	}
	return out, nil
}

// checkSites reads every site and checks it against the bundle without
// stopping anything.
func (s *session) checkSites(p *modPlan) error {
	for _, f := range p.bm.Sites() {
		sp := &sitePlan{f: f, addr: p.mod.Bias + f.Site}
		sp.cur = make([]byte, f.OldSize)
		if err := s.mem.ReadAt(sp.cur, sp.addr); err != nil {
			return fmt.Errorf("read function %s at %#x: %w", f.Name, sp.addr, err)
		}
		sp.orig = bytes.Clone(sp.cur)
		if p.old != nil {
			sp.old = p.old.siteAt(sp.addr)
		}
		if o := sp.old; o != nil {
			at := int(o.JumpOff)
			if at+len(o.Jump) > len(sp.cur) || !bytes.Equal(sp.cur[at:at+len(o.Jump)], o.Jump) {
				return newErr(ErrOldBytes, "function %s at %#x does not hold the jump that %s level %d recorded: something else rewrote it; revert that patch or restart the process", f.Name, sp.addr, p.old.PatchID, p.old.Level)
			}
			copy(sp.orig[at:], o.Saved)
		}
		if sum := sha256.Sum256(sp.orig); !bytes.Equal(sum[:], f.OldHash) {
			return newErr(ErrOldBytes, "old bytes of %s at %#x differ from what the bundle expects: the function was already patched by something else, or the bundle was built for another build", f.Name, sp.addr)
		}
		sp.skip = entrySkip(sp.orig)
		if room := f.OldSize - uint32(sp.skip); room < jmpRel32Len {
			return newErr(ErrTooSmall, "function %s is %d bytes long; a jump needs %d bytes after its entry: it cannot be hot patched, patch its callers instead", f.Name, f.OldSize, jmpRel32Len+int(sp.skip))
		}
		sp.quiesce = s.opts.Quiescent || p.bm.FuncConsistency(f) == bundle.Quiescent
		p.sites = append(p.sites, sp)
	}
	return nil
}

// prepare maps one region per module, near the module, and writes its header
// and linked code. Nothing jumps to it yet, and nothing but one thread, for
// the mmap, is stopped.
func (s *session) prepare(b *bundle.Bundle, plans []*modPlan) error {
	for _, p := range plans {
		if err := s.prepareOne(b, p); err != nil {
			if !errors.Is(err, proc.ErrExited) {
				s.discard(plans)
			}
			return err
		}
	}
	return nil
}

func (s *session) prepareOne(b *bundle.Bundle, p *modPlan) error {
	h := &p.hdr
	h.State = statePrepared
	h.Level = b.Level
	h.Bias = p.mod.Bias
	h.PatchID = b.ID
	h.Module = p.mod.Path
	if len(h.Module) > maxModuleNameLen {
		h.Module = h.Module[len(h.Module)-maxModuleNameLen:]
	}
	h.MapName = mapName(b.ID, b.Level)
	h.BuildID = p.mod.BuildID
	h.CodeSize = uint64(len(p.bm.Code))
	for _, f := range p.bm.Funcs {
		if f.New {
			h.Flags |= flagHasNew
		}
	}
	if p.old != nil {
		h.Replaces = p.old.Addr
	}
	h.Sites = make([]siteRec, len(p.sites))
	for i, sp := range p.sites {
		h.Sites[i].Name = sp.f.Name
	}
	h.HeaderSize = uint32(headerSize(h))
	h.CodeOffset = uint64(h.HeaderSize)
	h.RegionSize = pageAlign(stubBase(h) + uint64(len(h.Sites))*stubSize)

	spec := proc.HoleSpec{
		Near:  []proc.Range{{Start: p.mod.Start, End: p.mod.End}},
		Size:  h.RegionSize,
		Low32: p.bm.NeedsLow32(),
	}
	for attempt := 1; ; attempt++ {
		maps, err := proc.ReadMaps(s.pid)
		if err != nil {
			return err
		}
		spec.Avoid = append(brkGap(s.pid, maps), anonExecNeighbours(maps)...)
		hint, err := proc.FindHole(maps, spec)
		if err != nil {
			return fmt.Errorf("map the patch code near %s: %w", p.mod.Path, err)
		}
		if _, err := s.t.StopOne(s.ctx); err != nil {
			return fmt.Errorf("stop a thread to map the patch code: %w", err)
		}
		addr, err := s.remote(syscall.SYS_MMAP, hint, h.RegionSize, protRead|protExec, mapPrivate|mapAnonymous|mapFixedNoreplace, ^uint64(0), 0)
		if errors.Is(err, syscall.EEXIST) && attempt < maxMapAttempts {
			s.resume()
			continue // the target mapped something there meanwhile
		}
		if err != nil {
			s.resume()
			return fmt.Errorf("map %d bytes at %#x: %w", h.RegionSize, hint, err)
		}
		if addr != hint {
			// A kernel without MAP_FIXED_NOREPLACE took the address as a hint.
			_, uerr := s.remote(syscall.SYS_MUNMAP, addr, h.RegionSize)
			s.resume()
			return fmt.Errorf("map %d bytes at %#x: the kernel placed them at %#x instead (unmapped again: %v); this kernel lacks MAP_FIXED_NOREPLACE (Linux 4.17+)", h.RegionSize, hint, addr, uerr)
		}
		p.addr = addr
		var enc []byte
		err = s.planSites(p)
		if err == nil {
			enc = h.encode()
			err = s.writeHeader(enc, addr)
		}
		if err == nil {
			// The name lets 'status' find the region from the maps alone.
			// It is read from the header just written, inside the target.
			s.nameRegion(addr, h.RegionSize, addr+mapNameOffset(enc))
			if !hasMagic(s.mem, addr) {
				// Backing by a memfd replaced the pages: write the header again.
				err = s.writeHeader(enc, addr)
			}
		}
		if err != nil {
			_, uerr := s.remote(syscall.SYS_MUNMAP, addr, h.RegionSize)
			s.resume()
			if uerr != nil {
				s.log.Warn("unmap region after failure", "pid", s.pid, "addr", addr, "err", uerr)
			}
			p.addr = 0
			return err
		}
		if _, err := s.t.Resume(); err != nil {
			return fmt.Errorf("resume after mapping the patch code: %w", err)
		}
		break
	}
	code, err := p.bm.Link(p.mod.Bias, p.addr+h.CodeOffset)
	if err != nil {
		return err
	}
	if err := s.mem.WriteAt(code, p.addr+h.CodeOffset); err != nil {
		return fmt.Errorf("write the patch code at %#x: %w", p.addr+h.CodeOffset, err)
	}
	if err := s.mem.WriteAt(p.stubs, p.addr+stubBase(h)); err != nil {
		return fmt.Errorf("write the switch stubs at %#x: %w", p.addr+stubBase(h), err)
	}
	return nil
}

// writeHeader writes an encoded region header at addr, the magic last: a
// hotfleet killed in the middle of a header spanning several pages leaves no
// magic, so the half-written header is never read as a region.
func (s *session) writeHeader(enc []byte, addr uint64) error {
	if err := s.mem.WriteAt(enc[len(regionMagic):], addr+uint64(len(regionMagic))); err != nil {
		return fmt.Errorf("write the region header at %#x: %w", addr, err)
	}
	if err := s.mem.WriteAt(enc[:len(regionMagic)], addr); err != nil {
		return fmt.Errorf("write the region header at %#x: %w", addr, err)
	}
	return nil
}

// nameRegion names the region [addr, addr+size) in /proc/PID/maps after the
// NUL-terminated name at nameAt in the target, with one thread stopped:
// prctl where the kernel names anonymous mappings, otherwise by mapping a
// memfd of that name over the same range. A region that neither names stays
// anonymous and is found by its magic. On return the range is mapped R-X,
// either by the original anonymous pages (header intact) or by fresh zero
// pages that need the header again; the caller checks the magic to tell.
func (s *session) nameRegion(addr, size, nameAt uint64) {
	if !noAnonNames.Load() {
		_, err := s.remote(syscall.SYS_PRCTL, prSetVMA, prSetVMAAnonName, addr, size, nameAt)
		if err == nil {
			return
		}
		if !errors.Is(err, syscall.EINVAL) {
			s.log.Info("region left unnamed", "pid", s.pid, "addr", addr, "err", err)
			return
		}
		// The kernel has no anonymous mapping names; it will not gain
		// them while hotfleet runs, and every remote call costs a few
		// hundred microseconds of the target's time.
		noAnonNames.Store(true)
	}
	if err := s.backByMemfd(addr, size, nameAt); err != nil {
		s.log.Info("region left unnamed", "pid", s.pid, "addr", addr, "err", err)
	}
}

// noAnonNames memoises that the kernel refused to name an anonymous mapping
// (CONFIG_ANON_VMA_NAME unset, or older than 5.17).
var noAnonNames atomic.Bool

// backByMemfd replaces the anonymous pages of [addr, addr+size) by a private
// R-X mapping of a new memfd named after the string at nameAt, so that
// /proc/PID/maps shows "/memfd:NAME (deleted)" for the region. The private
// mapping keeps /proc/PID/mem writes in the target's own copies; nothing is
// ever mapped writable. The fd is closed at once: the mapping holds the file.
func (s *session) backByMemfd(addr, size, nameAt uint64) error {
	fd, err := s.remote(unix.SYS_MEMFD_CREATE, nameAt, mfdCloexec|mfdExec)
	if errors.Is(err, syscall.EINVAL) {
		// Kernels before 6.3 know no MFD_EXEC (and need none to map it R-X).
		fd, err = s.remote(unix.SYS_MEMFD_CREATE, nameAt, mfdCloexec)
	}
	if err != nil {
		return fmt.Errorf("memfd_create: %w", err)
	}
	s.opts.failpoint("memfd")
	defer func() {
		if _, err := s.remote(syscall.SYS_CLOSE, fd); err != nil {
			s.log.Warn("close the region's memfd in the target", "pid", s.pid, "fd", fd, "err", err)
		}
	}()
	if _, err := s.remote(syscall.SYS_FTRUNCATE, fd, size); err != nil {
		return fmt.Errorf("ftruncate memfd %d to %d bytes: %w", fd, size, err)
	}
	got, err := s.remote(syscall.SYS_MMAP, addr, size, protRead|protExec, mapPrivate|mapFixed, fd, 0)
	if err == nil && got != addr {
		err = fmt.Errorf("mapped at %#x instead", got)
	}
	if err != nil {
		// A failed MAP_FIXED may have unmapped the range already: map
		// anonymous pages again unless the old ones are still there.
		_, rerr := s.remote(syscall.SYS_MMAP, addr, size, protRead|protExec, mapPrivate|mapAnonymous|mapFixedNoreplace, ^uint64(0), 0)
		if rerr != nil && !errors.Is(rerr, syscall.EEXIST) {
			s.log.Warn("map the region again after a failed memfd mapping", "pid", s.pid, "addr", addr, "err", rerr)
		}
		return fmt.Errorf("map memfd %d over the region at %#x: %w", fd, addr, err)
	}
	s.opts.failpoint("named")
	return nil
}

// planSites picks each site's jump now that the region's address is known,
// and decides which functions need quiescent mode.
func (s *session) planSites(p *modPlan) error {
	codeAddr := p.addr + p.hdr.CodeOffset
	base := stubBase(&p.hdr)
	p.stubs = bytes.Repeat([]byte{0xcc}, len(p.sites)*stubSize) // int3 between stubs
	for i, sp := range p.sites {
		f := sp.f
		from := sp.addr + uint64(sp.skip)
		to := codeAddr + uint64(f.Offset)
		room := f.OldSize - uint32(sp.skip)
		stubAt := base + uint64(i)*stubSize
		// The site jumps to its stub, which runs the new code once the
		// region's switch word is set; if the stub cannot be built, the site
		// jumps straight to the new code and switches when it is written.
		var off uint64 // where the stub goes while switched off: what the site runs now
		if o := sp.old; o != nil {
			off = o.New
			if o.Stub != 0 {
				off = p.old.Addr + uint64(o.Stub)
			}
		}
		jump := jumpBytes(from, p.addr+stubAt, room)
		var stub []byte
		if jump != nil {
			var ok bool
			stub, ok = buildStub(p.addr+stubAt, p.addr+offSwitch, to, off, sp.orig[sp.skip:], from, len(jump))
			if !ok {
				stub = nil
			}
		}
		if stub == nil {
			jump = jumpBytes(from, to, room)
		}
		if jump == nil {
			return newErr(ErrTooSmall, "function %s is %d bytes long; the patch code at %#x is out of rel32 reach and an absolute jump needs %d bytes after its entry", f.Name, f.OldSize, to, jmpAbs64Len+int(sp.skip))
		}
		if forced, why := branchIntoJump(sp.orig, sp.addr, sp.skip, uint8(len(jump))); forced {
			if !sp.quiesce {
				sp.reason = "switched in quiescent mode because " + why
				s.log.Info("quiescent mode forced", "pid", s.pid, "function", f.Name, "reason", why)
			}
			sp.quiesce = true
		}
		rec := siteRec{
			Site: sp.addr, New: to, JumpOff: sp.skip, JumpLen: uint8(len(jump)),
			OldSize: f.OldSize, NewSize: f.Size, Name: f.Name, Jump: jump,
			Saved: bytes.Clone(sp.orig[sp.skip : int(sp.skip)+len(jump)]),
		}
		if stub != nil {
			rec.Stub = uint32(stubAt)
			copy(p.stubs[uint64(i)*stubSize:], stub)
		}
		if sp.quiesce {
			rec.Flags |= siteQuiescent
		}
		sp.rec = rec
		p.hdr.Sites[i] = rec
	}
	return nil
}

// anonExecNeighbours are the pages right next to every anonymous executable
// mapping. A region placed there would merge with it into one mapping on
// kernels that cannot name mappings, hiding where each begins.
func anonExecNeighbours(maps []proc.Mapping) []proc.Range {
	var out []proc.Range
	for _, m := range maps {
		if candidate(m) {
			out = append(out, proc.Range{Start: m.Start - pageSize, End: m.End + pageSize})
		}
	}
	return out
}

// brkGap is the address range brk will grow the heap into.
func brkGap(pid int, maps []proc.Mapping) []proc.Range {
	for _, m := range maps {
		if m.Path == "[heap]" {
			return []proc.Range{{Start: m.Start, End: m.End + brkReserve}}
		}
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return nil
	}
	exe = strings.TrimSuffix(exe, " (deleted)")
	var end uint64
	for _, m := range maps {
		if m.Name() == exe && m.End > end {
			end = m.End
		}
	}
	if end == 0 {
		return nil
	}
	return []proc.Range{{Start: end, End: end + brkReserve}}
}

// blockRanges are the ranges no thread may be in while the sites of r (or
// the plan) are rewritten: the bytes being overwritten, and for quiescent
// functions the whole old function, its stub in the region at base (which
// runs old code while switched off) and the replaced level's code for it.
func blockRanges(r *siteRec, base uint64, old *siteRec, oldBase uint64) []busyRange {
	at := r.jumpAt()
	out := []busyRange{{lo: at + 1, hi: at + uint64(r.JumpLen), fn: r.Name}}
	if r.quiescent() {
		out = append(out, busyRange{lo: at + 1, hi: r.Site + uint64(r.OldSize), fn: r.Name})
		if r.Stub != 0 {
			out = append(out, busyRange{lo: base + uint64(r.Stub), hi: base + uint64(r.Stub) + stubSize, fn: r.Name})
		}
		if old != nil {
			out = append(out, busyRange{lo: old.New, hi: old.New + uint64(old.NewSize), fn: r.Name})
			if old.Stub != 0 {
				out = append(out, busyRange{lo: oldBase + uint64(old.Stub), hi: oldBase + uint64(old.Stub) + stubSize, fn: r.Name})
			}
		}
	}
	return out
}

// switchOver stops the world until every function is idle, redirects every
// site of every module plan, and records the new state in the regions.
func (s *session) switchOver(plans []*modPlan, res *Result) error {
	var block []busyRange
	var watch []*region
	for _, p := range plans {
		for _, sp := range p.sites {
			var oldBase uint64
			if p.old != nil {
				oldBase = p.old.Addr
			}
			block = append(block, blockRanges(&sp.rec, p.addr, sp.old, oldBase)...)
		}
		if p.old != nil {
			watch = append(watch, p.old)
			for i := range p.old.Sites {
				o := &p.old.Sites[i]
				if p.plannedSite(o.Site) == nil {
					block = append(block, blockRanges(o, p.old.Addr, nil, 0)...)
				}
			}
		}
	}
	used, err := s.stopIdle(block, watch)
	if err != nil {
		return err
	}
	var spans []span
	var checked []*sitePlan
	for _, p := range plans {
		for _, sp := range p.sites {
			spans = append(spans, span{addr: sp.addr, b: make([]byte, len(sp.cur))})
			checked = append(checked, sp)
		}
	}
	if err := readSpans(s.pid, s.mem, spans); err != nil {
		s.resume()
		return fmt.Errorf("re-read the functions to patch: %w", err)
	}
	for i, sp := range checked {
		if !bytes.Equal(spans[i].b, sp.cur) {
			s.resume()
			return newErr(ErrOldBytes, "function %s at %#x changed while the patch was being prepared: something else is rewriting it; nothing was switched", sp.f.Name, sp.addr)
		}
	}
	for _, p := range plans {
		if err := s.setState(p.addr, stateSwitching); err != nil {
			s.resume()
			return err
		}
	}
	s.opts.failpoint("switching")
	var writes []siteWrite
	for _, p := range plans {
		for _, sp := range p.sites {
			writes = append(writes, siteWrite{addr: sp.rec.jumpAt(), b: sp.rec.Jump, name: sp.f.Name})
		}
	}
	s.wroteSites = true
	if _, err := s.writeSites(writes); err != nil {
		s.resume()
		return fmt.Errorf("%w (the region stays in state switching; the next run finishes it)", err)
	}
	for _, p := range plans {
		res.Functions += len(p.sites)
		if err := s.completeSwitch(p.addr, p.hdr.Sites, p.old); err != nil {
			s.resume()
			return err
		}
	}
	pause, err := s.t.Resume()
	res.Pause = pause
	if err != nil {
		return fmt.Errorf("resume after the switch (the patch is applied): %w", err)
	}
	for i, old := range watch {
		res.Replaced = old.PatchID
		s.dropIfUnused(old, used[i])
	}
	return nil
}

func (p *modPlan) plannedSite(addr uint64) *sitePlan {
	for _, sp := range p.sites {
		if sp.addr == addr {
			return sp
		}
	}
	return nil
}

// oldOnlyRestores returns the writes that give the sites the replaced level
// patched, and the new level does not, their original bytes back. It reads
// the sites, so call it with the world stopped.
func (s *session) oldOnlyRestores(old *region, sites []siteRec) ([]siteWrite, error) {
	if old == nil {
		return nil, nil
	}
	var out []siteWrite
	for i := range old.Sites {
		o := &old.Sites[i]
		if hasSite(sites, o.Site) {
			continue
		}
		cur := make([]byte, len(o.Jump))
		if err := s.mem.ReadAt(cur, o.jumpAt()); err != nil {
			return nil, fmt.Errorf("read site of %s at %#x: %w", o.Name, o.jumpAt(), err)
		}
		if bytes.Equal(cur, o.Jump) {
			out = append(out, siteWrite{addr: o.jumpAt(), b: o.Saved, name: o.Name})
		}
	}
	return out, nil
}

// completeSwitch finishes a switch with the world stopped, once every site
// jumps to the region at addr: the switch word is set, so every stub runs the
// new code at once; the replaced level's stubs are switched off and no stub
// of the new region goes through them any more; the replaced level's sites
// that the new level does not patch get their original bytes back; the
// states are recorded. Every step is safe to repeat after a crash.
func (s *session) completeSwitch(addr uint64, sites []siteRec, old *region) error {
	if hasStubs(sites) {
		if err := s.setSwitch(addr, true); err != nil {
			return err
		}
	}
	if old != nil {
		if hasStubs(old.Sites) {
			if err := s.setSwitch(old.Addr, false); err != nil {
				return err
			}
		}
		var zero [4]byte
		for i := range sites {
			if st := sites[i].Stub; st != 0 {
				// "jmp OFF" becomes a jump to the stub's own copy of the
				// original instructions, which follows it.
				if err := s.mem.WriteAt(zero[:], addr+uint64(st)+stubOffJump+1); err != nil {
					return fmt.Errorf("unlink the stub of %s from the replaced level: %w", sites[i].Name, err)
				}
			}
		}
		restores, err := s.oldOnlyRestores(old, sites)
		if err != nil {
			return err
		}
		if _, err := s.writeSites(restores); err != nil {
			return err
		}
	}
	return s.finishSwitch(addr, old)
}

func hasStubs(sites []siteRec) bool {
	for i := range sites {
		if sites[i].Stub != 0 {
			return true
		}
	}
	return false
}

// setSwitch sets or clears a region's switch word with one aligned write.
func (s *session) setSwitch(addr uint64, on bool) error {
	var b [4]byte
	if on {
		b[0] = 1
	}
	if err := s.mem.WriteAt(b[:], addr+offSwitch); err != nil {
		return fmt.Errorf("switch region %#x: %w", addr, err)
	}
	return nil
}

// finishSwitch records a completed switch with the world stopped: the
// replaced region is marked superseded and the new one applied.
func (s *session) finishSwitch(addr uint64, old *region) error {
	if old != nil {
		if err := s.write64(old.Addr+offReplacedBy, addr); err != nil {
			return err
		}
		if err := s.setState(old.Addr, stateSuperseded); err != nil {
			return err
		}
		old.State = stateSuperseded
	}
	if err := s.write64(addr+offApplied, uint64(time.Now().UnixNano())); err != nil {
		return err
	}
	return s.setState(addr, stateApplied)
}

func hasSite(sites []siteRec, addr uint64) bool {
	for i := range sites {
		if sites[i].Site == addr {
			return true
		}
	}
	return false
}

// setState changes a region's state with one aligned 4-byte write, so a
// hotfleet killed at any moment leaves either the old or the new state.
func (s *session) setState(addr uint64, st state) error {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], uint32(st))
	if err := s.mem.WriteAt(b[:], addr+offState); err != nil {
		return fmt.Errorf("set region %#x to %s: %w", addr, st, err)
	}
	return nil
}

func (s *session) write64(addr, v uint64) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	if err := s.mem.WriteAt(b[:], addr); err != nil {
		return fmt.Errorf("write region field at %#x: %w", addr, err)
	}
	return nil
}

// discard unmaps the regions prepared by a failed apply; nothing jumps to
// them. A failure here leaves a prepared region the next run removes.
func (s *session) discard(plans []*modPlan) {
	for _, p := range plans {
		if p.addr == 0 {
			continue
		}
		r := &region{Addr: p.addr, header: p.hdr}
		if err := s.unmap(r); err != nil {
			s.log.Warn("remove prepared region", "pid", s.pid, "err", err)
		}
		p.addr = 0
	}
}

// dropIfUnused unmaps a superseded or reverted region when the stop that
// made it unreachable proved that no thread was in it or would return into
// it. Regions with new functions stay: a pointer to one may have escaped
// into the target's data, and calling through it after an unmap would crash.
func (s *session) dropIfUnused(r *region, used bool) bool {
	if used || r.Flags&flagHasNew != 0 {
		return false
	}
	if err := s.unmap(r); err != nil {
		s.log.Warn("unmap unused region", "pid", s.pid, "err", err)
		return false
	}
	return true
}
