package buildtree

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
)

// Environment of the wrapped build. The driver sets these; the wrapper reads
// them. A wrapper started without them only runs the real compiler.
const (
	envLog     = "HOTFLEET_WRAP_LOG"    // JSON lines, one per compiler invocation
	envBin     = "HOTFLEET_WRAP_BIN"    // the directory of the wrapper links, skipped in PATH
	envDeps    = "HOTFLEET_WRAP_DEPS"   // directory for the dependency files the wrapper adds
	envTree    = "HOTFLEET_WRAP_TREE"   // the copy being built
	envSource  = "HOTFLEET_WRAP_SOURCE" // the user's tree the copy stands for
	envRealCC  = "HOTFLEET_REAL_CC"     // the C compiler when none of the same name is in PATH
	envRealCXX = "HOTFLEET_REAL_CXX"    // the same for C++
	envNested  = "HOTFLEET_WRAP_NESTED" // set for the real compiler: a compiler wrapper calling cc again passes through
)

// wrapperNameRe matches the compiler names the wrapper answers to: cc, gcc,
// c++, g++, with an optional target triple and version. gcc-ar, gcc-nm and
// cpp are not compilers and are never wrapped.
var wrapperNameRe = regexp.MustCompile(`^(x86_64-linux-gnu-)?(cc|gcc|c\+\+|g\+\+)(-[0-9]+(\.[0-9]+)*)?$`)

// IsWrapperName reports whether a program called name is the compiler
// wrapper: hotfleet runs in wrapper mode when started under such a name.
func IsWrapperName(name string) bool { return wrapperNameRe.MatchString(name) }

// Invocation is one compiler run as the wrapper logged it.
type Invocation struct {
	Cwd     string   `json:"cwd"`
	Argv    []string `json:"argv"` // as the build system called it
	Lang    string   `json:"lang"` // c, c++ or asm
	Sources []string `json:"sources,omitempty"`
	Inputs  []string `json:"inputs,omitempty"` // objects, archives and libraries given to a link
	Libs    []string `json:"libs,omitempty"`   // -l names
	LibDirs []string `json:"lib_dirs,omitempty"`
	Output  string   `json:"output,omitempty"`
	Compile bool     `json:"compile"` // compiles sources into objects (-c)
	Link    bool     `json:"link"`    // links an executable or shared library
	LTO     bool     `json:"lto"`
	Asm     bool     `json:"asm"`            // some source is assembly
	Deps    string   `json:"deps,omitempty"` // dependency file (make syntax) of the compile
	// ToAsm is a compile to assembly text (-S), assembled by a later call.
	ToAsm bool `json:"to_asm,omitempty"`
}

var (
	cxxSuffixes = map[string]bool{".cc": true, ".cp": true, ".cxx": true, ".cpp": true, ".CPP": true, ".c++": true, ".C": true, ".ii": true}
	cSuffixes   = map[string]bool{".c": true, ".i": true}
	asmSuffixes = map[string]bool{".s": true, ".S": true, ".sx": true}
	// optsWithArg take the next argument as their value.
	optsWithArg = map[string]bool{
		"-o": true, "-I": true, "-D": true, "-U": true, "-include": true, "-imacros": true, "-isystem": true,
		"-iquote": true, "-idirafter": true, "-iprefix": true, "-iwithprefix": true, "-iwithprefixbefore": true,
		"-isysroot": true, "-imultilib": true, "-x": true, "-MF": true, "-MT": true, "-MQ": true, "-L": true,
		"-l": true, "-Xlinker": true, "-Xassembler": true, "-Xpreprocessor": true, "-T": true, "-u": true,
		"-z": true, "-e": true, "-aux-info": true, "-dumpbase": true, "-dumpdir": true, "-wrapper": true,
		"--param": true, "-A": true,
	}
)

