package buildtree

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// fix is a validated fix: the strip level it applies with and the files it
// changes, relative to the tree.
type fix struct {
	path  string
	strip string // "-p1" or "-p0"
	files []string
	notes []string // offsets and fuzz patch reported
}

// checkFix finds how fix.diff applies to dir without changing dir: -p1 (git
// and most upstream diffs), then -p0. The error names the failing hunks.
func checkFix(ctx context.Context, dir, diff string) (*fix, error) {
	st, err := os.Stat(diff)
	if err != nil {
		return nil, fmt.Errorf("fix %s: %w", diff, err)
	}
	if st.IsDir() || st.Size() == 0 {
		return nil, fmt.Errorf("fix %s is empty or a directory: give a unified diff (diff -u, git diff)", diff)
	}
	var first string
	for _, p := range []string{"-p1", "-p0"} {
		out, err := runPatch(ctx, dir, diff, p, true)
		if err == nil {
			f := &fix{path: diff, strip: p}
			f.files, f.notes = parsePatchOutput(out)
			if len(f.files) == 0 {
				return nil, fmt.Errorf("fix %s changes no file: give a unified diff (diff -u, git diff)", diff)
			}
			return f, nil
		}
		if first == "" || (strings.Contains(first, "can't find file") && !strings.Contains(out, "can't find file")) {
			first = p + ":\n" + out
		}
	}
	hint := "make the diff against this exact source tree (paths relative to it, or with one leading directory)"
	if strings.Contains(first, "Reversed (or previously applied) patch detected") {
		hint = "the tree seems to contain the fix already: give the tree the shipped binaries were built from, without the fix"
	}
	return nil, fmt.Errorf("fix %s does not apply to %s (tried patch -p1 and -p0; nothing was changed):\n%s\n%s", diff, dir, indent(strings.TrimSpace(first)), hint)
}

// runPatch runs patch in dir; with dryRun it changes nothing.
func runPatch(ctx context.Context, dir, diff, strip string, dryRun bool) (string, error) {
	args := []string{strip, "--batch", "--forward", "--no-backup-if-mismatch", "-r", "-", "-i", diff}
	if dryRun {
		args = append([]string{"--dry-run"}, args...)
	}
	abs, _ := filepath.Abs(diff)
	args[len(args)-1] = abs
	cmd := exec.CommandContext(ctx, "patch", args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err == nil && strings.Contains(out.String(), "can't find file") {
		err = fmt.Errorf("some files are missing")
	}
	return out.String(), err
}

// parsePatchOutput returns the files patch reported, and its notes on hunks
// that applied with an offset or fuzz.
func parsePatchOutput(out string) (files, notes []string) {
	seen := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		l := sc.Text()
		var name string
		for _, p := range []string{"checking file ", "patching file "} {
			if strings.HasPrefix(l, p) {
				name = strings.TrimPrefix(l, p)
			}
		}
		if name != "" {
			if uq, err := strconv.Unquote(name); err == nil {
				name = uq
			} else {
				name = strings.Trim(name, "'")
			}
			name = filepath.Clean(name)
			if !seen[name] {
				seen[name] = true
				files = append(files, name)
			}
			continue
		}
		if strings.Contains(l, "succeeded at") || strings.Contains(l, "with fuzz") {
			notes = append(notes, strings.TrimSpace(l))
		}
	}
	return files, notes
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}

// Kinds of changed files.
func isCSource(name string) bool {
	switch filepath.Ext(name) {
	case ".c", ".h", ".cc", ".cpp", ".cxx", ".c++", ".C", ".H", ".hh", ".hpp", ".hxx", ".h++", ".inc", ".def", ".tcc", ".ipp", ".inl":
		return true
	}
	return false
}

func isAsmSource(name string) bool { return asmSuffixes[filepath.Ext(name)] }

// isBuildFile reports files that describe the build, not code.
func isBuildFile(name string) bool {
	base := filepath.Base(name)
	switch {
	case strings.HasPrefix(base, "Makefile"), strings.HasPrefix(base, "GNUmakefile"), strings.HasPrefix(base, "makefile"),
		base == "CMakeLists.txt", base == "meson.build", base == "meson_options.txt", base == "meson.options",
		strings.HasPrefix(base, "configure"), base == "config.status":
		return true
	}
	switch filepath.Ext(base) {
	case ".mk", ".mak", ".am", ".ac", ".m4", ".cmake", ".in":
		return true
	}
	return strings.HasPrefix(filepath.ToSlash(name), "debian/")
}

// lineBlock is one change block between the original and the fixed file:
// old lines [oldStart, oldStart+oldLen) became new lines [newStart, newStart+newLen).
type lineBlock struct {
	oldStart, oldLen, newStart, newLen int
}

