package buildtree

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"hotfleet/internal/elfx"
)

// Limits on what the driver reads from the build.
const (
	maxArchiveSize = 1 << 30 // an archive larger than this is not read (no static library is this big)
	maxDepsSize    = 16 << 20
	maxLogLine     = 4 << 20 // one compiler command line
)

// readLog reads the wrapper's JSON lines; a missing log is an empty build.
func readLog(path string) ([]Invocation, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Invocation
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), maxLogLine)
	for sc.Scan() {
		var inv Invocation
		if err := jsonUnmarshal(sc.Bytes(), &inv); err != nil {
			continue // a line cut short by a killed compiler
		}
		out = append(out, inv.split()...)
	}
	return out, sc.Err()
}

// abs resolves a path of a compiler command against its working directory.
func (inv *Invocation) abs(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	return filepath.Join(inv.Cwd, p)
}

// readDeps parses a dependency file in make syntax and returns every file
// named in it (targets and prerequisites alike), resolved against cwd.
func readDeps(path, cwd string) []string {
	st, err := os.Stat(path)
	if err != nil || st.Size() > maxDepsSize {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	text := strings.ReplaceAll(string(data), "\\\n", " ")
	var out []string
	for _, line := range strings.Split(text, "\n") {
		_, deps, ok := strings.Cut(line, ": ")
		if !ok {
			if strings.HasSuffix(line, ":") {
				continue
			}
			deps = line
		}
		// Spaces in names are escaped with a backslash.
		deps = strings.ReplaceAll(deps, "\\ ", "\x00")
		for _, d := range strings.Fields(deps) {
			d = strings.ReplaceAll(d, "\x00", " ")
			if !filepath.IsAbs(d) {
				d = filepath.Join(cwd, d)
			}
			out = append(out, filepath.Clean(d))
		}
	}
	return out
}

// archiveMembers returns the contents' SHA-256 of each object in an ar
// archive (regular or thin).
func archiveMembers(path string) ([][32]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Size() > maxArchiveSize {
		return nil, fmt.Errorf("%s: %d bytes is over the limit of %d", path, st.Size(), maxArchiveSize)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	thin := bytes.HasPrefix(data, []byte("!<thin>\n"))
	if !thin && !bytes.HasPrefix(data, []byte("!<arch>\n")) {
		return nil, fmt.Errorf("%s is not an ar archive", path)
	}
	var sums [][32]byte
	var names []byte
	off := 8
	for off+60 <= len(data) {
		h := data[off : off+60]
		name := strings.TrimRight(string(h[:16]), " ")
		size, err := strconv.Atoi(strings.TrimSpace(string(h[48:58])))
		if err != nil || size < 0 {
			return nil, fmt.Errorf("%s: bad member header at %d", path, off)
		}
		off += 60
		inline := !thin || name == "/" || name == "//" || name == "/SYM64/"
		end := off
		if inline {
			end = off + size
			if end > len(data) {
				return nil, fmt.Errorf("%s: member at %d runs past the end", path, off)
			}
		}
		body := data[off:end]
		switch {
		case name == "//":
			names = body
		case name == "/" || name == "/SYM64/" || strings.HasPrefix(name, "__.SYMDEF"):
		case thin:
			// A thin archive names its members: "/N" indexes the names table.
			member := strings.TrimSuffix(name, "/")
			if strings.HasPrefix(name, "/") {
				if i, err := strconv.Atoi(name[1:]); err == nil && i < len(names) {
					member = string(names[i:])
					if j := strings.Index(member, "/\n"); j >= 0 {
						member = member[:j]
					}
				}
			}
			if !filepath.IsAbs(member) {
				member = filepath.Join(filepath.Dir(path), member)
			}
			if b, err := os.ReadFile(member); err == nil {
				sums = append(sums, sha256.Sum256(b))
			}
		default:
			sums = append(sums, sha256.Sum256(body))
		}
		off = end
		if off%2 == 1 {
			off++
		}
	}
	return sums, nil
}

// linkedObjects returns, for one link command, the objects it linked: the
// objects on its command line and the members of the archives it names,
// matched by content against the objects the build compiled (byHash).
func linkedObjects(inv *Invocation, byHash map[[32]byte][]string) []string {
	var out []string
	addArchive := func(p string) {
		sums, err := archiveMembers(p)
		if err != nil {
			return
		}
		for _, s := range sums {
			out = append(out, byHash[s]...)
		}
	}
	for _, in := range inv.Inputs {
		p := inv.abs(in)
		switch {
		case strings.HasSuffix(p, ".a"):
			addArchive(p)
		case strings.HasSuffix(p, ".o") || strings.HasSuffix(p, ".obj") || strings.HasSuffix(p, ".lo"):
			out = append(out, p)
		default:
			if b, err := os.ReadFile(p); err == nil {
				if s := sha256.Sum256(b); len(byHash[s]) > 0 {
					out = append(out, byHash[s]...)
				}
			}
		}
	}
	for _, l := range inv.Libs {
		for _, d := range inv.LibDirs {
			dir := inv.abs(d)
			if _, err := os.Stat(filepath.Join(dir, "lib"+l+".so")); err == nil {
				break // the shared library is a module of its own
			}
			if a := filepath.Join(dir, "lib"+l+".a"); fileExists(a) {
				addArchive(a)
				break
			}
		}
	}
	return out
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// elfInfo is what the driver needs to know about a linked file.
type elfInfo struct {
	buildID []byte
	soname  string
	symtab  bool
}

func readELFInfo(path string) (info elfInfo, err error) {
	f, err := elfx.Open(path)
	if err != nil {
		return info, err
	}
	defer f.Close()
	if info.buildID, err = f.BuildID(); err != nil {
		return info, err
	}
	for _, s := range f.Sections {
		if s.Type == elf.SHT_SYMTAB {
			info.symtab = true
		}
	}
	info.soname = soname(path)
	return info, nil
}

// soname reads DT_SONAME; debug/elf can panic on corrupt input.
func soname(path string) (name string) {
	defer func() {
		if recover() != nil {
			name = ""
		}
	}()
	f, err := elf.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if s, err := f.DynString(elf.DT_SONAME); err == nil && len(s) > 0 {
		return s[0]
	}
	return ""
}

// unitSymbols returns the source file name (STT_FILE) and the names of the
// functions an object defines.
func unitSymbols(obj string) (file string, funcs []string) {
	f, err := elfx.Open(obj)
	if err != nil {
		return "", nil
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		return "", nil
	}
	for _, s := range syms {
		switch {
		case s.Type == elf.STT_FILE && file == "":
			file = s.Name
		case s.Type == elf.STT_FUNC && s.Defined() && s.Size > 0:
			funcs = append(funcs, s.Name)
		}
	}
	return file, funcs
}

// targetHasUnit is the fallback when the build log does not say where a unit
// went: the target's .symtab has the unit's source file and at least one of
// its functions under that file or as a global.
func targetHasUnit(symsOf string, file string, funcs []string) bool {
	if file == "" || len(funcs) == 0 {
		return false
	}
	f, err := elfx.Open(symsOf)
	if err != nil {
		return false
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		return false
	}
	want := map[string]bool{}
	for _, fn := range funcs {
		want[fn] = true
	}
	hasFile := false
	for _, s := range syms {
		if s.Type == elf.STT_FILE && s.Name == file {
			hasFile = true
		}
	}
	if !hasFile {
		return false
	}
	for _, s := range syms {
		if s.Type == elf.STT_FUNC && s.Defined() && want[s.Name] && (s.File == file || s.Bind == elf.STB_GLOBAL) {
			return true
		}
	}
	return false
}

// hasLTO reports whether an object carries GCC's intermediate code.
func hasLTO(obj string) bool {
	f, err := elfx.Open(obj)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, s := range f.Sections {
		if strings.HasPrefix(s.Name, ".gnu.lto_") {
			return true
		}
	}
	return false
}
