package proc

import (
	"errors"
	"strings"
	"testing"
)

func TestParseMaps(t *testing.T) {
	text := `00400000-00401000 r--p 00000000 08:01 1234                               /usr/bin/my prog (deleted)
00401000-00402000 r-xp 00001000 08:01 1234                               /usr/bin/my prog (deleted)
01d2d000-01d4e000 rw-p 00000000 00:00 0                                  [heap]
7f1c00000000-7f1c00021000 rw-p 00000000 00:00 0                          [anon:glibc: malloc arena]
7f1c0a000000-7f1c0a001000 ---p 00000000 00:00 0 
7ffd8a5f0000-7ffd8a5f2000 r-xp 00000000 00:00 0                          [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
`
	maps, err := parseMaps([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	want := []Mapping{
		{0x400000, 0x401000, 0, "r--p", "08:01", 1234, "/usr/bin/my prog (deleted)"},
		{0x401000, 0x402000, 0x1000, "r-xp", "08:01", 1234, "/usr/bin/my prog (deleted)"},
		{0x1d2d000, 0x1d4e000, 0, "rw-p", "00:00", 0, "[heap]"},
		{0x7f1c00000000, 0x7f1c00021000, 0, "rw-p", "00:00", 0, "[anon:glibc: malloc arena]"},
		{0x7f1c0a000000, 0x7f1c0a001000, 0, "---p", "00:00", 0, ""},
		{0x7ffd8a5f0000, 0x7ffd8a5f2000, 0, "r-xp", "00:00", 0, "[vdso]"},
		{0xffffffffff600000, 0xffffffffff601000, 0, "--xp", "00:00", 0, "[vsyscall]"},
	}
	if len(maps) != len(want) {
		t.Fatalf("%d mappings, want %d: %+v", len(maps), len(want), maps)
	}
	for i := range want {
		if maps[i] != want[i] {
			t.Errorf("line %d: %+v, want %+v", i+1, maps[i], want[i])
		}
	}
	if n := maps[0].Name(); n != "/usr/bin/my prog" {
		t.Errorf("Name() = %q", n)
	}
	if !maps[1].Exec() || maps[0].Exec() || !maps[0].Readable() || maps[4].Readable() {
		t.Error("Exec/Readable wrong")
	}

	for _, bad := range []string{
		"00400000 r--p 00000000 08:01 1 /x",
		"00401000-00400000 r--p 00000000 08:01 1 /x",
		"zz-00401000 r--p 00000000 08:01 1 /x",
		"00400000-00401000 r--p 00000000 0801 1 /x",
		"00400000-00401000 rp 00000000 08:01 1 /x",
		"00400000-00401000 r--p 00000000 08:01 x /x",
		"00400000-00401000 r--p",
		strings.Repeat("a", maxMapsLine+10),
	} {
		if _, err := parseMaps([]byte(bad + "\n")); err == nil {
			t.Errorf("parseMaps(%.60q) succeeded", bad)
		}
	}
}

const (
	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30
)

func TestFindHole(t *testing.T) {
	exe := Mapping{Start: 0x400000, End: 0x401000, Perms: "r-xp", Path: "/bin/x"}
	stack := Mapping{Start: 0x7ffff0000000, End: 0x7ffff0021000, Perms: "rw-p", Path: "[stack]"}
	far := uint64(0x7f0000000000)
	tests := []struct {
		name   string
		maps   []Mapping
		spec   HoleSpec
		want   uint64
		noHole bool
	}{{
		name: "right next to the module",
		maps: []Mapping{exe},
		spec: HoleSpec{Near: []Range{{0x400000, 0x401000}}, Size: 4 * kib},
		want: 0x3ff000,
	}, {
		name: "size rounds up to pages",
		maps: []Mapping{exe},
		spec: HoleSpec{Near: []Range{{0x400000, 0x401000}}, Size: 1},
		want: 0x3ff000,
	}, {
		name: "the heap gap after the executable is avoided",
		maps: []Mapping{{Start: 0x10000, End: 0x400000, Perms: "r--p"}, exe},
		spec: HoleSpec{Near: []Range{{0x400000, 0x401000}}, Size: 4 * kib, Avoid: []Range{{0x401000, 0x401000 + 32*mib}}},
		want: 0x401000 + 32*mib,
	}, {
		name: "below mmap_min_addr is never used",
		maps: []Mapping{{Start: 0x20000, End: 0x400000, Perms: "r--p"}, exe, {Start: 0x401000, End: 0x40000000, Perms: "r--p"}},
		spec: HoleSpec{Near: []Range{{0x400000, 0x401000}}, Size: 128 * kib},
		want: 0x40000000,
	}, {
		name: "low 32-bit only",
		maps: []Mapping{{Start: 0x10000, End: 0x70000000, Perms: "r--p"}, {Start: 0x70002000, End: 0x90000000, Perms: "r--p"}},
		spec: HoleSpec{Size: 8 * kib, Low32: true},
		want: 0x70000000,
	}, {
		name: "room for stack growth below [stack]",
		maps: []Mapping{stack, {Start: stack.End, End: userSpaceEnd, Perms: "r--p"}},
		spec: HoleSpec{Near: []Range{{stack.Start, stack.End}}, Size: 4 * kib},
		want: stack.Start - stackGuard - 4*kib,
	}, {
		name:   "everything in reach is taken",
		maps:   []Mapping{{Start: far - 3*gib, End: far + 3*gib, Perms: "r--p"}},
		spec:   HoleSpec{Near: []Range{{far, far + 4*kib}}, Size: 4 * kib},
		noHole: true,
	}, {
		name:   "free space just beyond the safety margin does not count",
		maps:   []Mapping{{Start: far - 3*gib, End: far - 2*gib + 4*mib, Perms: "r--p"}, {Start: far - 2*gib + 4*mib + 64*kib, End: far + 3*gib, Perms: "r--p"}},
		spec:   HoleSpec{Near: []Range{{far, far + 4*kib}}, Size: 4 * kib},
		noHole: true,
	}, {
		name:   "near ranges too far apart",
		maps:   nil,
		spec:   HoleSpec{Near: []Range{{0x100000000, 0x100001000}, {0x300000000, 0x300001000}}, Size: 4 * kib},
		noHole: true,
	}, {
		name:   "low 32-bit but near a high module",
		maps:   nil,
		spec:   HoleSpec{Near: []Range{{far, far + 4*kib}}, Size: 4 * kib, Low32: true},
		noHole: true,
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := findHole(tc.maps, tc.spec, 64*kib, 4*kib)
			if tc.noHole {
				if !errors.Is(err, ErrNoHole) {
					t.Fatalf("got %#x, %v; want ErrNoHole", got, err)
				}
				msg := err.Error()
				for _, s := range []string{"no free address range of", "bytes", "the process has reserved that address space"} {
					if !strings.Contains(msg, s) {
						t.Errorf("message %q does not say %q", msg, s)
					}
				}
				if len(tc.spec.Near) > 0 && !strings.Contains(msg, "within ±2 GiB of [") {
					t.Errorf("message %q does not name the ranges", msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %#x, want %#x", got, tc.want)
			}
			checkHole(t, tc.maps, tc.spec, got)
		})
	}
	if _, err := findHole(nil, HoleSpec{}, 64*kib, 4*kib); err == nil || errors.Is(err, ErrNoHole) {
		t.Errorf("size 0: %v, want a plain error", err)
	}
}

// checkHole asserts the properties FindHole promises.
func checkHole(t *testing.T, maps []Mapping, spec HoleSpec, a uint64) {
	t.Helper()
	size := (spec.Size + 4*kib - 1) &^ (4*kib - 1)
	end := a + size
	if a%(4*kib) != 0 {
		t.Fatalf("%#x not page-aligned", a)
	}
	for _, m := range maps {
		if a < m.End && m.Start < end {
			t.Fatalf("hole %#x-%#x overlaps mapping %#x-%#x", a, end, m.Start, m.End)
		}
	}
	for _, r := range spec.Avoid {
		if a < r.End && r.Start < end {
			t.Fatalf("hole %#x-%#x overlaps avoided %#x-%#x", a, end, r.Start, r.End)
		}
	}
	for _, r := range spec.Near {
		if end-1 > r.Start && end-1-r.Start >= rel32Reach || r.End-1 > a && r.End-1-a >= rel32Reach {
			t.Fatalf("hole %#x-%#x out of rel32 reach of %#x-%#x", a, end, r.Start, r.End)
		}
	}
	if spec.Low32 && end > low32Limit {
		t.Fatalf("hole %#x-%#x not below 2 GiB", a, end)
	}
}

// TestFindHoleLive finds holes near every module of this test process and
// checks them against its real maps.
func TestFindHoleLive(t *testing.T) {
	maps, err := ReadMaps(pidSelf())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range maps {
		if !m.Exec() || m.Start >= userSpaceEnd {
			continue
		}
		spec := HoleSpec{Near: []Range{{m.Start, m.End}}, Size: 1 * mib}
		a, err := FindHole(maps, spec)
		if err != nil {
			t.Fatalf("near %s: %v", m.Path, err)
		}
		checkHole(t, maps, spec, a)
	}
}
