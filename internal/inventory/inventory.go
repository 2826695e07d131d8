// Package inventory lists what runs on the device: the device's identity and,
// for every process, the ELF modules it maps, named by GNU build-id, with the
// package that owns each file on the host.
//
// How a module is identified. Candidate modules come from one read of
// /proc/PID/maps: the offset-0 mapping of every file (anonymous and special
// mappings are skipped while parsing, and the other mappings of the same
// file are never looked at). Each candidate is stat'ed through
// /proc/PID/map_files/START-END, which reaches the mapped file itself even
// when it was deleted or lives in another mount namespace; the build-id is
// cached by the file's identity (device, inode, size, mtime). On a miss the
// build-id is read from the file's PT_NOTE segments through the same
// map_files link: three small preads, no ptrace access to the process and no
// read of its memory. Reading the process's memory (proc.Modules) would cost
// an open of /proc/PID/mem and several reads for every module of every
// process on every scan, since memory has no identity to cache by; the file
// is the same bytes the loader mapped, because a file rewritten in place
// changes its size or mtime and so misses the cache. Within one scan a file
// seen in one process is not stat'ed again for the next process in the same
// mount namespace. Only the vDSO, which has no file, is read from memory,
// once per kernel image. When map_files cannot be used (no CAP_SYS_ADMIN or
// CAP_CHECKPOINT_RESTORE), the file is reached as /proc/PID/root/PATH and
// accepted only if its inode is the mapped one.
//
// Cost: a warm scan makes twelve system calls per process (stat and the
// head of status, the mount namespace, the executable link, maps in one
// read plus the end-of-file read) and one stat per file not yet seen in the
// scan. Hash digests an inventory so that unchanged ones need not be sent.
//
// Trust: processes are not trusted. Everything read from /proc and from the
// mapped files is parsed defensively with bounded sizes and never panics.
// Paths in maps are informational only (they may be "(deleted)", or mean
// something else in a container); modules are identified by build-id. The
// host's package database (dpkg, rpm) is trusted to describe the host's
// files; it is never applied to processes in another mount namespace.
package inventory

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Module is one ELF module (executable or shared library, not the vDSO unless
// it has a build-id) mapped by a process. An ELF file without a GNU build-id
// is listed with an empty BuildID: it runs, but no patch can name it.
type Module struct {
	BuildID string // lowercase hex of the GNU build-id
	Path    string // path as the process sees it (may end in " (deleted)")
	Package string // owning package, e.g. "libexpat1:amd64 2.5.0-1", "" when unknown
}

// Process is one running process (thread-group leader).
type Process struct {
	Pid       int
	StartTime uint64 // /proc/PID/stat field 22 (clock ticks since boot): (Pid, StartTime) names a process across pid reuse
	Comm, Exe string
	UID       int    // effective user id, as ps shows it
	MountNS   uint64 // inode of /proc/PID/ns/mnt
	Container bool   // its mount namespace differs from the host's (init's, else the agent's)
	Modules   []Module
}

// Options configure a Scanner.
type Options struct {
	Packages bool // look up owning packages (dpkg; rpm database if present)
	Log      *slog.Logger
}

// CacheStats counts build-id lookups since the Scanner was made. A hit is a
// module whose build-id was known without reading its file; a miss read the
// file. Entries is the number of files cached now.
type CacheStats struct{ Hits, Misses, Entries int }

// ErrKernelThread is returned by Scanner.Process for a kernel thread, which
// maps no modules.
var ErrKernelThread = errors.New("kernel thread, not a user process")

const (
	// keepScans: a file not mapped by any process for this many scans is
	// dropped from the cache; re-reading it later costs three small reads.
	keepScans = 3
	// maxCacheEntries bounds the cache against a device that maps ever new
	// files; real devices map a few thousand distinct files.
	maxCacheEntries = 1 << 16
	// mapsBufInit fits the maps file of a typical process in one read.
	mapsBufInit = 32 << 10
	// maxMapsBytes bounds one maps file: vm.max_map_count (65530 by
	// default) lines of at most a PATH_MAX path plus the fixed fields would
	// be 280 MiB; real ones stay far below, and a process beyond this is
	// listed without modules rather than exhausting the agent's memory.
	maxMapsBytes = 64 << 20
	// statBufSize holds /proc/PID/stat (52 numbers and a 16-byte comm) and
	// the head of /proc/PID/status up to its Uid line.
	statBufSize = 2048
	// maxVDSOBytes bounds the vDSO image read from a process: it is two pages
	// on x86-64 and arm64.
	maxVDSOBytes = 1 << 20
	// ctxCheckEvery: how many processes are scanned between checks of ctx.
	ctxCheckEvery = 64
	// pfKthread is the PF_KTHREAD bit of the flags field of /proc/PID/stat.
	pfKthread = 0x00200000
)

// fileKey is a file's identity for the build-id cache. A vDSO is keyed by
// vdso=true, its size in size, and the ELF class of the process in ino,
// since 32-bit processes get a different vDSO image.
type fileKey struct {
	dev, ino    uint64
	size, mtime int64
	vdso        bool
}

type cacheEntry struct {
	id       elfIdent
	elf      bool
	lastSeen uint64
}

// Scanner lists processes and their modules. It is safe for concurrent use.
type Scanner struct {
	opts         Options
	log          *slog.Logger
	selfPid      int
	selfNS       uint64
	pkgs         *packageDB
	warnedDenied atomic.Bool
	// noMapFiles makes every file go through /proc/PID/root, as it does
	// when the agent lacks the capability map_files needs; tests set it.
	noMapFiles bool

	mu    sync.Mutex
	gen   uint64 // number of Scans started
	cache map[fileKey]*cacheEntry
	stats CacheStats
}

// NewScanner returns a Scanner. The agent's own mount namespace is read now:
// processes outside it are containers.
func NewScanner(opts Options) *Scanner {
	s := &Scanner{opts: opts, log: opts.Log, selfPid: os.Getpid(), cache: make(map[fileKey]*cacheEntry)}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	// The host's mount namespace is init's. An agent sandboxed by systemd
	// (ProtectSystem=, PrivateTmp=) runs in a namespace of its own, and
	// comparing with that would make every process a container; where
	// init's cannot be read, the agent's own is the best guess.
	var st unix.Stat_t
	if err := unix.Stat("/proc/1/ns/mnt", &st); err == nil {
		s.selfNS = st.Ino
	} else if err := unix.Stat("/proc/self/ns/mnt", &st); err != nil {
		s.log.Warn("inventory: cannot read the host's mount namespace; every process will be treated as a container and get no package names",
			"err", err)
	} else {
		s.selfNS = st.Ino
	}
	if opts.Packages {
		s.pkgs = newPackageDB(s.log)
	}
	return s
}

// Stats returns the cache counters.
func (s *Scanner) Stats() CacheStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.Entries = len(s.cache)
	return st
}

