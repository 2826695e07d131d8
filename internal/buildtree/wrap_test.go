package buildtree

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseInvocation(t *testing.T) {
	cases := []struct {
		argv string
		want Invocation
	}{
		{"cc -O2 -c foo.c", Invocation{Lang: "c", Sources: []string{"foo.c"}, Output: "foo.o", Compile: true}},
		{"gcc -c -o obj/x.o src/x.c -MD -MF obj/.deps/x.Tpo -Iinc -DX=1", Invocation{Lang: "c", Sources: []string{"src/x.c"}, Output: "obj/x.o", Compile: true, Deps: "obj/.deps/x.Tpo"}},
		{"gcc -MMD -c a.c -o b/a.o", Invocation{Lang: "c", Sources: []string{"a.c"}, Output: "b/a.o", Compile: true, Deps: "b/a.d"}},
		{"g++ -std=c++17 -c t.cc", Invocation{Lang: "c++", Sources: []string{"t.cc"}, Output: "t.o", Compile: true}},
		{"gcc -c x.cpp", Invocation{Lang: "c++", Sources: []string{"x.cpp"}, Output: "x.o", Compile: true}},
		{"cc -c fast.S -o fast.o", Invocation{Lang: "asm", Sources: []string{"fast.S"}, Output: "fast.o", Compile: true, Asm: true}},
		{"cc -flto -O2 -c a.c", Invocation{Lang: "c", Sources: []string{"a.c"}, Output: "a.o", Compile: true, LTO: true}},
		{"cc -o prog main.o -L. -lutil libfoo.so.1 -Wl,-rpath,x", Invocation{Lang: "c", Inputs: []string{"main.o", "libfoo.so.1"}, Libs: []string{"util"}, LibDirs: []string{"."}, Output: "prog", Link: true}},
		{"cc -shared -o libx.so a.o b.a", Invocation{Lang: "c", Inputs: []string{"a.o", "b.a"}, Output: "libx.so", Link: true}},
		{"cc main.c", Invocation{Lang: "c", Sources: []string{"main.c"}, Output: "a.out", Link: true}},
		{"cc -E x.c", Invocation{Lang: "c", Sources: []string{"x.c"}}},
		{"cc -x c -c conftest.in -o conftest.o", Invocation{Lang: "c", Sources: []string{"conftest.in"}, Output: "conftest.o", Compile: true}},
		{"cc --version", Invocation{Lang: "c"}},
		{"cc -S a.c", Invocation{Lang: "c", Sources: []string{"a.c"}, ToAsm: true}},
		{"cc -c a.c sub/b.c", Invocation{Lang: "c", Sources: []string{"a.c", "sub/b.c"}, Compile: true}},
	}
	for _, c := range cases {
		argv := strings.Fields(c.argv)
		got := parseInvocation("/w", argv[0], argv[1:])
		c.want.Cwd, c.want.Argv = "/w", argv
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", c.argv, got, c.want)
		}
	}
}

func TestWrapperNames(t *testing.T) {
	for name, want := range map[string]bool{
		"cc": true, "gcc": true, "c++": true, "g++": true, "gcc-12": true, "x86_64-linux-gnu-gcc": true,
		"x86_64-linux-gnu-gcc-12": true, "x86_64-linux-gnu-g++-12": true,
		"gcc-ar": false, "x86_64-linux-gnu-gcc-ar-12": false, "cpp": false, "hotfleet": false, "clang": false,
	} {
		if IsWrapperName(name) != want {
			t.Errorf("IsWrapperName(%q) = %v, want %v", name, !want, want)
		}
	}
}

// TestResponseFile reads a compile command whose arguments are in @FILE.
func TestResponseFile(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "args.rsp"), []byte("-O2 -c \"my dir/x.c\"\n-o 'out dir/x.o' @more.rsp"), 0o644)
	os.WriteFile(filepath.Join(dir, "more.rsp"), []byte("-flto\n"), 0o644)
	got := parseInvocation(dir, "gcc", []string{"@args.rsp"})
	want := Invocation{Cwd: dir, Argv: []string{"gcc", "@args.rsp"}, Lang: "c", Sources: []string{"my dir/x.c"}, Output: "out dir/x.o", Compile: true, LTO: true}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

// TestWrapperFlags checks the flags the wrapper adds to a compile.
func TestWrapperFlags(t *testing.T) {
	t.Setenv(envTree, "/w/tree")
	t.Setenv(envSource, "/home/me/src")
	t.Setenv(envDeps, t.TempDir())
	cases := []struct {
		argv string
		want []string // the added flags, with the dependency file as DEPS
	}{
		{"cc -O2 -c a.c", []string{"-ffunction-sections", "-fdata-sections", "-g", "-ffile-prefix-map=/w/tree=/home/me/src", "-MD", "-MF", "DEPS"}},
		{"cc -O2 -ffunction-sections -c a.c", []string{"-fdata-sections", "-g", "-ffile-prefix-map=/w/tree=/home/me/src", "-MD", "-MF", "DEPS"}},
		// Debian's flags map the build directory themselves, and ask for -g.
		{"cc -O2 -g -ffile-prefix-map=/w/tree=. -c a.c", []string{"-ffunction-sections", "-fdata-sections", "-MD", "-MF", "DEPS"}},
		// Debug information turned off is turned on again; any -g level stays.
		{"cc -g -g0 -c a.c", []string{"-ffunction-sections", "-fdata-sections", "-g", "-ffile-prefix-map=/w/tree=/home/me/src", "-MD", "-MF", "DEPS"}},
		{"cc -ggdb3 -c a.c", []string{"-ffunction-sections", "-fdata-sections", "-ffile-prefix-map=/w/tree=/home/me/src", "-MD", "-MF", "DEPS"}},
		// Assembly gets no debug information it did not ask for.
		{"cc -c a.S", []string{"-ffunction-sections", "-fdata-sections", "-ffile-prefix-map=/w/tree=/home/me/src", "-MD", "-MF", "DEPS"}},
		// The build's own dependency file is copied afterwards, not replaced.
		{"cc -g -MMD -MF x.d -c a.c", []string{"-ffunction-sections", "-fdata-sections", "-ffile-prefix-map=/w/tree=/home/me/src"}},
		{"cc -o prog a.o", nil},
		{"cc -S a.c", []string{"-ffunction-sections", "-fdata-sections", "-g", "-ffile-prefix-map=/w/tree=/home/me/src"}},
		{"cc -E a.c", nil},
	}
	for _, c := range cases {
		argv := strings.Fields(c.argv)
		inv := parseInvocation("/w/tree", argv[0], argv[1:])
		got, _ := wrapperFlags(&inv)
		for i, f := range got {
			if f == inv.Deps && inv.Deps != "" {
				got[i] = "DEPS"
			}
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: adds %q, want %q", c.argv, got, c.want)
		}
	}
}

func TestSplitInvocation(t *testing.T) {
	inv := parseInvocation("/w", "cc", []string{"-O2", "-c", "a.c", "sub/b.c"})
	got := inv.split()
	if len(got) != 2 || got[0].Output != "a.o" || got[1].Output != "b.o" || got[1].Sources[0] != "sub/b.c" || got[0].abs(got[0].Output) != "/w/a.o" {
		t.Errorf("split %+v", got)
	}
}
