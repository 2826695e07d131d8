// Package bundle defines the hotfleet patch bundle (.hfp): the replacement code
// for the changed functions of one or more modules, already linked by the
// builder against each exact module (identified by GNU build-id).
//
// Trust: Decode treats its input as hostile. It enforces the size limits below,
// verifies the trailing checksum, and returns an error, never panics, on
// malformed input. A decoded bundle is internally consistent (every offset and
// fixup lies inside its module's code) but is not authenticated: signatures are
// checked by the caller that fetched it.
//
// The agent applying a bundle never looks symbols up. It computes each fixup
// from two numbers it learns at apply time: the module's load bias and the
// address where the bundle code was mapped. See docs/bundle-format.md.
package bundle

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// Magic opens every bundle file.
const Magic = "HFPATCH\x00"

// FormatVersion is the version of the container and manifest written by Encode.
// Decode refuses other versions: a newer agent must understand older bundles
// explicitly, never by accident.
const FormatVersion = 1

// Limits enforced by Decode, so a hostile bundle cannot make the agent allocate
// or loop without bound.
const (
	MaxBundleSize   = 64 << 20 // whole file; real patches are kilobytes
	MaxManifestSize = 48 << 20 // JSON manifest including base64 code
	MaxModules      = 64       // a fix rarely spans more than a few libraries
	MaxFuncs        = 4096     // per module
	MaxFixups       = 1 << 18  // per module
	MaxCodeSize     = 16 << 20 // per module, before encoding
	MaxNameLen      = 4096     // function and module names (C++ names get long)
	MaxIDLen        = 128
	MaxCVEs         = 256
	MaxTextLen      = 64 << 10 // free-text description
	MaxBuildIDLen   = 64       // GNU build-ids are 20 bytes (sha1) or 16 (md5/uuid)
	MinBuildIDLen   = 8
)

const headerLen = len(Magic) + 4 + 4 + 8 // magic, version, flags, manifest length

// Header flags.
const (
	// FlagDeflate: the manifest is stored DEFLATE-compressed (RFC 1951);
	// the length in the header is the stored length, and the limits apply
	// to the manifest once inflated. Encode sets it when that is smaller.
	FlagDeflate = 1 << 0

	knownFlags = FlagDeflate
)

// ErrMalformed is wrapped by every error Decode returns for bad input.
var ErrMalformed = errors.New("malformed patch bundle")

// Consistency selects how the switch from old to new code is made safe.
type Consistency string

const (
	// SwitchAtCall (the default): a thread already inside an old function
	// finishes that call in the old code; every new call runs the new code.
	SwitchAtCall Consistency = "switch-at-call"
	// Quiescent: no thread may be inside an old function, or return into one,
	// when the switch happens.
	Quiescent Consistency = "quiescent"
)

// FixupKind names one of the few base-relative fixups the agent applies.
type FixupKind string

// The value written for each kind. B is the module's load bias, R the address
// of the first byte of Code in the target, P = R + Offset, A the addend.
const (
	ModulePC32   FixupKind = "module-pc32"   // int32(B + A - P)
	ModuleAbs64  FixupKind = "module-abs64"  // uint64(B + A)
	ModuleAbs32  FixupKind = "module-abs32"  // uint32(B + A), must fit unsigned
	ModuleAbs32S FixupKind = "module-abs32s" // int32(B + A), must fit signed
	RegionAbs64  FixupKind = "region-abs64"  // uint64(R + A)
	RegionAbs32  FixupKind = "region-abs32"  // uint32(R + A), must fit unsigned
	RegionAbs32S FixupKind = "region-abs32s" // int32(R + A), must fit signed
)

// Size is the number of bytes the fixup writes.
func (k FixupKind) Size() int {
	switch k {
	case ModuleAbs64, RegionAbs64:
		return 8
	case ModulePC32, ModuleAbs32, ModuleAbs32S, RegionAbs32, RegionAbs32S:
		return 4
	}
	return 0
}

// NeedsLow32 reports whether the region must be mapped in the low 2 or 4 GB of
// the address space for this fixup to fit.
func (k FixupKind) NeedsLow32() bool {
	return k == RegionAbs32 || k == RegionAbs32S
}

// Bundle is one patch: an id, a level and the code for each module it fixes.
type Bundle struct {
	ID          string   `json:"id"`
	Level       uint32   `json:"level"`
	CVEs        []string `json:"cves,omitempty"`
	Description string   `json:"description,omitempty"`
	Modules     []Module `json:"modules"`
}

// Module is the patch for one module, identified by build-id only.
type Module struct {
	BuildID     HexBytes    `json:"build_id"`
	Name        string      `json:"name"` // informational: the file name the builder saw
	Consistency Consistency `json:"consistency,omitempty"`
	// Code holds the new functions and the read-only data they need, linked as
	// if loaded at address 0 except for the Fixups.
	Code   []byte  `json:"code"`
	Funcs  []Func  `json:"funcs"`
	Fixups []Fixup `json:"fixups,omitempty"`
}

