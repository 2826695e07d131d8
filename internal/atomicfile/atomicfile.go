// Package atomicfile replaces small files (the agent's local state) so that a
// crash or kill -9 at any instant leaves either the old or the new content,
// never a mix and never an empty file.
//
// Trust: the directory is private to the agent (root-owned); the package does
// not defend against another user swapping files under it. Two processes must
// not replace the same file at the same time; within one process concurrent
// writers of one path are serialised.
package atomicfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// ErrCorrupt marks a file that exists but does not hold what it should (not
// JSON, or truncated by something other than this package).
var ErrCorrupt = errors.New("file is corrupt")

// maxReadBytes bounds what ReadJSON reads: state files are kilobytes; a file
// this large is not ours and would only exhaust memory.
const maxReadBytes = 256 << 20

// pathLocks serialises writers of one path inside this process, so that one
// writer's leftover cleanup never removes another's temp file in flight.
var pathLocks sync.Map // absolute path -> *sync.Mutex

func lockPath(path string) func() {
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	m, _ := pathLocks.LoadOrStore(abs, new(sync.Mutex))
	mu := m.(*sync.Mutex)
	mu.Lock()
	return mu.Unlock
}

// tempPrefix is the prefix of the temp files of path: hidden, so that tools
// globbing the directory do not pick up half-written state.
func tempPrefix(path string) string {
	return "." + filepath.Base(path) + ".tmp-"
}

// WriteFile writes data to path so that after a crash at any point the file
// holds either the old or the new content, never a mix: temp file in the same
// dir, write, fsync, rename, fsync the dir. Temp files that a crashed writer
// left behind for the same path are removed first. The new file gets perm
// (less the umask), whatever the old file had.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	unlock := lockPath(path)
	defer unlock()
	dir := filepath.Dir(path)
	RemoveLeftovers(dir, filepath.Base(path))

	// The pid in the name lets RemoveLeftovers tell a crashed writer's file
	// from one another process is still writing.
	tmp := filepath.Join(dir, fmt.Sprintf("%s%d-%d", tempPrefix(path), os.Getpid(), rand.Uint64()))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("replace %s: create temp file: %w", path, err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	// The mode is what the caller asked for, whatever the umask.
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("replace %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("replace %s: write %d bytes to %s: %w (is the disk full?)", path, len(data), tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("replace %s: fsync %s: %w", path, tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("replace %s: close %s: %w", path, tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("replace %s: rename the temp file over it: %w", path, err)
	}
	ok = true
	if err := SyncDir(dir); err != nil {
		// The new content is in place but the rename may not survive a power
		// loss; the caller should know its write is not yet durable.
		return fmt.Errorf("replace %s: %w", path, err)
	}
	return nil
}

// SyncDir fsyncs a directory so that a rename or create in it survives a
// power loss.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s to fsync it: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// RemoveLeftovers removes the temp files named ".<name>.tmp-*" in dir that a
// writer of name left behind when it crashed. A temp file whose name carries
// the pid of another live process is kept: that writer may still be working.
// Errors are ignored: a leftover costs disk space, never correctness.
func RemoveLeftovers(dir, name string) {
	prefix := "." + name + ".tmp-"
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix) {
			continue
		}
		if pid, ok := writerPid(e.Name()[len(prefix):]); ok && pid != os.Getpid() && alive(pid) {
			continue
		}
		os.Remove(filepath.Join(dir, e.Name()))
	}
}

// writerPid reads the pid from the "<pid>-<random>" suffix of a temp name.
func writerPid(suffix string) (int, bool) {
	p, _, found := strings.Cut(suffix, "-")
	if !found {
		return 0, false
	}
	pid, err := strconv.Atoi(p)
	if err != nil || pid <= 0 {
		return 0, false
	}
	return pid, true
}

func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// WriteJSON marshals v (indented) and writes it with WriteFile.
func WriteJSON(path string, v any, perm os.FileMode) error {
	data, err := json.MarshalIndent(v, "", "\t")
	if err != nil {
		return fmt.Errorf("encode %T as JSON for %s: %w", v, path, err)
	}
	return WriteFile(path, append(data, '\n'), perm)
}

// ReadJSON reads path into v. A missing file returns an error wrapping
// fs.ErrNotExist (a first start); a corrupt one an error wrapping ErrCorrupt
// that names the file and what to do.
func ReadJSON(path string, v any) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(f, maxReadBytes+1))
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if n > maxReadBytes {
		return fmt.Errorf("read %s: larger than %d bytes, which no state file is: %w; move it aside and the agent starts from empty state", path, maxReadBytes, ErrCorrupt)
	}
	data := buf.Bytes()
	if err := json.Unmarshal(data, v); err != nil {
		var serr *json.SyntaxError
		var terr *json.UnmarshalTypeError
		what := "not valid JSON"
		switch {
		case errors.As(err, &serr):
			what = fmt.Sprintf("not valid JSON at byte %d of %d", serr.Offset, len(data))
		case errors.As(err, &terr):
			what = fmt.Sprintf("JSON of another shape than %T", v)
		}
		return fmt.Errorf("read %s: %s (%v): %w; it was not written by this version of the program or the disk damaged it: move it aside and the agent starts from empty state", path, what, err, ErrCorrupt)
	}
	return nil
}
