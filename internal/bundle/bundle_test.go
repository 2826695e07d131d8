package bundle

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func sample() *Bundle {
	h := sha256.Sum256([]byte("old"))
	return &Bundle{
		ID:    "hf-test-1",
		Level: 1,
		CVEs:  []string{"CVE-2026-0001"},
		Modules: []Module{{
			BuildID: bytes.Repeat([]byte{0xab}, 20),
			Name:    "target",
			Code:    make([]byte, 64),
			Funcs: []Func{
				{Name: "f", Site: 0x1139, OldSize: 32, OldHash: h[:], Offset: 0, Size: 32},
				{Name: "g", New: true, Offset: 32, Size: 16},
			},
			Fixups: []Fixup{
				{Offset: 4, Kind: ModulePC32, Addend: 0x4010},
				{Offset: 40, Kind: RegionAbs64, Addend: 8},
			},
		}},
	}
}

func TestRoundTrip(t *testing.T) {
	data, err := Marshal(sample())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(data, again) {
		t.Fatal("re-encoding a decoded bundle changed it")
	}
	if got := b.Modules[0].Sites(); len(got) != 1 || got[0].Name != "f" {
		t.Fatalf("Sites() = %+v, want only f", got)
	}
}

// TestDeflate checks that Encode stores the manifest compressed when that is
// smaller, and that the result decodes to the same bundle.
func TestDeflate(t *testing.T) {
	b := sample()
	data, err := Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if flags := binary.LittleEndian.Uint32(data[12:]); flags&FlagDeflate == 0 {
		t.Fatalf("flags %#x: a %d-byte JSON manifest was not compressed", flags, len(plain))
	}
	if len(data) >= headerLen+len(plain)+sha256.Size {
		t.Errorf("bundle is %d bytes, not smaller than with the plain %d-byte manifest", len(data), len(plain))
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	again, err := json.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, plain) {
		t.Errorf("decoded manifest differs:\n got %s\nwant %s", again, plain)
	}
}

