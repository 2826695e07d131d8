package procwatch

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

const (
	// openBuffer is the FileOpens channel's capacity: every start of a
	// program linked against a watched library opens it, so bursts come with
	// exec storms; see eventBuffer.
	openBuffer = 4096
	// inotifyBuf is the read buffer: an event is 16 bytes plus a name, and
	// watches on files carry no name, so a page holds some 250 events.
	inotifyBuf = 4096
	// inotifyEventLen is sizeof(struct inotify_event) without the name.
	inotifyEventLen = 16
	// watchMask: IN_OPEN is the event wanted. IN_ATTRIB comes when the
	// file's link count drops, which is how a package upgrade that renames a
	// new file over the old one shows; the watch then moves to the new file.
	watchMask = unix.IN_OPEN | unix.IN_ATTRIB
)

// ErrClosed is returned by FileOpens methods after Close.
var ErrClosed = errors.New("file-open watcher is closed")

// FileOpens tells when any process opens one of a set of files, or any file
// in a watched directory (then the event is the directory joined with the
// file's name). The dynamic
// loader opens a library just before it maps it, so a watched library's open
// is the moment to look at the processes that may be about to map it.
//
// Watches follow the file (inode), not the name, as inotify does; when a
// watched path is replaced by a rename (a package upgrade) the watch moves to
// the new file. A path whose file is deleted and not replaced is dropped from
// the set; Watch it again when it reappears.
type FileOpens struct {
	file   *os.File
	fd     int
	events chan string
	lost   atomic.Uint64
	exited chan struct{}

	mu     sync.Mutex
	closed bool
	byPath map[string]watch
	byWD   map[int][]string
}

type watch struct {
	wd       int
	dev, ino uint64
}

// NewFileOpens starts an inotify instance and its reader goroutine.
func NewFileOpens() (*FileOpens, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("start inotify for library opens: %w (raise fs.inotify.max_user_instances if EMFILE)", err)
	}
	f := &FileOpens{
		file:   os.NewFile(uintptr(fd), "inotify"),
		fd:     fd,
		events: make(chan string, openBuffer),
		exited: make(chan struct{}),
		byPath: make(map[string]watch),
		byWD:   make(map[int][]string),
	}
	rc, err := f.file.SyscallConn()
	if err != nil {
		f.file.Close()
		return nil, fmt.Errorf("poll the inotify descriptor: %w", err)
	}
	go f.run(rc)
	return f, nil
}

// Watch adds path to the set. It is idempotent. The path may go through
// /proc/PID/root to reach a file inside a container.
func (f *FileOpens) Watch(path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return fmt.Errorf("watch %s: %w", path, ErrClosed)
	}
	if _, ok := f.byPath[path]; ok {
		return nil
	}
	return f.addLocked(path)
}

func (f *FileOpens) addLocked(path string) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fmt.Errorf("watch opens of %s: %w", path, err)
	}
	wd, err := unix.InotifyAddWatch(f.fd, path, watchMask)
	if err != nil {
		if errors.Is(err, unix.ENOSPC) {
			return fmt.Errorf("watch opens of %s: %w (raise fs.inotify.max_user_watches)", path, err)
		}
		return fmt.Errorf("watch opens of %s: %w", path, err)
	}
	f.byPath[path] = watch{wd: wd, dev: st.Dev, ino: st.Ino}
	f.byWD[wd] = append(f.byWD[wd], path)
	return nil
}

// Unwatch removes path from the set; a path not in it is not an error.
func (f *FileOpens) Unwatch(path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return fmt.Errorf("unwatch %s: %w", path, ErrClosed)
	}
	w, ok := f.byPath[path]
	if !ok {
		return nil
	}
	if f.dropLocked(path, w.wd) {
		// EINVAL: the kernel removed the watch already (file deleted).
		if _, err := unix.InotifyRmWatch(f.fd, uint32(w.wd)); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unwatch opens of %s: %w", path, err)
		}
	}
	return nil
}

