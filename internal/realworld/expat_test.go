package realworld

import (
	"path/filepath"
	"testing"

	"hotfleet/internal/testenv"
)

// expatProject is expat 2.5.0 from Debian bookworm without the fix for
// CVE-2024-45490: XML_ParseBuffer takes a negative length and moves its
// buffer pointers backwards. The fix lives in the shared library
// libexpat.so.1, which a long-running program has loaded.
var expatProject = project{
	pkg: "expat",
	fix: "debian/patches/CVE-2024-45490.patch",
	// What debian/rules does first: generate configure.
	prepare: "cd expat && ./buildconf.sh",
	// Debian's configure flags; the library only (the package also builds
	// xmlwf and a second, UTF-16 library, which this fix does not need).
	build: `cd expat && { test -f Makefile || ./configure --prefix=/usr --without-docbook --without-examples --without-tests ` +
		`CFLAGS="$(dpkg-buildflags --get CFLAGS) -Wall" CPPFLAGS="$(dpkg-buildflags --get CPPFLAGS)" ` +
		`LDFLAGS="-Wl,-Bsymbolic-functions $(dpkg-buildflags --get LDFLAGS)"; } && make -j2 -C lib`,
	target:  "expat/lib/.libs/libexpat.so.1.8.10",
	debPkg:  "libexpat1",
	cve:     "CVE-2024-45490",
	tools:   []string{"autoreconf", "libtoolize"},
	changed: []string{"XML_ParseBuffer"},
}

// TestExpatCVE2024_45490 fixes libexpat.so.1 inside a running program that
// parses documents on request.
func TestExpatCVE2024_45490(t *testing.T) {
	w := setup(t, expatProject)
	libdir := filepath.Dir(w.target)
	drv := testenv.CC(t, filepath.Join(w.dir, "expat_driver"), "-O2", "-Wall",
		"-I", filepath.Join(w.prod, "expat", "lib"), testdataPath(t, "expat_driver.c"),
		"-L", libdir, "-lexpat", "-Wl,-rpath,"+libdir)
	p := startLine(t, drv)

	// XML_ParseBuffer(parser, -3, 0): the vulnerable library accepts it;
	// the fixed one refuses with XML_ERROR_INVALID_ARGUMENT (41).
	const exploit = "buffer -3"
	const vulnerable = "status 1 error 0"
	const fixed = "status 0 error 41"
	const ordinary, ordinaryAnswer = "buffer 5", "status 1 error 0"
	const doc, docAnswer = "doc <a><b>hi</b><b/></a>", "ok elements=3"

	p.expect(doc, docAnswer, "before the patch")
	p.expect(ordinary, ordinaryAnswer, "before the patch")
	p.expect(exploit, vulnerable, "before the patch (vulnerable)")

	const id = "expat-cve-2024-45490"
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