// Scan lists every process but the caller itself and kernel threads;
// processes that vanish mid-scan are skipped, and so are zombies (but not a
// process whose main thread exited while others still run). The result is
// sorted by pid.
func (s *Scanner) Scan(ctx context.Context) ([]Process, error) {
	names, err := readDirNames("/proc")
	if err != nil {
		return nil, fmt.Errorf("scan processes: list /proc: %w; is procfs mounted?", err)
	}
	s.mu.Lock()
	s.gen++
	gen := s.gen
	s.mu.Unlock()
	st := s.newScanState(ctx, gen)

	out := make([]Process, 0, len(names))
	var denied int
	var firstDenied error
	for i, name := range names {
		if i%ctxCheckEvery == 0 {
			if err := ctx.Err(); err != nil {
				st.finish()
				return nil, fmt.Errorf("scan processes: %w", err)
			}
		}
		pid, err := strconv.Atoi(name)
		if err != nil || pid <= 0 || pid == s.selfPid {
			continue
		}
		p, err := st.process(ctx, pid)
		switch {
		case err == nil:
			out = append(out, p)
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, ErrKernelThread):
		case errors.Is(err, fs.ErrPermission):
			denied++
			if firstDenied == nil {
				firstDenied = err
			}
		default:
			s.log.Debug("inventory: process skipped", "pid", pid, "err", err)
		}
	}
	st.finish()
	s.evict(gen)
	if denied > 0 {
		// Once is enough to tell the operator; every scan would flood the log.
		level := slog.LevelDebug
		if !s.warnedDenied.Swap(true) {
			level = slog.LevelWarn
		}
		s.log.Log(ctx, level, "inventory: processes could not be read and are missing from the inventory; run the agent as root",
			"count", denied, "first", firstDenied)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Pid < out[j].Pid })
	return out, nil
}

