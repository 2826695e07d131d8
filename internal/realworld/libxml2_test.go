package realworld

import (
	"path/filepath"
	"testing"

	"hotfleet/internal/testenv"
)

// libxml2Project is libxml2 2.9.14 from Debian bookworm without the fix for
// CVE-2025-6021: xmlBuildQName computes the size of "prefix:name" in int,
// which overflows for huge names, and takes a negative buffer length as a
// small one. The fix lives in the shared library libxml2.so.2.
var libxml2Project = project{
	pkg: "libxml2",
	fix: "debian/patches/CVE-2025-6021.patch",
	// What dh_autoreconf does first: Debian's patches change Makefile.am.
	prepare: "autoreconf -fi",
	// Debian's configure flags for the main flavour, without ICU, lzma and
	// zlib (none is near the fix) and without the static library; the
	// library only.
	build: `{ test -f Makefile || ./configure --prefix=/usr --disable-static --without-python --without-icu --without-lzma --without-zlib ` +
		`CFLAGS="$(dpkg-buildflags --get CFLAGS)" CPPFLAGS="$(dpkg-buildflags --get CPPFLAGS)" LDFLAGS="$(dpkg-buildflags --get LDFLAGS)"; } && make -j2 libxml2.la`,
	target:  ".libs/libxml2.so.2.9.14",
	debPkg:  "libxml2",
	cve:     "CVE-2025-6021",
	tools:   []string{"autoreconf", "libtoolize"},
	changed: []string{"xmlBuildQName__internal_alias"},
}

// TestLibxml2CVE2025_6021 fixes libxml2.so.2 inside a running program that
// parses documents and builds qualified names on request.
func TestLibxml2CVE2025_6021(t *testing.T) {
	w := setup(t, libxml2Project)
	libdir := filepath.Dir(w.target)
	drv := testenv.CC(t, filepath.Join(w.dir, "libxml2_driver"), "-O2", "-Wall",
		"-I", filepath.Join(w.prod, "include"), testdataPath(t, "libxml2_driver.c"),
		"-L", libdir, "-lxml2", "-Wl,-rpath,"+libdir)
	p := startLine(t, drv)

	// xmlBuildQName with a negative buffer length: the vulnerable library
	// treats it as a buffer too small and builds the name; the fixed one
	// refuses the call.
	const exploit = "qname local prefix -1"
	const vulnerable = "prefix:local"
	const fixed = "(null)"
	const ordinary, ordinaryAnswer = "qname local prefix 64", "prefix:local"
	const doc, docAnswer = `doc <r xmlns:p="urn:x"><p:a p:b="1" c="2"/><b/></r>`, "ok elements=3 attributes=2"

	p.expect(doc, docAnswer, "before the patch")
	p.expect(ordinary, ordinaryAnswer, "before the patch")
	p.expect(exploit, vulnerable, "before the patch (vulnerable)")

	const id = "libxml2-cve-2025-6021"
	bundle, size := w.patchBuild(t, id)

	pause := applyWhileAsked(t, p, bundle, [][2]string{{ordinary, ordinaryAnswer}, {doc, docAnswer}})

	p.expect(exploit, fixed, "after apply (fixed)")
	p.expect(ordinary, ordinaryAnswer, "after apply")
	p.expect(doc, docAnswer, "after apply")

	rpause := revert(t, id, p.pid)
	p.expect(exploit, vulnerable, "after revert (vulnerable again)")
	p.expect(doc, docAnswer, "after revert")
	w.report(t, size, pause, rpause)
}
