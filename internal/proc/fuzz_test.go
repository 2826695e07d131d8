package proc

import "testing"

// FuzzParseMaps: any maps text parses or fails, never panics, and every
// mapping it returns is well-formed.
func FuzzParseMaps(f *testing.F) {
	f.Add([]byte("00400000-00401000 r-xp 00000000 08:01 1234 /usr/bin/a b (deleted)\n"))
	f.Add([]byte("7ffd8a5f0000-7ffd8a5f2000 r-xp 00000000 00:00 0 [vdso]\n"))
	f.Add([]byte("0-0 ---p 0 0:0 0\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		maps, err := parseMaps(data)
		if err != nil {
			return
		}
		for _, m := range maps {
			if m.End < m.Start || len(m.Perms) != 4 {
				t.Fatalf("bad mapping %+v", m)
			}
			_ = m.Name()
		}
	})
}

// FuzzFindBuildID: note parsing never panics nor returns an over-long id.
func FuzzFindBuildID(f *testing.F) {
	f.Add([]byte("\x04\x00\x00\x00\x04\x00\x00\x00\x03\x00\x00\x00GNU\x00\xde\xad\xbe\xef"), uint64(4))
	f.Fuzz(func(t *testing.T, data []byte, align uint64) {
		if id := findBuildID(data, align); len(id) > maxBuildID {
			t.Fatalf("build-id of %d bytes", len(id))
		}
	})
}