// Process scans one process; returns an error wrapping os.ErrNotExist when it
// is gone (or a zombie), ErrKernelThread for a kernel thread.
func (s *Scanner) Process(ctx context.Context, pid int) (Process, error) {
	if err := ctx.Err(); err != nil {
		return Process{}, fmt.Errorf("scan pid %d: %w", pid, err)
	}
	s.mu.Lock()
	gen := s.gen
	s.mu.Unlock()
	st := s.newScanState(ctx, gen)
	p, err := st.process(ctx, pid)
	st.finish()
	if err != nil {
		return Process{}, err
	}
	return p, nil
}

// evict drops cache entries not seen in the last keepScans scans.
func (s *Scanner) evict(gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, e := range s.cache {
		if gen-e.lastSeen >= keepScans && e.lastSeen < gen {
			delete(s.cache, k)
		}
	}
}

// scanState is the state of one Scan or Process call: buffers reused from
// process to process, and what is already known about files in this scan.
type scanState struct {
	s            *Scanner
	ctx          context.Context
	gen          uint64
	memo         map[string]memoVal
	key, pathBuf []byte
	base         []byte // "/proc/PID/" of the process being read
	maps         []byte
	small        []byte
	link         []byte
	bufs         *scanBufs
	hits, misses int
}

// memoVal is what one scan learnt about one mapped file, keyed by the
// reading process's mount namespace, the device and inode maps shows, and
// the path. The namespace and path are part of the key because the device
// number in maps is the filesystem's, which btrfs subvolumes share while
// reusing inode numbers.
type memoVal struct {
	mod   Module
	class byte
	ok    bool // false: not a module
}

func (s *Scanner) newScanState(ctx context.Context, gen uint64) *scanState {
	if s.pkgs != nil {
		s.pkgs.refresh()
	}
	b, _ := bufPool.Get().(*scanBufs)
	if b == nil {
		b = &scanBufs{maps: make([]byte, mapsBufInit), small: make([]byte, statBufSize), link: make([]byte, unix.PathMax)}
	}
	return &scanState{
		s: s, ctx: ctx, gen: gen,
		memo:  make(map[string]memoVal),
		bufs:  b,
		maps:  b.maps,
		small: b.small,
		link:  b.link,
	}
}

// scanBufs are the read buffers of a scan, reused across Process calls,
// which the agent makes for every process that starts.
type scanBufs struct{ maps, small, link []byte }

var bufPool sync.Pool

func (st *scanState) finish() {
	if st.bufs != nil {
		if cap(st.maps) <= 4*mapsBufInit { // do not pin a huge process's maps
			st.bufs.maps = st.maps
		}
		bufPool.Put(st.bufs)
		st.bufs = nil
	}
	st.s.mu.Lock()
	st.s.stats.Hits += st.hits
	st.s.stats.Misses += st.misses
	st.s.mu.Unlock()
}

