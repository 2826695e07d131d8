package proc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

var errESRCH error = syscall.ESRCH

const (
	// maxMapsLine bounds one maps line: a PATH_MAX path plus the fixed fields.
	maxMapsLine = 4096 + 256
	// maxMappings bounds a maps file: the kernel's default vm.max_map_count is
	// 65530, and a generous multiple keeps a tuned host working.
	maxMappings = 1 << 20
)

// ReadMaps reads and parses /proc/PID/maps.
func ReadMaps(pid int) ([]Mapping, error) {
	data, err := os.ReadFile(memFile(pid, "maps"))
	if err != nil {
		return nil, procFileErr(pid, "read memory map of", err)
	}
	maps, err := parseMaps(data)
	if err != nil {
		return nil, fmt.Errorf("read memory map of pid %d: %w", pid, err)
	}
	return maps, nil
}

// parseMaps parses the text of a maps file. Paths may contain spaces, so the
// path is everything after the inode field.
func parseMaps(data []byte) ([]Mapping, error) {
	var out []Mapping
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 1024), maxMapsLine)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if text == "" {
			continue
		}
		if len(out) >= maxMappings {
			return nil, fmt.Errorf("more than %d mappings; refusing to parse further", maxMappings)
		}
		m, err := parseMapsLine(text)
		if err != nil {
			return nil, fmt.Errorf("maps line %d %q: %w", line, text, err)
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("maps line %d: %w", line+1, err)
	}
	return out, nil
}

// nextField splits off the next space-separated field of s.
func nextField(s string) (field, rest string) {
	s = strings.TrimLeft(s, " ")
	i := strings.IndexByte(s, ' ')
	if i < 0 {
		return s, ""
	}
	return s[:i], s[i+1:]
}

func parseMapsLine(s string) (Mapping, error) {
	var m Mapping
	addr, rest := nextField(s)
	perms, rest := nextField(rest)
	off, rest := nextField(rest)
	dev, rest := nextField(rest)
	ino, rest := nextField(rest)
	lo, hi, ok := strings.Cut(addr, "-")
	if !ok {
		return m, errors.New("address range has no '-'")
	}
	var err error
	if m.Start, err = strconv.ParseUint(lo, 16, 64); err != nil {
		return m, fmt.Errorf("start address: %w", err)
	}
	if m.End, err = strconv.ParseUint(hi, 16, 64); err != nil {
		return m, fmt.Errorf("end address: %w", err)
	}
	if m.End < m.Start {
		return m, errors.New("end address below start address")
	}
	if len(perms) != 4 {
		return m, fmt.Errorf("permissions %q are not 4 characters", perms)
	}
	m.Perms = perms
	if m.Offset, err = strconv.ParseUint(off, 16, 64); err != nil {
		return m, fmt.Errorf("offset: %w", err)
	}
	if !strings.Contains(dev, ":") {
		return m, fmt.Errorf("device %q is not major:minor", dev)
	}
	m.Dev = dev
	if m.Inode, err = strconv.ParseUint(ino, 10, 64); err != nil {
		return m, fmt.Errorf("inode: %w", err)
	}
	m.Path = strings.TrimLeft(rest, " ")
	return m, nil
}

// Threads lists the thread ids of pid from /proc/PID/task, sorted.
func Threads(pid int) ([]int, error) {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, procFileErr(pid, "list threads of", err)
	}
	tids := make([]int, 0, len(entries))
	for _, e := range entries {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue // not a thread directory
		}
		tids = append(tids, tid)
	}
	if len(tids) == 0 {
		return nil, ExitedError{Pid: pid}
	}
	sort.Ints(tids)
	return tids, nil
}

// memFile is the /proc file about pid's memory. A process whose main thread
// has exited (a zombie leader) has no memory under /proc/PID any more; a
// live thread's /proc/PID/task/TID view shows the same memory.
func memFile(pid int, name string) string {
	leader := fmt.Sprintf("/proc/%d/%s", pid, name)
	if threadState(pid, pid) != 'Z' {
		return leader
	}
	tids, err := Threads(pid)
	if err != nil {
		return leader
	}
	for _, tid := range tids {
		if s := threadState(pid, tid); s != 0 && s != 'Z' && s != 'X' {
			return fmt.Sprintf("/proc/%d/task/%d/%s", pid, tid, name)
		}
	}
	return leader
}

// threadState is the state letter of /proc/PID/task/TID/stat, or 0 when
// the thread is gone.
func threadState(pid, tid int) byte {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
	if err != nil {
		return 0
	}
	// The command name may contain spaces and parentheses; the state follows
	// the last ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 || i+2 >= len(data) {
		return 0
	}
	return data[i+2]
}

// procFileErr turns a failure to read a /proc file into ExitedError when the
// process is gone, ErrPermission when access was refused, or a plain error.
func procFileErr(pid int, what string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, errESRCH):
		return fmt.Errorf("%s pid %d: %w", what, pid, ExitedError{Pid: pid})
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%s pid %d: %w; run hotfleet as root or with CAP_SYS_PTRACE (%v)", what, pid, ErrPermission, err)
	}
	return fmt.Errorf("%s pid %d: %w", what, pid, err)
}