// changeBlocks compares two files with diff -U0, which lists exactly the
// change blocks, whatever offsets or fuzz patch applied the fix with.
func changeBlocks(ctx context.Context, oldPath, newPath string) ([]lineBlock, error) {
	cmd := exec.CommandContext(ctx, "diff", "-U0", "-a", oldPath, newPath)
	out, err := cmd.Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			return nil, fmt.Errorf("compare %s with the fixed file: %v", oldPath, err)
		}
	}
	var blocks []lineBlock
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(l, "@@ ") {
			continue
		}
		f := strings.Fields(l)
		if len(f) < 3 {
			continue
		}
		os, ol := parseRange(f[1][1:])
		ns, nl := parseRange(f[2][1:])
		// With a zero length, diff gives the line before the block.
		if ol == 0 {
			os++
		}
		if nl == 0 {
			ns++
		}
		blocks = append(blocks, lineBlock{os, ol, ns, nl})
	}
	return blocks, nil
}

func parseRange(s string) (start, n int) {
	a, b, ok := strings.Cut(s, ",")
	start, _ = strconv.Atoi(a)
	n = 1
	if ok {
		n, _ = strconv.Atoi(b)
	}
	return start, n
}

// lineState is the lexical state at the start of each line of a C or C++
// file: whether it starts inside a block comment or a raw string, and whether
// the line before ends with a backslash (a continued macro or string).
type lineState struct {
	inComment, inRaw, continued bool
}

// scanLines returns the state at the start of every line (index 0 = line 1)
// and one more entry for the end of the file.
func scanLines(lines []string) []lineState {
	st := make([]lineState, len(lines)+1)
	inComment, inRaw := false, false
	rawEnd := ""
	prevCont := false
	for i, l := range lines {
		st[i] = lineState{inComment, inRaw, prevCont}
		inStr := byte(0)
		for j := 0; j < len(l); j++ {
			c := l[j]
			switch {
			case inComment:
				if c == '*' && j+1 < len(l) && l[j+1] == '/' {
					inComment = false
					j++
				}
			case inRaw:
				if strings.HasPrefix(l[j:], rawEnd) {
					inRaw = false
					j += len(rawEnd) - 1
				}
			case inStr != 0:
				if c == '\\' {
					j++
				} else if c == inStr {
					inStr = 0
				}
			case c == '/' && j+1 < len(l) && l[j+1] == '/':
				j = len(l)
			case c == '/' && j+1 < len(l) && l[j+1] == '*':
				inComment = true
				j++
			case c == 'R' && j+1 < len(l) && l[j+1] == '"' && (j == 0 || !isIdent(l[j-1]) || l[j-1] == 'u' || l[j-1] == 'U' || l[j-1] == 'L' || l[j-1] == '8'):
				if k := strings.IndexByte(l[j+2:], '('); k >= 0 {
					rawEnd = ")" + l[j+2:j+2+k] + "\""
					inRaw = true
					j += 2 + k
				}
			case c == '"' || c == '\'':
				inStr = c
			}
		}
		prevCont = strings.HasSuffix(l, "\\")
	}
	st[len(lines)] = lineState{inComment, inRaw, prevCont}
	return st
}

func isIdent(c byte) bool {
	return c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// addLineMarkers inserts, after each change block of the fixed file, a
// "#line N" directive that gives the next unchanged line its number in the
// original file, so __LINE__ in unchanged code and the line numbers the
// compiler embeds (assertions, warnings) stay what they were. The directive
// has no file name, so __FILE__ is unchanged. It returns how many it added.
func addLineMarkers(ctx context.Context, origPath, fixedPath string) (int, error) {
	blocks, err := changeBlocks(ctx, origPath, fixedPath)
	if err != nil || len(blocks) == 0 {
		return 0, err
	}
	data, err := os.ReadFile(fixedPath)
	if err != nil {
		return 0, err
	}
	text := string(data)
	trailingNL := strings.HasSuffix(text, "\n")
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if text == "" {
		lines = nil
	}
	states := scanLines(lines)
	// insertAt[i] = original number of new line i+1 (1-based index i).
	insert := map[int]int{}
	shift := 0 // compiler's line number minus the line's place in the fixed file
	for bi, b := range blocks {
		// The first new line after the block and its original number.
		n := b.newStart + b.newLen
		o := b.oldStart + b.oldLen
		limit := len(lines) + 1
		if bi+1 < len(blocks) {
			limit = blocks[bi+1].newStart
		}
		for n < limit && n <= len(lines) {
			s := states[n-1]
			if !s.inComment && !s.inRaw && !s.continued {
				break
			}
			n++
			o++
		}
		if n >= limit || n > len(lines) {
			continue // the next block follows, or the file ends
		}
		if o-n == shift {
			continue // the compiler already counts this line right
		}
		insert[n] = o
		shift = o - n
	}
	if len(insert) == 0 {
		return 0, nil
	}
	var buf bytes.Buffer
	for i, l := range lines {
		if o, ok := insert[i+1]; ok {
			fmt.Fprintf(&buf, "#line %d\n", o)
		}
		buf.WriteString(l)
		if i < len(lines)-1 || trailingNL {
			buf.WriteByte('\n')
		}
	}
	st, err := os.Stat(fixedPath)
	if err != nil {
		return 0, err
	}
	if err := os.WriteFile(fixedPath, buf.Bytes(), st.Mode().Perm()); err != nil {
		return 0, err
	}
	return len(insert), nil
}