// procErr classifies a failure to read /proc/PID/what: a process that is
// gone wraps os.ErrNotExist.
func procErr(pid int, what string, err error) error {
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("read %s of pid %d: the process is gone: %w (%w)", what, pid, fs.ErrNotExist, err)
	}
	if errors.Is(err, unix.EACCES) || errors.Is(err, unix.EPERM) {
		return fmt.Errorf("read %s of pid %d: %w; run the agent as root", what, pid, err)
	}
	return fmt.Errorf("read %s of pid %d: %w", what, pid, err)
}

// setBase makes procPath name files of /proc/PID/, or of
// /proc/PID/task/TID/ when tid is not 0.
func (st *scanState) setBase(pid, tid int) {
	b := append(st.base[:0], "/proc/"...)
	b = strconv.AppendInt(b, int64(pid), 10)
	b = append(b, '/')
	if tid != 0 {
		b = append(b, "task/"...)
		b = strconv.AppendInt(b, int64(tid), 10)
		b = append(b, '/')
	}
	st.base = b
}

// procPath names a file of the process set by setBase.
func (st *scanState) procPath(what string) string {
	b := append(st.pathBuf[:0], st.base...)
	b = append(b, what...)
	st.pathBuf = b
	return string(b)
}

// readProcFile reads a /proc file into buf, growing it up to limit, and
// returns the bytes read. With head set, one read is enough: the caller
// needs only the start of the file.
func readProcFile(path string, buf []byte, limit int, head bool) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return buf[:0], err
	}
	defer unix.Close(fd)
	n := 0
	for {
		if n == len(buf) {
			if len(buf) >= limit {
				return buf[:n], fmt.Errorf("%s is larger than %d bytes", path, limit)
			}
			nb := make([]byte, min(2*len(buf), limit))
			copy(nb, buf[:n])
			buf = nb
		}
		m, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return buf[:n], err
		}
		if m <= 0 {
			return buf[:n], nil
		}
		n += m
		if head {
			return buf[:n], nil
		}
	}
}

// process reads one process.
func (st *scanState) process(ctx context.Context, pid int) (Process, error) {
	p := Process{Pid: pid}
	st.setBase(pid, 0)
	data, err := readProcFile(st.procPath("stat"), st.small, statBufSize, true)
	if err != nil {
		return p, procErr(pid, "stat", err)
	}
	state, flags, err := parseStat(data, &p)
	if err != nil {
		return p, fmt.Errorf("read stat of pid %d: %w", pid, err)
	}
	if state == 'Z' || state == 'X' {
		// A leader that called pthread_exit is a zombie while its other
		// threads run the process's code: read it through one of them.
		// Thread directories have no map_files, so its files are reached
		// through the thread's root (live files only).
		tid := liveThread(pid)
		if tid == 0 {
			return p, fmt.Errorf("pid %d is a zombie: %w", pid, fs.ErrNotExist)
		}
		st.setBase(pid, tid)
	}
	if flags&pfKthread != 0 {
		return p, fmt.Errorf("pid %d: %w", pid, ErrKernelThread)
	}

	data, err = readProcFile(st.procPath("status"), st.small, statBufSize, true)
	if err != nil {
		return p, procErr(pid, "status", err)
	}
	tgid, uid, ok := parseStatus(data)
	if !ok {
		return p, fmt.Errorf("read status of pid %d: no Tgid or Uid line in %q", pid, data)
	}
	if tgid != pid {
		return p, fmt.Errorf("pid %d is a thread of process %d; scan the process instead", pid, tgid)
	}
	p.UID = uid

	var sb unix.Stat_t
	if err := unix.Stat(st.procPath("ns/mnt"), &sb); err != nil {
		return p, procErr(pid, "mount namespace", err)
	}
	p.MountNS = sb.Ino
	p.Container = st.s.selfNS == 0 || p.MountNS != st.s.selfNS

	n, err := unix.Readlink(st.procPath("exe"), st.link)
	if err != nil {
		return p, procErr(pid, "executable", err)
	}
	p.Exe = string(st.link[:n])

	st.maps, err = readProcFile(st.procPath("maps"), st.maps[:cap(st.maps)], maxMapsBytes, false)
	if err != nil {
		return p, procErr(pid, "memory map", err)
	}
	if len(st.maps) == 0 {
		// Only an exiting process or a kernel thread has no mappings.
		return p, fmt.Errorf("pid %d has no memory mappings; it is exiting: %w", pid, fs.ErrNotExist)
	}
	if err := st.modules(ctx, &p); err != nil {
		return p, err
	}
	return p, nil
}

