package buildtree

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"hotfleet/internal/testenv"
)

// TestLineMarkers checks where the #line directives go, and, with gcc's
// preprocessor, that __LINE__ after the fix expands to its original value.
func TestLineMarkers(t *testing.T) {
	cases := []struct {
		name       string
		orig, fix  string
		want       string // the fixed file with its markers
		wantMarker int
	}{
		{
			name:       "lines added",
			orig:       "int a;\nint b;\nint here = __LINE__;\n",
			fix:        "int a;\nint a2;\nint a3;\nint b;\nint here = __LINE__;\n",
			want:       "int a;\nint a2;\nint a3;\n#line 2\nint b;\nint here = __LINE__;\n",
			wantMarker: 1,
		},
		{
			name:       "lines removed",
			orig:       "int a;\nint a2;\nint a3;\nint b;\nint here = __LINE__;\n",
			fix:        "int a;\nint b;\nint here = __LINE__;\n",
			want:       "int a;\n#line 4\nint b;\nint here = __LINE__;\n",
			wantMarker: 1,
		},
		{
			name:       "same count",
			orig:       "int a;\nint b;\nint here = __LINE__;\n",
			fix:        "int c;\nint b;\nint here = __LINE__;\n",
			want:       "int c;\nint b;\nint here = __LINE__;\n",
			wantMarker: 0,
		},
		{
			name: "after a continued macro",
			orig: "#define M(x) \\\n\t((x) + 1)\nint b;\nint here = __LINE__;\n",
			fix:  "#define M(x) \\\n\t((x) + \\\n\t 2)\nint b;\nint here = __LINE__;\n",
			// The changed block is the macro's second line; the next line
			// continues it and cannot take a directive.
			want:       "#define M(x) \\\n\t((x) + \\\n\t 2)\n#line 3\nint b;\nint here = __LINE__;\n",
			wantMarker: 1,
		},
		{
			name:       "inside a block comment",
			orig:       "int a;\n/* one\n   two */\nint here = __LINE__;\n",
			fix:        "int a;\nint a2;\n/* one\n   more\n   two */\nint here = __LINE__;\n",
			want:       "int a;\nint a2;\n#line 2\n/* one\n   more\n   two */\n#line 4\nint here = __LINE__;\n",
			wantMarker: 2,
		},
		{
			name:       "second block undoes the first shift",
			orig:       "int a;\nint b;\nint c;\nint d;\nint e;\nint here = __LINE__;\n",
			fix:        "int a;\nint a2;\nint b;\nint c;\nint e;\nint here = __LINE__;\n",
			want:       "int a;\nint a2;\n#line 2\nint b;\nint c;\n#line 5\nint e;\nint here = __LINE__;\n",
			wantMarker: 2,
		},
	}
	cc := testenv.NeedGCC(t)
	ctx := context.Background()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			orig, fixed := filepath.Join(dir, "orig.c"), filepath.Join(dir, "fixed.c")
			os.WriteFile(orig, []byte(c.orig), 0o644)
			os.WriteFile(fixed, []byte(c.fix), 0o644)
			n, err := addLineMarkers(ctx, orig, fixed)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(fixed)
			if string(got) != c.want {
				t.Fatalf("fixed file with markers:\n%s\nwant:\n%s", got, c.want)
			}
			if c.wantMarker > 0 && n != c.wantMarker {
				t.Errorf("%d markers, want %d", n, c.wantMarker)
			}
			want := strings.Count(c.orig[:strings.Index(c.orig, "int here")], "\n") + 1
			if line := expandLine(t, cc, fixed); line != want {
				t.Errorf("__LINE__ after the fix expands to %d, want the original %d", line, want)
			}
			if line := expandFile(t, cc, fixed); line != "fixed.c" {
				t.Errorf("__FILE__ after the markers is %q, want fixed.c", line)
			}
		})
	}
}

var hereRe = regexp.MustCompile(`int here = (\d+);`)

func expandLine(t *testing.T, cc, file string) int {
	t.Helper()
	out, err := exec.Command(cc, "-E", "-P", file).CombinedOutput()
	if err != nil {
		t.Fatalf("gcc -E %s: %v\n%s", file, err, out)
	}
	m := hereRe.FindSubmatch(out)
	if m == nil {
		t.Fatalf("gcc -E %s printed no __LINE__:\n%s", file, out)
	}
	n := 0
	for _, d := range m[1] {
		n = n*10 + int(d-'0')
	}
	return n
}

func expandFile(t *testing.T, cc, file string) string {
	t.Helper()
	src, _ := os.ReadFile(file)
	probe := file + ".probe.c"
	os.WriteFile(probe, append(src, []byte("const char *f = __FILE__;\n")...), 0o644)
	cmd := exec.Command(cc, "-E", "-P", filepath.Base(probe))
	cmd.Dir = filepath.Dir(file)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("gcc -E: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`f = "([^"]*)";`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no __FILE__ in:\n%s", out)
	}
	return strings.TrimSuffix(string(m[1]), ".probe.c")
}