// parseInvocation reads what a compiler command line does. It never fails:
// whatever it does not understand it leaves out, and the compiler runs as
// asked anyway.
func parseInvocation(cwd, tool string, args []string) Invocation {
	inv := Invocation{Cwd: cwd, Argv: append([]string{tool}, args...), Lang: "c"}
	if strings.Contains(tool, "++") {
		inv.Lang = "c++"
	}
	args = expandResponseFiles(cwd, args, 0)
	var compileOnly, preprocess, depsOnly, ownDeps bool
	var ownDepFile string
	xlang := ""
	for i := 0; i < len(args); i++ {
		a := args[i]
		next := func() string {
			if i+1 < len(args) {
				i++
				return args[i]
			}
			return ""
		}
		switch {
		case a == "-c":
			compileOnly = true
		case a == "-S":
			inv.ToAsm = true
		case a == "-E":
			preprocess = true
		case a == "-M" || a == "-MM":
			depsOnly = true
		case a == "-MD" || a == "-MMD":
			ownDeps = true
		case a == "-MF":
			ownDepFile = next()
		case strings.HasPrefix(a, "-MF"):
			ownDepFile = a[3:]
		case strings.HasPrefix(a, "-Wp,-MD,") || strings.HasPrefix(a, "-Wp,-MMD,"):
			ownDeps = true
			ownDepFile = a[strings.LastIndexByte(a, ',')+1:]
		case a == "-o":
			inv.Output = next()
		case strings.HasPrefix(a, "-o"):
			inv.Output = a[2:]
		case a == "-x":
			xlang = next()
		case strings.HasPrefix(a, "-x"):
			xlang = a[2:]
		case strings.HasPrefix(a, "-flto") && a != "-flto=none":
			inv.LTO = true
		case a == "-fno-lto":
			inv.LTO = false
		case a == "-l":
			inv.Libs = append(inv.Libs, next())
		case strings.HasPrefix(a, "-l"):
			inv.Libs = append(inv.Libs, a[2:])
		case a == "-L":
			inv.LibDirs = append(inv.LibDirs, next())
		case strings.HasPrefix(a, "-L"):
			inv.LibDirs = append(inv.LibDirs, a[2:])
		case optsWithArg[a]:
			next()
		case strings.HasPrefix(a, "-") && a != "-":
			// Any other option, with its value attached.
		default:
			ext := filepath.Ext(a)
			switch {
			case xlang != "" && xlang != "none":
				inv.Sources = append(inv.Sources, a)
				switch xlang {
				case "assembler", "assembler-with-cpp":
					inv.Asm = true
				case "c++", "c++-header":
					inv.Lang = "c++"
				}
			case cSuffixes[ext]:
				inv.Sources = append(inv.Sources, a)
			case cxxSuffixes[ext]:
				inv.Sources = append(inv.Sources, a)
				inv.Lang = "c++"
			case asmSuffixes[ext]:
				inv.Sources = append(inv.Sources, a)
				inv.Asm = true
			default:
				inv.Inputs = append(inv.Inputs, a)
			}
		}
	}
	if inv.Asm && len(inv.Sources) > 0 && inv.Lang == "c" {
		onlyAsm := true
		for _, s := range inv.Sources {
			if !asmSuffixes[filepath.Ext(s)] && xlang == "" {
				onlyAsm = false
			}
		}
		if onlyAsm {
			inv.Lang = "asm"
		}
	}
	if preprocess || depsOnly || inv.ToAsm {
		return inv
	}
	switch {
	case compileOnly && len(inv.Sources) > 0:
		inv.Compile = true
		if inv.Output == "" && len(inv.Sources) == 1 {
			inv.Output = defaultObject(inv.Sources[0])
		}
	case !compileOnly && (len(inv.Sources) > 0 || len(inv.Inputs) > 0 || len(inv.Libs) > 0):
		inv.Link = true
		if inv.Output == "" {
			inv.Output = "a.out"
		}
	}
	if inv.Compile && ownDeps {
		inv.Deps = ownDepFile
		if inv.Deps == "" && inv.Output != "" {
			inv.Deps = strings.TrimSuffix(inv.Output, filepath.Ext(inv.Output)) + ".d"
		}
	}
	return inv
}

// maxResponseDepth bounds nested @file arguments (gcc allows nesting).
const maxResponseDepth = 8

// expandResponseFiles replaces each @FILE argument by the arguments FILE
// holds, for reading the command line only: the compiler still gets @FILE.
func expandResponseFiles(cwd string, args []string, depth int) []string {
	var out []string
	for _, a := range args {
		if !strings.HasPrefix(a, "@") || len(a) == 1 || depth >= maxResponseDepth {
			out = append(out, a)
			continue
		}
		p := a[1:]
		if !filepath.IsAbs(p) {
			p = filepath.Join(cwd, p)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			out = append(out, a)
			continue
		}
		out = append(out, expandResponseFiles(cwd, splitResponse(string(data)), depth+1)...)
	}
	return out
}