// liveThread returns a thread of pid that is neither a zombie nor dead, or 0.
func liveThread(pid int) int {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	names, err := readDirNames(dir)
	if err != nil {
		return 0
	}
	var buf [statBufSize]byte
	for _, name := range names {
		tid, err := strconv.Atoi(name)
		if err != nil || tid == pid {
			continue
		}
		data, err := readProcFile(dir+"/"+name+"/stat", buf[:], statBufSize, true)
		if err != nil {
			continue
		}
		var p Process
		if state, _, err := parseStat(data, &p); err == nil && state != 'Z' && state != 'X' {
			return tid
		}
	}
	return 0
}

func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// parseStat fills Comm and StartTime from /proc/PID/stat and returns the
// state letter and the flags.
func parseStat(data []byte, p *Process) (state byte, flags uint64, err error) {
	// The command name may hold spaces and parentheses: it runs from the
	// first '(' to the last ')'.
	open := bytes.IndexByte(data, '(')
	closing := bytes.LastIndexByte(data, ')')
	if open < 0 || closing < open || closing+2 >= len(data) {
		return 0, 0, fmt.Errorf("malformed stat %q", data)
	}
	p.Comm = string(data[open+1 : closing])
	rest := data[closing+2:]
	state = rest[0]
	// Fields after the state, numbered as in proc(5): state is field 3.
	field := 3
	for len(rest) > 0 && field <= 22 {
		var f []byte
		if i := bytes.IndexByte(rest, ' '); i >= 0 {
			f, rest = rest[:i], rest[i+1:]
		} else {
			f, rest = bytes.TrimRight(rest, "\n"), nil
		}
		switch field {
		case 9:
			flags, _ = strconv.ParseUint(string(f), 10, 64)
		case 22:
			v, perr := strconv.ParseUint(string(f), 10, 64)
			if perr != nil {
				return 0, 0, fmt.Errorf("start time %q: %w", f, perr)
			}
			p.StartTime = v
			return state, flags, nil
		}
		field++
	}
	return 0, 0, fmt.Errorf("stat has no field 22 (start time): %q", data)
}

// parseStatus finds the Tgid and the effective uid in the head of
// /proc/PID/status.
func parseStatus(data []byte) (tgid, uid int, ok bool) {
	var haveTgid, haveUID bool
	for len(data) > 0 && !(haveTgid && haveUID) {
		var line []byte
		line, data = nextLine(data)
		switch {
		case bytes.HasPrefix(line, []byte("Tgid:")):
			v, err := strconv.Atoi(string(bytes.TrimSpace(line[5:])))
			tgid, haveTgid = v, err == nil
		case bytes.HasPrefix(line, []byte("Uid:")):
			f := bytes.Fields(line[4:]) // real, effective, saved, filesystem
			if len(f) >= 2 {
				v, err := strconv.Atoi(string(f[1]))
				uid, haveUID = v, err == nil
			}
		}
	}
	return tgid, uid, haveTgid && haveUID
}

