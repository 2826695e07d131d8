package realworld

import (
	"fmt"
	"path/filepath"
	"testing"
)

// luaProject is Lua 5.4.4 from Debian bookworm without the fix for
// CVE-2022-28805: with a constant _ENV the parser emits a read of a
// register that holds something else (a heap overflow in the worst case).
// Debian's build goes through libtool; the walk-through uses Lua's own
// makefile (Debian's build-system patch taken out) with Debian's flags.
var luaProject = project{
	pkg:    "lua5.4",
	fix:    "debian/patches/0004-cve-2022-28805.patch",
	revert: []string{"debian/patches/0001-build-system.patch"},
	// What debian/rules writes before the build: luaconf.h includes it.
	prepare: `printf '#ifndef _LUA_DEB_MULTIARCH_\n#define _LUA_DEB_MULTIARCH_\n#define DEB_HOST_MULTIARCH "%s"\n#endif\n' "$(dpkg-architecture -qDEB_HOST_MULTIARCH)" >src/lua5.4-deb-multiarch.h`,
	build:   `make -j2 linux MYCFLAGS="$(dpkg-buildflags --get CFLAGS) $(dpkg-buildflags --get CPPFLAGS)" MYLDFLAGS="$(dpkg-buildflags --get LDFLAGS)"`,
	target:  "src/lua",
	debPkg:  "liblua5.4-0",
	cve:     "CVE-2022-28805",
	changed: []string{"singlevar"},
}

func testdataPath(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLuaCVE2022_28805 fixes a running Lua interpreter that compiles and runs
// the chunks it is sent.
func TestLuaCVE2022_28805(t *testing.T) {
	w := setup(t, luaProject)
	lua := startLine(t, w.target, testdataPath(t, "lua_server.lua"))

	// A constant _ENV: global names are fields of the string "abc", whose
	// metatable indexes the string library. The vulnerable parser indexes
	// whatever register comes next (here the local y) instead.
	const exploit = `local _ENV <const> = "abc"; local y = 1; return rep("ab", 3)`
	const vulnerable = `error request:1: attempt to index a number value (local 'y')`
	const fixed = `ok ababab`
	// An ordinary request: its global 'math' goes through the patched
	// function too.
	const ordinary = `local s = 0 for i = 1, 10 do s = s + math.floor(i / 2) end return s`
	const ordinaryAnswer = `ok 25`

	lua.expect(ordinary, ordinaryAnswer, "before the patch")
	lua.expect(exploit, vulnerable, "before the patch (vulnerable)")

	const id = "lua-cve-2022-28805"
	bundle, size := w.patchBuild(t, id)

	l := startLoad(1, func(int) error {
		got, err := lua.ask(ordinary)
		if err == nil && got != ordinaryAnswer {
			err = fmt.Errorf("%q answered %q, want %q", ordinary, got, ordinaryAnswer)
		}
		return err
	})
	l.waitFor(t, loadBefore)
	pause := apply(t, bundle, lua.pid)
	l.waitFor(t, loadAfter)
	n := l.finish(t)
	t.Logf("%d requests during the patch, none failed", n)

	lua.expect(exploit, fixed, "after apply (fixed)")
	lua.expect(ordinary, ordinaryAnswer, "after apply")

	rpause := revert(t, id, lua.pid)
	lua.expect(exploit, vulnerable, "after revert (vulnerable again)")
	lua.expect(ordinary, ordinaryAnswer, "after revert")
	w.report(t, size, pause, rpause)
}