func TestDecodeRejects(t *testing.T) {
	good, err := Marshal(sample())
	if err != nil {
		t.Fatal(err)
	}
	reseal := func(b []byte) []byte {
		body := b[:len(b)-32]
		sum := sha256.Sum256(body)
		return append(bytes.Clone(body), sum[:]...)
	}
	withManifest := func(m string) []byte {
		var buf bytes.Buffer
		buf.WriteString(Magic)
		var hdr [16]byte
		binary.LittleEndian.PutUint32(hdr[0:], FormatVersion)
		binary.LittleEndian.PutUint64(hdr[8:], uint64(len(m)))
		buf.Write(hdr[:])
		buf.WriteString(m)
		sum := sha256.Sum256(buf.Bytes())
		buf.Write(sum[:])
		return buf.Bytes()
	}
	withDeflated := func(z []byte) []byte {
		var buf bytes.Buffer
		buf.WriteString(Magic)
		var hdr [16]byte
		binary.LittleEndian.PutUint32(hdr[0:], FormatVersion)
		binary.LittleEndian.PutUint32(hdr[4:], FlagDeflate)
		binary.LittleEndian.PutUint64(hdr[8:], uint64(len(z)))
		buf.Write(hdr[:])
		buf.Write(z)
		sum := sha256.Sum256(buf.Bytes())
		buf.Write(sum[:])
		return buf.Bytes()
	}
	// A few kilobytes that inflate to more than the manifest limit.
	bomb := func() []byte {
		var buf bytes.Buffer
		w, _ := flate.NewWriter(&buf, flate.BestCompression)
		zeros := make([]byte, 1<<20)
		for written := 0; written <= MaxManifestSize; written += len(zeros) {
			w.Write(zeros)
		}
		w.Close()
		return buf.Bytes()
	}()
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "truncated"},
		{"unknown flags", reseal(func() []byte { b := bytes.Clone(good); b[12] |= 0x80; return b }()), "unknown flags 0x80"},
		{"corrupt deflate", withDeflated([]byte{0xff, 0xff, 0xff, 0xff}), "corrupt"},
		{"deflate bomb", withDeflated(bomb), "inflates past"},
		{"deflated not json", withDeflated(func() []byte { z, _ := deflate([]byte("{")); return z }()), "manifest"},
		{"short non-bundle", []byte("#!/bin/sh\necho hello\n"), "bad magic"},
		{"truncated", good[:len(good)/2], "truncated"},
		{"bad magic", append([]byte("NOTAPATCH"), good[9:]...), "bad magic"},
		{"flipped byte", func() []byte { b := bytes.Clone(good); b[40] ^= 1; return b }(), "checksum"},
		{"trailing", append(bytes.Clone(good), 0), "trailing"},
		{"future version", reseal(func() []byte { b := bytes.Clone(good); b[8] = 9; return b }()), "version 9"},
		{"not json", withManifest("{"), "manifest"},
		{"unknown field", withManifest(`{"id":"x","level":1,"modules":[],"evil":1}`), "unknown field"},
		{"no modules", withManifest(`{"id":"x","level":1,"modules":[]}`), "no modules"},
		{"bad id", withManifest(`{"id":"../x","level":1,"modules":[]}`), "patch id"},
		{"func outside code", withManifest(`{"id":"x","level":1,"modules":[{"build_id":"abababababababab","name":"t","code":"AAAA","funcs":[{"name":"f","site":4096,"old_size":8,"old_hash":"` + strings.Repeat("00", 32) + `","offset":2,"size":8}]}]}`), "outside"},
		{"fixup outside code", withManifest(`{"id":"x","level":1,"modules":[{"build_id":"abababababababab","name":"t","code":"AAAAAAAA","funcs":[{"name":"f","site":4096,"old_size":8,"old_hash":"` + strings.Repeat("00", 32) + `","offset":0,"size":4}],"fixups":[{"offset":4,"kind":"module-abs64","addend":0}]}]}`), "outside"},
		{"unknown fixup", withManifest(`{"id":"x","level":1,"modules":[{"build_id":"abababababababab","name":"t","code":"AAAAAAAA","funcs":[{"name":"f","site":4096,"old_size":8,"old_hash":"` + strings.Repeat("00", 32) + `","offset":0,"size":4}],"fixups":[{"offset":0,"kind":"got","addend":0}]}]}`), "unknown kind"},
		{"huge manifest length", func() []byte {
			b := bytes.Clone(good[:headerLen])
			binary.LittleEndian.PutUint64(b[16:], 1<<62)
			return append(b, make([]byte, 32)...)
		}(), "exceeds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode(tt.data)
			if err == nil {
				t.Fatal("Decode accepted bad input")
			}
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("error %v does not wrap ErrMalformed", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

func TestLink(t *testing.T) {
	m := sample().Modules[0]
	code, err := m.Link(0x5555_0000_0000, 0x5555_1000_0000)
	if err != nil {
		t.Fatal(err)
	}
	// module-pc32 at 4: B + A - P = 0x555500004010 - (0x555510000000+4)
	want := int32(int64(0x5555_0000_4010) - int64(0x5555_1000_0004))
	if got := int32(binary.LittleEndian.Uint32(code[4:])); got != want {
		t.Errorf("pc32 = %#x, want %#x", got, want)
	}
	if got := binary.LittleEndian.Uint64(code[40:]); got != 0x5555_1000_0008 {
		t.Errorf("abs64 = %#x", got)
	}
	if _, err := m.Link(0x5555_0000_0000, 0x7fff_0000_0000); err == nil || !strings.Contains(err.Error(), "does not fit") {
		t.Errorf("out-of-reach link: err = %v, want 'does not fit'", err)
	}
}

func FuzzDecode(f *testing.F) {
	good, err := Marshal(sample())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:30])
	f.Add([]byte(Magic))
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error does not wrap ErrMalformed: %v", err)
			}
			return
		}
		for _, m := range b.Modules {
			// A valid bundle must link without panicking wherever it lands.
			_, _ = m.Link(0, 0x1000)
		}
		if _, err := Marshal(b); err != nil {
			t.Fatalf("decoded bundle does not re-encode: %v", err)
		}
	})
}
