package realworld

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"hotfleet/internal/testenv"
)

// debianLuaBuild is what debian/rules build runs, made incremental for the
// builder's second build: dh marks the build done, so the second run calls
// the package's own build step again with the flags dh would export.
const debianLuaBuild = `if [ -e debian/debhelper-build-stamp ]; then eval "$(dpkg-buildflags --export=sh)"; debian/rules override_dh_auto_build; else debian/rules build; fi`

// TestDebianShippedLibrary patches Debian's own liblua5.4.so.0, the stripped
// file of the liblua5.4-0 binary package as the archive ships it, inside a
// running program. Its symbols come from the same source package rebuilt
// here with debian/rules: that rebuild's build-id differs (its debug
// information does), but the builder proves its code and data are the
// shipped library's byte for byte, and proves the rebuilt original of the
// changed function equal to the shipped bytes. The fix is Lua's upstream
// fix for utf8.codes accepting a stray continuation byte (Lua 5.4.5),
// which the bookworm package does not carry.
func TestDebianShippedLibrary(t *testing.T) {
	testenv.NeedRoot(t)
	testenv.NeedGCC(t)
	for _, tool := range []string{"dpkg-deb", "dpkg-buildflags", "dh", "apt-get", "patch"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing(t, "%s is needed to fetch and rebuild Debian's package (apt-get install debhelper dpkg-dev patch)", tool)
		}
	}
	tree, version := source(t, "lua5.4")
	dir := t.TempDir()

	// The binary package as the archive ships it, downloaded once.
	debs := filepath.Join(srcCache(), "lua5.4", ".debs")
	deb := filepath.Join(debs, "liblua5.4-0_"+strings.ReplaceAll(version, ":", "%3a")+"_amd64.deb")
	if !fileExists(deb) {
		if err := os.MkdirAll(debs, 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("sh", "-c", "cd "+shq(debs)+" && apt-get download liblua5.4-0="+shq(version)).CombinedOutput(); err != nil || !fileExists(deb) {
			missing(t, "cannot download liblua5.4-0 %s (%v):\n%s", version, err, out)
		}
	}
	shipped := filepath.Join(dir, "deb")
	sh(t, dir, "dpkg-deb -x "+shq(deb)+" "+shq(shipped))
	libdir := filepath.Join(shipped, "usr", "lib", "x86_64-linux-gnu")
	target := filepath.Join(libdir, "liblua5.4.so.0.0.0")
	if out, _ := exec.Command("file", target).Output(); !strings.Contains(string(out), "stripped") || strings.Contains(string(out), "not stripped") {
		t.Fatalf("the shipped library is expected stripped: %s", out)
	}

	// The source package rebuilt the Debian way; its unstripped library
	// stands in for the shipped one's symbols.
	rebuild := filepath.Join(dir, "rebuild")
	sh(t, dir, "cp -a "+shq(tree)+" "+shq(rebuild))
	sh(t, rebuild, "debian/rules build")
	symbols := filepath.Join(rebuild, "src", ".libs", "liblua5.4.so.0.0.0")

	// A program using the shipped library, answering Lua chunks.
	inc := filepath.Join(dir, "inc")
	sh(t, dir, "mkdir -p inc && printf '#ifndef _LUA_DEB_MULTIARCH_\\n#define _LUA_DEB_MULTIARCH_\\n#define DEB_HOST_MULTIARCH \"x86_64-linux-gnu\"\\n#endif\\n' > inc/lua5.4-deb-multiarch.h")
	drv := testenv.CC(t, filepath.Join(dir, "lua_driver"), "-O2", "-Wall", "-I", inc, "-I", filepath.Join(tree, "src"),
		testdataPath(t, "lua_driver.c"), target, "-Wl,-rpath,"+libdir)
	p := startLine(t, drv)
	const chunk = `local ok, e = pcall(function() local n = 0 for _ in utf8.codes("a\x80") do n = n + 1 end return n end) return ok and ("count " .. e) or ("refused " .. tostring(string.match(e, "invalid UTF%-8 code")))`
	const vulnerable, fixed = "count 1", "refused invalid UTF-8 code"
	const ordinary, ordinaryAnswer = `return #utf8.char(72, 228, 8364)`, "6"
	p.expect(chunk, vulnerable, "before the patch")
	p.expect(ordinary, ordinaryAnswer, "before the patch")

	bundle := filepath.Join(dir, "lua-utf8.hfp")
	r := hotfleet(t, buildTimeout, "patch", "build", "--source", tree, "--fix", testdataPath(t, "lua-utf8-codes.diff"),
		"--target", target, "--symbols", symbols, "--build-cmd", debianLuaBuild, "--id", "lua-utf8-codes", "-o", bundle)
	t.Logf("patch build printed:\n%s", r.stdout)
	for _, want := range []string{"symbols from " + symbols, "iter_aux", "rebuilt original proved equal to the target for 1 of 1 replaced functions"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("the summary does not say %q", want)
		}
	}

	pause := applyWhileAsked(t, p, bundle, [][2]string{{ordinary, ordinaryAnswer}})
	p.expect(chunk, fixed, "after apply (fixed)")
	rpause := revert(t, "lua-utf8-codes", p.pid)
	p.expect(chunk, vulnerable, "after revert")
	st, err := os.Stat(bundle)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("MEASURE debian-shipped liblua5.4-0 %s: bundle %d bytes, apply pause %v, revert pause %v", version, st.Size(), pause, rpause)
}