// Func is one function of the new code. Functions with a Site replace an old
// function; new functions (Site == 0 and New) are only reached from other
// functions of the bundle.
type Func struct {
	Name string `json:"name"`
	New  bool   `json:"new,omitempty"`
	// Site is the link-time address of the old function in the module: the
	// agent adds the load bias. OldSize is the old function's size and OldHash
	// the SHA-256 of its bytes [Site, Site+OldSize) in the unpatched module.
	Site    uint64   `json:"site,omitempty"`
	OldSize uint32   `json:"old_size,omitempty"`
	OldHash HexBytes `json:"old_hash,omitempty"`
	// Offset and Size locate the new function inside Code.
	Offset      uint32      `json:"offset"`
	Size        uint32      `json:"size"`
	Consistency Consistency `json:"consistency,omitempty"` // overrides the module's
}

// Fixup is applied to Code after it is mapped.
type Fixup struct {
	Offset uint32    `json:"offset"`
	Kind   FixupKind `json:"kind"`
	Addend int64     `json:"addend"`
}

// HexBytes marshals as a lowercase hex string.
type HexBytes []byte

func (h HexBytes) String() string { return hex.EncodeToString(h) }

// MarshalJSON implements json.Marshaler.
func (h HexBytes) MarshalJSON() ([]byte, error) { return json.Marshal(hex.EncodeToString(h)) }

// UnmarshalJSON implements json.Unmarshaler.
func (h *HexBytes) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	if len(s) > 2*MaxNameLen {
		return fmt.Errorf("hex string of %d characters is too long", len(s))
	}
	v, err := hex.DecodeString(s)
	if err != nil {
		return err
	}
	*h = v
	return nil
}

// Sites returns the functions that replace an old function.
func (m *Module) Sites() []Func {
	var out []Func
	for _, f := range m.Funcs {
		if !f.New {
			out = append(out, f)
		}
	}
	return out
}

// FuncConsistency is the consistency mode in force for f.
func (m *Module) FuncConsistency(f Func) Consistency {
	if f.Consistency != "" {
		return f.Consistency
	}
	if m.Consistency != "" {
		return m.Consistency
	}
	return SwitchAtCall
}

// NeedsLow32 reports whether the module's code must be mapped below 2 GB
// (non-PIE code taking absolute 32-bit addresses of bundle data).
func (m *Module) NeedsLow32() bool {
	for _, f := range m.Fixups {
		if f.Kind.NeedsLow32() {
			return true
		}
	}
	return false
}

// Module returns the module with the given build-id, or nil.
func (b *Bundle) Module(buildID []byte) *Module {
	for i := range b.Modules {
		if bytes.Equal(b.Modules[i].BuildID, buildID) {
			return &b.Modules[i]
		}
	}
	return nil
}

// Encode writes b in the bundle format after validating it.
func Encode(w io.Writer, b *Bundle) error {
	if err := b.Validate(); err != nil {
		return err
	}
	manifest, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("encode bundle %s: %w", b.ID, err)
	}
	if len(manifest) > MaxManifestSize {
		return fmt.Errorf("encode bundle %s: manifest is %d bytes, the limit is %d", b.ID, len(manifest), MaxManifestSize)
	}
	var flags uint32
	if z, err := deflate(manifest); err == nil && len(z) < len(manifest) {
		manifest, flags = z, FlagDeflate
	}
	var buf bytes.Buffer
	buf.WriteString(Magic)
	var hdr [16]byte
	binary.LittleEndian.PutUint32(hdr[0:], FormatVersion)
	binary.LittleEndian.PutUint32(hdr[4:], flags)
	binary.LittleEndian.PutUint64(hdr[8:], uint64(len(manifest)))
	buf.Write(hdr[:])
	buf.Write(manifest)
	sum := sha256.Sum256(buf.Bytes())
	buf.Write(sum[:])
	_, err = w.Write(buf.Bytes())
	return err
}