// dropLocked forgets path and reports whether it was the last path on wd
// (several paths may name one file and share its watch).
func (f *FileOpens) dropLocked(path string, wd int) bool {
	delete(f.byPath, path)
	rest := f.byWD[wd][:0]
	for _, p := range f.byWD[wd] {
		if p != path {
			rest = append(rest, p)
		}
	}
	if len(rest) == 0 {
		delete(f.byWD, wd)
		return true
	}
	f.byWD[wd] = rest
	return false
}

// Events delivers the watched path that was opened, once per path naming the
// file. Opens in quick succession that the reader has not caught up with may
// come as one (inotify merges identical events). It is closed after Close.
func (f *FileOpens) Events() <-chan string { return f.events }

// Lost counts opens not delivered: the channel was full, or the kernel's
// queue overflowed (IN_Q_OVERFLOW, counted as one).
func (f *FileOpens) Lost() uint64 { return f.lost.Load() }

// Close stops watching and waits until the Events channel is closed.
func (f *FileOpens) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		<-f.exited
		return nil
	}
	f.closed = true
	f.mu.Unlock()
	err := f.file.Close()
	<-f.exited
	if err != nil {
		return fmt.Errorf("close inotify: %w", err)
	}
	return nil
}

func (f *FileOpens) run(rc interface {
	Read(func(uintptr) bool) error
}) {
	defer close(f.exited)
	defer close(f.events)
	buf := make([]byte, inotifyBuf)
	var paths []string
	for {
		var n int
		var rerr error
		if err := rc.Read(func(fd uintptr) bool {
			n, rerr = unix.Read(int(fd), buf)
			return !errors.Is(rerr, unix.EAGAIN) && !errors.Is(rerr, unix.EINTR)
		}); err != nil {
			return // closed
		}
		if rerr != nil || n <= 0 {
			continue
		}
		b := buf[:n]
		for len(b) >= inotifyEventLen {
			wd := int(int32(ne.Uint32(b[0:4])))
			mask := ne.Uint32(b[4:8])
			step := inotifyEventLen + int(ne.Uint32(b[12:16]))
			if step > len(b) {
				break // the kernel never splits an event; a short one is garbage
			}
			// A watched directory reports opens of the files in it with
			// the file's name (NUL-padded).
			name := string(bytes.TrimRight(b[inotifyEventLen:step], "\x00"))
			b = b[step:]
			paths = f.handle(wd, mask, paths[:0])
			if name != "" {
				for i := range paths {
					paths[i] = filepath.Join(paths[i], name)
				}
			}
			for _, p := range paths {
				select {
				case f.events <- p:
				default:
					f.lost.Add(1)
				}
			}
		}
	}
}

// handle updates the watch set for one inotify event and returns the paths
// to deliver.
func (f *FileOpens) handle(wd int, mask uint32, out []string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return out
	}
	switch {
	case mask&unix.IN_Q_OVERFLOW != 0:
		f.lost.Add(1)
	case mask&unix.IN_IGNORED != 0:
		// The kernel removed the watch (file deleted, or our Unwatch).
		for _, p := range f.byWD[wd] {
			delete(f.byPath, p)
		}
		delete(f.byWD, wd)
	case mask&unix.IN_OPEN != 0:
		out = append(out, f.byWD[wd]...)
	case mask&unix.IN_ATTRIB != 0:
		// Maybe renamed over: move each path whose name now leads to
		// another file onto that file.
		for _, p := range append([]string(nil), f.byWD[wd]...) {
			var st unix.Stat_t
			old := f.byPath[p]
			if unix.Stat(p, &st) != nil || (st.Dev == old.dev && st.Ino == old.ino) {
				continue
			}
			last := f.dropLocked(p, wd)
			if err := f.addLocked(p); err != nil {
				f.byPath[p] = old // keep the old file's watch rather than nothing
				f.byWD[wd] = append(f.byWD[wd], p)
				continue
			}
			if last {
				unix.InotifyRmWatch(f.fd, uint32(wd))
			}
		}
	}
	return out
}