// splitResponse splits a response file as gcc does: whitespace separates,
// single and double quotes group, a backslash escapes the next character.
func splitResponse(s string) []string {
	var out []string
	var cur strings.Builder
	in := false
	quote := byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			in = true
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				cur.WriteByte(c)
			}
		case c == '\'' || c == '"':
			quote = c
			in = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}

// defaultObject is the object gcc -c writes for src without -o: its base
// name with .o, in the working directory.
func defaultObject(src string) string {
	base := filepath.Base(src)
	return strings.TrimSuffix(base, filepath.Ext(base)) + ".o"
}

// split returns one invocation per object: "cc -c a.c b.c" writes a.o and
// b.o. Their dependencies are unknown (one -MF cannot hold both).
func (inv Invocation) split() []Invocation {
	if !inv.Compile || inv.Output != "" || len(inv.Sources) < 2 {
		return []Invocation{inv}
	}
	var out []Invocation
	for _, s := range inv.Sources {
		one := inv
		one.Sources, one.Output, one.Deps = []string{s}, defaultObject(s), ""
		out = append(out, one)
	}
	return out
}

// WrapMain is the compiler wrapper: argv is os.Args of a process started as
// cc, gcc, c++, g++ or a variant. It logs the invocation, adds the flags the
// patch builder needs and runs the real compiler in its place. It returns
// only when the compiler could not be run in place (the exit status to use);
// a logging failure never stops the compiler.
func WrapMain(argv []string) int {
	tool := filepath.Base(argv[0])
	real, err := realCompiler(tool)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hotfleet compiler wrapper: %v\n", err)
		return 127
	}
	args := argv[1:]
	// gcc finds cc1 and its other parts relative to argv[0]: give it its
	// own path, not the wrapper's name.
	if os.Getenv(envNested) != "" || os.Getenv(envLog) == "" {
		return execCompiler(real, append([]string{real}, args...), nil, "")
	}
	cwd, _ := os.Getwd()
	inv := parseInvocation(cwd, tool, args)
	extra, copyDeps := wrapperFlags(&inv)
	logInvocation(inv)
	return execCompiler(real, append(append([]string{real}, args...), extra...), &inv, copyDeps)
}

// wrapperFlags returns the flags to add to a compiler run, and the build's
// own dependency file to copy once the compiler finished (the build may move
// or delete its own, and a second -MF would take its place).
func wrapperFlags(inv *Invocation) (extra []string, copyDeps string) {
	if !inv.Compile && !inv.Link && !inv.ToAsm {
		return nil, ""
	}
	if len(inv.Sources) > 0 {
		// A flag the build already gives is not repeated: gcc records its
		// switches in the debug info, and a build that used the two flags
		// must come out byte for byte the same (stripped targets).
		for _, f := range []string{"-ffunction-sections", "-fdata-sections"} {
			if !slices.Contains(inv.Argv, f) {
				extra = append(extra, f)
			}
		}
		// The builder reads the objects' DWARF to see struct layouts change
		// through pointers and to tell callers changed by inlining; gcc
		// generates the same code with and without -g. Assembly sources
		// are left alone: they are never patched, and their objects must
		// stay as the shipped build made them.
		if !inv.Asm && !debugInfo(inv.Argv) {
			extra = append(extra, "-g")
		}
	}
	if tree, src := os.Getenv(envTree), os.Getenv(envSource); tree != "" && src != "" && len(inv.Sources) > 0 && !mapsTree(inv.Argv, tree) {
		extra = append(extra, "-ffile-prefix-map="+tree+"="+src)
	}
	if !inv.Compile {
		return extra, ""
	}
	dir := os.Getenv(envDeps)
	if dir == "" || inv.Output == "" {
		return extra, "" // several objects: one -MF cannot hold their dependencies
	}
	f, err := os.CreateTemp(dir, "dep-*.d")
	if err != nil {
		return extra, ""
	}
	f.Close()
	if inv.Deps != "" {
		// The build tracks dependencies itself: keep its file and copy it.
		copyDeps, inv.Deps = inv.Deps, f.Name()
		return extra, copyDeps
	}
	inv.Deps = f.Name()
	return append(extra, "-MD", "-MF", f.Name()), ""
}