// Marshal returns the encoded bundle.
func Marshal(b *Bundle) ([]byte, error) {
	var buf bytes.Buffer
	if err := Encode(&buf, b); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Decode parses and validates a bundle. Every error wraps ErrMalformed.
func Decode(data []byte) (*Bundle, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
	}
	if len(data) > MaxBundleSize {
		return nil, bad("%d bytes, the limit is %d", len(data), MaxBundleSize)
	}
	if !bytes.HasPrefix(data, []byte(Magic)) {
		if len(data) < len(Magic) && bytes.HasPrefix([]byte(Magic), data) {
			return nil, bad("truncated: %d bytes is shorter than the smallest bundle", len(data))
		}
		return nil, bad("not a hotfleet patch bundle (bad magic)")
	}
	if len(data) < headerLen+sha256.Size {
		return nil, bad("truncated: %d bytes is shorter than the smallest bundle", len(data))
	}
	version := binary.LittleEndian.Uint32(data[8:])
	if version != FormatVersion {
		return nil, bad("format version %d is not supported (this hotfleet reads version %d); upgrade hotfleet or rebuild the bundle", version, FormatVersion)
	}
	flags := binary.LittleEndian.Uint32(data[12:])
	if unknown := flags &^ knownFlags; unknown != 0 {
		return nil, bad("unknown flags %#x: the bundle was written by a newer hotfleet; upgrade hotfleet", unknown)
	}
	mlen := binary.LittleEndian.Uint64(data[16:])
	if mlen > MaxManifestSize {
		return nil, bad("manifest of %d bytes exceeds the limit of %d", mlen, MaxManifestSize)
	}
	want := uint64(headerLen) + mlen + sha256.Size
	if uint64(len(data)) != want {
		if uint64(len(data)) < want {
			return nil, bad("truncated: %d bytes, expected %d", len(data), want)
		}
		return nil, bad("%d trailing bytes after the checksum", uint64(len(data))-want)
	}
	body := data[:headerLen+int(mlen)]
	sum := sha256.Sum256(body)
	if !bytes.Equal(sum[:], data[len(body):]) {
		return nil, bad("checksum mismatch: the file is corrupt or was modified")
	}
	manifest := body[headerLen:]
	if flags&FlagDeflate != 0 {
		m, err := inflate(manifest)
		if err != nil {
			return nil, bad("manifest: %v", err)
		}
		manifest = m
	}
	dec := json.NewDecoder(bytes.NewReader(manifest))
	dec.DisallowUnknownFields()
	var b Bundle
	if err := dec.Decode(&b); err != nil {
		return nil, bad("manifest: %v", err)
	}
	if dec.More() {
		return nil, bad("manifest: trailing data")
	}
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return &b, nil
}

