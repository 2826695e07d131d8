package inventory

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestParseMapLine(t *testing.T) {
	for _, tc := range []struct {
		line string
		ok   bool
		want mapLine
	}{
		{"7f3c1a200000-7f3c1a228000 r--p 00000000 fe:01 1835 /usr/lib/x86_64-linux-gnu/libc.so.6", true,
			mapLine{start: 0x7f3c1a200000, end: 0x7f3c1a228000, major: 0xfe, minor: 1, inode: 1835, path: []byte("/usr/lib/x86_64-linux-gnu/libc.so.6")}},
		{"00400000-00401000 r-xp 00001000 08:01 1234                       /tmp/a b (deleted)", true,
			mapLine{start: 0x400000, end: 0x401000, offset: 0x1000, major: 8, minor: 1, inode: 1234, path: []byte("/tmp/a b (deleted)")}},
		{"7ffd8a5f0000-7ffd8a5f2000 r-xp 00000000 00:00 0                  [vdso]", true,
			mapLine{start: 0x7ffd8a5f0000, end: 0x7ffd8a5f2000, path: []byte("[vdso]")}},
		{"55d0c0a3e000-55d0c0a5f000 rw-p 00000000 00:00 0 ", true, mapLine{start: 0x55d0c0a3e000, end: 0x55d0c0a5f000, path: []byte{}}},
		{"55d0c0a3e000-55d0c0a5f000 rw-p 00000000 00:00 0", true, mapLine{start: 0x55d0c0a3e000, end: 0x55d0c0a5f000}},
		{"", false, mapLine{}},
		{"2000-1000 r--p 0 0:0 0", false, mapLine{}},
		{"1000-2000 r--p 0 00 0", false, mapLine{}},
		{"1000-2000 r-p 0 0:0 0", false, mapLine{}},
		{"1000-2000 r--p 0 0:0 x /a", false, mapLine{}},
		{"11111111111111111-2000 r--p 0 0:0 0", false, mapLine{}},
		{"1000-2000 r--p 0 0:0 99999999999999999999 /a", false, mapLine{}},
	} {
		got, ok := parseMapLine([]byte(tc.line))
		if ok != tc.ok {
			t.Errorf("%q: ok %v, want %v", tc.line, ok, tc.ok)
			continue
		}
		if !ok {
			continue
		}
		if got.start != tc.want.start || got.end != tc.want.end || got.offset != tc.want.offset || got.major != tc.want.major ||
			got.minor != tc.want.minor || got.inode != tc.want.inode || !bytes.Equal(got.path, tc.want.path) {
			t.Errorf("%q:\ngot  %+v\nwant %+v", tc.line, got, tc.want)
		}
	}
}

// FuzzParseMapLine: any line parses or is refused, never panics, and what
// parses is well-formed.
func FuzzParseMapLine(f *testing.F) {
	f.Add([]byte("00400000-00401000 r-xp 00000000 08:01 1234 /usr/bin/a b (deleted)"))
	f.Add([]byte("7ffd8a5f0000-7ffd8a5f2000 r-xp 00000000 00:00 0 [vdso]"))
	f.Add([]byte("0-0 ---p 0 0:0 0"))
	f.Fuzz(func(t *testing.T, line []byte) {
		m, ok := parseMapLine(line)
		if !ok {
			return
		}
		if m.end < m.start || !bytes.HasSuffix(line, m.path) {
			t.Fatalf("bad mapping %+v from %q", m, line)
		}
	})
}

func TestParseStat(t *testing.T) {
	for _, tc := range []struct {
		stat, comm string
		state      byte
		flags      uint64
		start      uint64
		ok         bool
	}{
		{"42 (a) (b)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 2000000 300 18446744073709551615", "a) (b)", 'S', 4194560, 123456, true},
		{"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0", "kthreadd", 'S', 2129984, 5, true},
		{"7 (x) Z 1 7 7 0 -1 4194564 0 0 0 0 0 0 0 0 20 0 1 0 99\n", "x", 'Z', 4194564, 99, true},
		{"7 (x) S 1 7", "", 0, 0, 0, false},
		{"7 x S 1 7", "", 0, 0, 0, false},
		{"7 (x)", "", 0, 0, 0, false},
		{"7 (x) S 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 -5", "", 0, 0, 0, false},
	} {
		var p Process
		state, flags, err := parseStat([]byte(tc.stat), &p)
		if (err == nil) != tc.ok {
			t.Errorf("%q: err %v, want ok %v", tc.stat, err, tc.ok)
			continue
		}
		if tc.ok && (p.Comm != tc.comm || state != tc.state || flags != tc.flags || p.StartTime != tc.start) {
			t.Errorf("%q: comm %q state %c flags %d start %d", tc.stat, p.Comm, state, flags, p.StartTime)
		}
	}
}

// TestReadELFIdent checks the build-id reader against debug/elf on real
// files: an executable, libc, and a file that is not ELF.
func TestReadELFIdent(t *testing.T) {
	paths := []string{"/bin/sh"}
	if l, err := filepath.Glob("/usr/lib/*/libc.so.6"); err == nil && len(l) > 0 {
		paths = append(paths, l[0])
	}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		id, err := readELFIdent(f)
		f.Close()
		if err != nil || id.buildID != fileBuildID(t, p) || id.class != 2 {
			t.Errorf("%s: %+v %v, want build-id %s", p, id, err, fileBuildID(t, p))
		}
	}
	f, err := os.Open(filepath.Join("testdata", "os-release", "debian"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := readELFIdent(f); err != errNotELF {
		t.Errorf("a text file: %v, want errNotELF", err)
	}
}

// FuzzReadELFIdent: any bytes give a build-id, no build-id or an error,
// never a panic nor an over-long id.
func FuzzReadELFIdent(f *testing.F) {
	if data, err := os.ReadFile("/bin/true"); err == nil && len(data) > 4096 {
		f.Add(data[:4096])
	}
	f.Add([]byte("\x7fELF\x02\x01\x01"))
	f.Add([]byte("\x7fELF\x01\x02\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		id, err := readELFIdent(bytes.NewReader(data))
		if err == nil && len(id.buildID) > 2*maxBuildID {
			t.Fatalf("build-id of %d hex digits", len(id.buildID))
		}
	})
}