// debugInfo reports whether a compiler command line asks for debug
// information: its last -g option is not -g0.
func debugInfo(argv []string) bool {
	on := false
	for _, a := range argv {
		if strings.HasPrefix(a, "-g") && !strings.HasPrefix(a, "-gno-") {
			on = a != "-g0"
		}
	}
	return on
}

// mapsTree reports whether the build maps the tree's paths itself (Debian's
// dpkg-buildflags gives -ffile-prefix-map=$PWD=.): it did the same in the
// shipped build, from that build's directory, so its mapping is kept and
// the wrapper adds none, which would take precedence.
func mapsTree(argv []string, tree string) bool {
	for _, a := range argv {
		for _, opt := range []string{"-ffile-prefix-map=", "-fmacro-prefix-map=", "-fdebug-prefix-map="} {
			if !strings.HasPrefix(a, opt) {
				continue
			}
			old, _, _ := strings.Cut(strings.TrimPrefix(a, opt), "=")
			old = filepath.Clean(old)
			if old == tree || strings.HasPrefix(tree, old+"/") || strings.HasPrefix(old, tree+"/") {
				return true
			}
		}
	}
	return false
}

// logInvocation appends one JSON line with a single write, so lines of
// parallel compilers never mix.
func logInvocation(inv Invocation) {
	line, err := json.Marshal(inv)
	if err != nil {
		return
	}
	f, err := os.OpenFile(os.Getenv(envLog), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hotfleet compiler wrapper: cannot log %s: %v (the compile goes on)\n", inv.Output, err)
		return
	}
	f.Write(append(line, '\n'))
	f.Close()
}

// realCompiler finds the compiler the wrapper stands for: the same name
// later in PATH, outside the wrapper directory, else HOTFLEET_REAL_CC/CXX.
func realCompiler(tool string) (string, error) {
	self := os.Getenv(envBin)
	selfExe, _ := os.Executable()
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		if dir == "" || (self != "" && sameDir(dir, self)) {
			continue
		}
		p := filepath.Join(dir, tool)
		st, err := os.Stat(p)
		if err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			continue
		}
		if selfExe != "" {
			if r, err := filepath.EvalSymlinks(p); err == nil {
				if s, err := filepath.EvalSymlinks(selfExe); err == nil && r == s {
					continue
				}
			}
		}
		return p, nil
	}
	env := envRealCC
	if strings.Contains(tool, "++") {
		env = envRealCXX
	}
	if p := os.Getenv(env); p != "" {
		return p, nil
	}
	return "", fmt.Errorf("no real %s in PATH (outside %s) and %s is not set: install the compiler or set %s", tool, self, env, env)
}

func sameDir(a, b string) bool {
	if a == b {
		return true
	}
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

// execCompiler runs the real compiler in place of the wrapper. When the
// build's own dependency file must be copied afterwards, it runs the
// compiler as a child instead and exits with its status.
func execCompiler(real string, argv []string, inv *Invocation, copyDeps string) int {
	env := append(os.Environ(), envNested+"=1")
	if copyDeps == "" {
		err := syscall.Exec(real, argv, env)
		fmt.Fprintf(os.Stderr, "hotfleet compiler wrapper: run %s: %v\n", real, err)
		return 127
	}
	cmd := exec.Command(real, argv[1:]...)
	cmd.Args[0] = argv[0]
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// The build's signals go to the compiler; the wrapper only waits.
	signal.Ignore(os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	err := cmd.Run()
	status := 0
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				return 128 + int(ws.Signal())
			}
			status = ee.ExitCode()
		} else {
			fmt.Fprintf(os.Stderr, "hotfleet compiler wrapper: run %s: %v\n", real, err)
			return 127
		}
	}
	if status == 0 && inv != nil {
		src := copyDeps
		if !filepath.IsAbs(src) {
			src = filepath.Join(inv.Cwd, src)
		}
		copyFile(src, inv.Deps)
	}
	return status
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