// deflate compresses a manifest at the best ratio: bundles are written once
// and fetched by every device.
func deflate(b []byte) ([]byte, error) {
	var buf bytes.Buffer
	w, err := flate.NewWriter(&buf, flate.BestCompression)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(b); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// inflate decompresses a stored manifest, refusing one that inflates past
// MaxManifestSize (a few kilobytes of hostile input must not become
// gigabytes in memory).
func inflate(z []byte) ([]byte, error) {
	r := flate.NewReader(bytes.NewReader(z))
	defer r.Close()
	b, err := io.ReadAll(io.LimitReader(r, MaxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("compressed data is corrupt: %v", err)
	}
	if len(b) > MaxManifestSize {
		return nil, fmt.Errorf("inflates past the limit of %d bytes", MaxManifestSize)
	}
	return b, nil
}

var (
	idRe  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)
	cveRe = regexp.MustCompile(`^CVE-[0-9]{4}-[0-9]{4,}$`)
)

// Validate checks that the bundle is internally consistent.
func (b *Bundle) Validate() error {
	if len(b.ID) == 0 || len(b.ID) > MaxIDLen || !idRe.MatchString(b.ID) {
		return fmt.Errorf("patch id %q must be 1-%d letters, digits, '.', '_' or '-'", truncate(b.ID), MaxIDLen)
	}
	if b.Level == 0 {
		return fmt.Errorf("patch %s: level must be 1 or more", b.ID)
	}
	if len(b.CVEs) > MaxCVEs {
		return fmt.Errorf("patch %s: %d CVE ids, the limit is %d", b.ID, len(b.CVEs), MaxCVEs)
	}
	for _, c := range b.CVEs {
		if !cveRe.MatchString(c) {
			return fmt.Errorf("patch %s: %q is not a CVE id (CVE-YYYY-NNNN)", b.ID, truncate(c))
		}
	}
	if len(b.Description) > MaxTextLen {
		return fmt.Errorf("patch %s: description is longer than %d bytes", b.ID, MaxTextLen)
	}
	if len(b.Modules) == 0 {
		return fmt.Errorf("patch %s: no modules", b.ID)
	}
	if len(b.Modules) > MaxModules {
		return fmt.Errorf("patch %s: %d modules, the limit is %d", b.ID, len(b.Modules), MaxModules)
	}
	seen := map[string]bool{}
	for i := range b.Modules {
		m := &b.Modules[i]
		if err := m.validate(); err != nil {
			return fmt.Errorf("patch %s: module %d (%s): %w", b.ID, i, truncate(m.Name), err)
		}
		if seen[string(m.BuildID)] {
			return fmt.Errorf("patch %s: build-id %s appears twice", b.ID, m.BuildID)
		}
		seen[string(m.BuildID)] = true
	}
	return nil
}

func validConsistency(c Consistency) bool {
	return c == "" || c == SwitchAtCall || c == Quiescent
}

func (m *Module) validate() error {
	if len(m.BuildID) < MinBuildIDLen || len(m.BuildID) > MaxBuildIDLen {
		return fmt.Errorf("build-id of %d bytes (want %d-%d)", len(m.BuildID), MinBuildIDLen, MaxBuildIDLen)
	}
	if len(m.Name) > MaxNameLen {
		return fmt.Errorf("name longer than %d bytes", MaxNameLen)
	}
	if !validConsistency(m.Consistency) {
		return fmt.Errorf("unknown consistency %q", truncate(string(m.Consistency)))
	}
	if len(m.Code) > MaxCodeSize {
		return fmt.Errorf("%d bytes of code, the limit is %d", len(m.Code), MaxCodeSize)
	}
	if len(m.Funcs) == 0 {
		return errors.New("no functions")
	}
	if len(m.Funcs) > MaxFuncs {
		return fmt.Errorf("%d functions, the limit is %d", len(m.Funcs), MaxFuncs)
	}
	if len(m.Fixups) > MaxFixups {
		return fmt.Errorf("%d fixups, the limit is %d", len(m.Fixups), MaxFixups)
	}
	codeLen := uint64(len(m.Code))
	sites := map[uint64]string{}
	for _, f := range m.Funcs {
		if f.Name == "" || len(f.Name) > MaxNameLen || strings.ContainsAny(f.Name, "\x00\n") {
			return fmt.Errorf("function name %q is empty, too long or has control characters", truncate(f.Name))
		}
		if uint64(f.Offset)+uint64(f.Size) > codeLen || f.Size == 0 {
			return fmt.Errorf("function %s: code [%d,+%d) is outside the %d bytes of code", f.Name, f.Offset, f.Size, codeLen)
		}
		if !validConsistency(f.Consistency) {
			return fmt.Errorf("function %s: unknown consistency %q", f.Name, truncate(string(f.Consistency)))
		}
		if f.New {
			if f.Site != 0 || f.OldSize != 0 || len(f.OldHash) != 0 {
				return fmt.Errorf("new function %s must not name an old site", f.Name)
			}
			continue
		}
		if f.Site == 0 || f.OldSize == 0 {
			return fmt.Errorf("function %s: no old site", f.Name)
		}
		if f.Site+uint64(f.OldSize) < f.Site {
			return fmt.Errorf("function %s: old site overflows", f.Name)
		}
		if len(f.OldHash) != sha256.Size {
			return fmt.Errorf("function %s: old-bytes hash must be %d bytes of SHA-256", f.Name, sha256.Size)
		}
		if other, ok := sites[f.Site]; ok {
			return fmt.Errorf("functions %s and %s patch the same site %#x", other, f.Name, f.Site)
		}
		sites[f.Site] = f.Name
	}
	if len(sites) == 0 {
		return errors.New("no function replaces an old one")
	}
	for _, x := range m.Fixups {
		n := x.Kind.Size()
		if n == 0 {
			return fmt.Errorf("fixup at %d: unknown kind %q", x.Offset, truncate(string(x.Kind)))
		}
		if uint64(x.Offset)+uint64(n) > codeLen {
			return fmt.Errorf("fixup %s at %d lies outside the %d bytes of code", x.Kind, x.Offset, codeLen)
		}
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// Link returns a copy of the module's code with every fixup applied, for the
// module loaded with bias and the code mapped at base. It fails, naming the
// fixup, when a value does not fit its field (the region is out of reach).
func (m *Module) Link(bias, base uint64) ([]byte, error) {
	code := bytes.Clone(m.Code)
	for _, x := range m.Fixups {
		p := base + uint64(x.Offset)
		var v int64
		switch x.Kind {
		case ModulePC32, ModuleAbs64, ModuleAbs32, ModuleAbs32S:
			v = int64(bias + uint64(x.Addend))
		default:
			v = int64(base + uint64(x.Addend))
		}
		if x.Kind == ModulePC32 {
			v -= int64(p)
		}
		var fits bool
		switch x.Kind {
		case ModuleAbs64, RegionAbs64:
			binary.LittleEndian.PutUint64(code[x.Offset:], uint64(v))
			continue
		case ModulePC32, ModuleAbs32S, RegionAbs32S:
			fits = v >= -1<<31 && v < 1<<31
		case ModuleAbs32, RegionAbs32:
			fits = v >= 0 && v < 1<<32
		}
		if !fits {
			return nil, fmt.Errorf("fixup %s at code offset %d: value %#x does not fit in 32 bits (code mapped at %#x, module bias %#x); the code must be mapped closer to the module", x.Kind, x.Offset, v, base, bias)
		}
		binary.LittleEndian.PutUint32(code[x.Offset:], uint32(v))
	}
	return code, nil
}