// modules resolves the candidate modules of p from the maps text in st.maps.
func (st *scanState) modules(ctx context.Context, p *Process) error {
	type seenFile struct{ major, minor, inode uint64 }
	var seen [32]seenFile
	seenN := 0
	var vdso *mapLine
	var vdsoLine mapLine
	exeClass := byte(0)
	data := st.maps
	for len(data) > 0 {
		var line []byte
		line, data = nextLine(data)
		m, ok := parseMapLine(line)
		if !ok {
			continue // a line we cannot parse names no file we could use
		}
		if len(m.path) == 0 || m.offset != 0 {
			continue
		}
		if m.path[0] != '/' || m.inode == 0 {
			if string(m.path) == "[vdso]" {
				vdsoLine = m
				vdso = &vdsoLine
			}
			continue // anonymous memory, heap, stack, vvar: never modules
		}
		// The same file mapped again at offset 0 (rare) is the same module.
		dup := false
		for _, f := range seen[:min(seenN, len(seen))] {
			if f.major == m.major && f.minor == m.minor && f.inode == m.inode {
				dup = true
				break
			}
		}
		if dup {
			continue
		}
		if seenN < len(seen) {
			seen[seenN] = seenFile{m.major, m.minor, m.inode}
		}
		seenN++
		v := st.file(ctx, p, m)
		if !v.ok {
			continue
		}
		if v.mod.Path == p.Exe {
			exeClass = v.class
		}
		p.Modules = append(p.Modules, v.mod)
	}
	if vdso != nil {
		if v := st.vdso(p, *vdso, exeClass); v.ok && v.mod.BuildID != "" {
			p.Modules = append(p.Modules, v.mod)
		}
	}
	return nil
}

// file resolves one mapped file of p to a module.
func (st *scanState) file(ctx context.Context, p *Process, m mapLine) memoVal {
	k := append(st.key[:0], 'f')
	k = appendU64(k, p.MountNS)
	k = appendU64(k, m.major)
	k = appendU64(k, m.minor)
	k = appendU64(k, m.inode)
	k = append(k, m.path...)
	st.key = k
	if v, ok := st.memo[string(k)]; ok {
		if v.ok {
			st.hits++
		}
		return v
	}
	var v memoVal
	path := string(m.path)
	link := st.mapFilesPath(m)
	var sb unix.Stat_t
	var err error = unix.ENOTSUP
	if !st.s.noMapFiles {
		err = unix.Stat(link, &sb)
	}
	if err != nil {
		// No CAP_SYS_ADMIN/CAP_CHECKPOINT_RESTORE, or the mapping changed:
		// reach the file by its path in the process's root instead, and
		// accept it only if it is still the mapped inode.
		name := trimDeleted(path)
		if name == path {
			link = st.procPath("root") + path
			if err = unix.Stat(link, &sb); err == nil && sb.Ino != m.inode {
				err = fmt.Errorf("%s is no longer the mapped file", path)
			}
		}
		if err != nil {
			return v // not memoised: another process may let us reach it
		}
	}
	if sb.Mode&unix.S_IFMT != unix.S_IFREG {
		st.memo[string(k)] = v // a device or socket: never opened, never a module
		return v
	}
	fk := fileKey{dev: sb.Dev, ino: sb.Ino, size: sb.Size, mtime: sb.Mtim.Nano()}
	e, ok := st.s.lookup(fk, st.gen)
	if !ok {
		id, rerr := readFileIdent(link)
		if rerr != nil && !errors.Is(rerr, errNotELF) {
			st.s.log.Debug("inventory: cannot read mapped file", "pid", p.Pid, "path", path, "err", rerr)
			return v
		}
		st.misses++
		e = cacheEntry{id: id, elf: rerr == nil}
		st.s.store(fk, e, st.gen)
	} else if e.elf {
		st.hits++
	}
	if e.elf {
		v = memoVal{ok: true, class: e.id.class, mod: Module{BuildID: e.id.buildID, Path: path}}
		if st.s.pkgs != nil && !p.Container && trimDeleted(path) == path {
			v.mod.Package = st.s.pkgs.lookup(ctx, path)
		}
	}
	st.memo[string(k)] = v
	return v
}

// vdso resolves the vDSO of p, read from its memory once per image.
func (st *scanState) vdso(p *Process, m mapLine, class byte) memoVal {
	if class == 0 {
		class = 2 // a 64-bit agent's peers are 64-bit unless shown otherwise
	}
	size := m.end - m.start
	if size == 0 || size > maxVDSOBytes {
		return memoVal{}
	}
	fk := fileKey{vdso: true, size: int64(size), ino: uint64(class)}
	k := append(st.key[:0], 'v')
	k = appendU64(k, size)
	k = append(k, class)
	st.key = k
	if v, ok := st.memo[string(k)]; ok {
		if v.ok {
			st.hits++
		}
		return v
	}
	var v memoVal
	e, ok := st.s.lookup(fk, st.gen)
	if !ok {
		img := make([]byte, size)
		fd, err := unix.Open(st.procPath("mem"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return v
		}
		n, err := unix.Pread(fd, img, int64(m.start))
		unix.Close(fd)
		if err != nil || n != len(img) {
			return v
		}
		id, err := readELFIdent(bytes.NewReader(img))
		st.misses++
		e = cacheEntry{id: id, elf: err == nil}
		st.s.store(fk, e, st.gen)
	} else if e.elf {
		st.hits++
	}
	if e.elf {
		v = memoVal{ok: true, class: e.id.class, mod: Module{BuildID: e.id.buildID, Path: "[vdso]"}}
	}
	st.memo[string(k)] = v
	return v
}

func (s *Scanner) lookup(k fileKey, gen uint64) (cacheEntry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.cache[k]
	if !ok {
		return cacheEntry{}, false
	}
	if e.lastSeen < gen {
		e.lastSeen = gen
	}
	return *e, true
}

func (s *Scanner) store(k fileKey, e cacheEntry, gen uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.cache) >= maxCacheEntries {
		return // full: the next scan's eviction makes room
	}
	e.lastSeen = gen
	s.cache[k] = &e
}

// FileBuildID returns the GNU build-id (hex) of the ELF file at path, ""
// when it is not a regular ELF file with one. It shares the scan's cache by
// file identity, so asking again about an unchanged file costs one stat.
func (s *Scanner) FileBuildID(path string) string {
	var sb unix.Stat_t
	if err := unix.Stat(path, &sb); err != nil || sb.Mode&unix.S_IFMT != unix.S_IFREG {
		return ""
	}
	fk := fileKey{dev: sb.Dev, ino: sb.Ino, size: sb.Size, mtime: sb.Mtim.Nano()}
	s.mu.Lock()
	gen := s.gen
	s.mu.Unlock()
	e, ok := s.lookup(fk, gen)
	if !ok {
		id, err := readFileIdent(path)
		if err != nil && !errors.Is(err, errNotELF) {
			return ""
		}
		e = cacheEntry{id: id, elf: err == nil}
		s.store(fk, e, gen)
	}
	if !e.elf {
		return ""
	}
	return e.id.buildID
}

func (st *scanState) mapFilesPath(m mapLine) string {
	b := append(st.pathBuf[:0], st.base...)
	b = append(b, "map_files/"...)
	b = strconv.AppendUint(b, m.start, 16)
	b = append(b, '-')
	b = strconv.AppendUint(b, m.end, 16)
	st.pathBuf = b
	return string(b)
}

// readFileIdent opens a mapped file (through its map_files link or its
// path) and reads its build-id.
func readFileIdent(path string) (elfIdent, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return elfIdent{}, fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	return readELFIdent(fdReader(fd))
}

// fdReader is an io.ReaderAt over a raw descriptor, so that the cold path
// costs no *os.File (and its poller registration) per file.
type fdReader int

func (r fdReader) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		m, err := unix.Pread(int(r), p[n:], off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			return n, io.EOF
		}
		n += m
	}
	return n, nil
}

func trimDeleted(path string) string {
	const deleted = " (deleted)"
	if len(path) > len(deleted) && path[len(path)-len(deleted):] == deleted {
		return path[:len(path)-len(deleted)]
	}
	return path
}

func appendU64(b []byte, v uint64) []byte {
	return append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24), byte(v>>32), byte(v>>40), byte(v>>48), byte(v>>56))
}
