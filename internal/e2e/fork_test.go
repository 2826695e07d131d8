package e2e

import (
	"path/filepath"
	"testing"

	"hotfleet/internal/testenv"
)

// TestForkedChildren: a patch applied to a parent is inherited by children
// it forks afterwards; children forked before keep the old code until
// --all patches them too.
func TestForkedChildren(t *testing.T) {
	needs(t)
	p := buildExe(t, "basic.c", "driver.c", pie)
	const id = "fix-fork"
	b := p.bundle(t, id, 1, p.fixed(t, "fixed", "x * 10 + 1", "x * 10 + 7"), []string{"answer"})
	parent := start(t, p.bin, nil)
	before := parent.fork()
	before.expect("call 5", "51", "child forked before the patch, before apply")

	apply(t, b, parent.pid, 1)
	parent.expect("call 5", "57", "parent after apply --pid")
	before.expect("call 5", "51", "child forked before apply --pid of the parent")
	requireNothingApplied(t, before.pid)

	after := parent.fork()
	after.expect("call 5", "57", "child forked after the patch")
	requireApplied(t, after.pid, id, 1, "answer")

	revertAll(t, id, []int{parent.pid, after.pid}, 1)
	for _, tg := range []*target{parent, before, after} {
		tg.expect("call 5", "51", "after revert --all")
		requireNothingApplied(t, tg.pid)
	}

	applyAll(t, b, []int{parent.pid, before.pid, after.pid}, 1)
	for _, tg := range []*target{parent, before, after} {
		tg.expect("call 5", "57", "after apply --all")
		requireApplied(t, tg.pid, id, 1, "answer")
	}
	revertAll(t, id, []int{parent.pid, before.pid, after.pid}, 1)
	for _, tg := range []*target{parent, before, after} {
		tg.expect("call 5", "51", "after the second revert --all")
		requireNothingApplied(t, tg.pid)
		tg.healthy()
	}
}

// TestSharedLibraries patches a function in a library the target is linked
// with and one in a library it loads with dlopen, in one process (--pid) and
// in every process mapping the library (--all).
func TestSharedLibraries(t *testing.T) {
	needs(t)
	dir := t.TempDir()
	cflags := append(append(append([]string{}, baseCFlags...), "-fPIC"), patchFlags...)
	type lib struct {
		so, orig, bundle, id string
	}
	mk := func(name, src, id string, fix ...string) lib {
		ldir := filepath.Join(dir, name)
		l := lib{so: filepath.Join(dir, "lib"+name+".so"), id: id}
		l.orig = compileUnit(t, ldir, "orig", src, cflags)
		fixed := compileUnit(t, ldir, "fixed", src, cflags, fix...)
		testenv.CC(t, l.so, "-shared", l.orig)
		want := "lib_answer"
		if name == "hfb" {
			want = "dl_answer"
		}
		l.bundle = buildBundle(t, l.so, l.orig, fixed, id, 1, []string{want})
		return l
	}
	linked := mk("hfa", "liba.c", "fix-liba", "x + 100", "x + 111")
	loaded := mk("hfb", "libb.c", "fix-libb", "x + 200", "x + 222")
	drv := testenv.CC(t, filepath.Join(dir, "libmain.o"), append(append([]string{"-c", "-I", testdata("")}, baseCFlags...), "-fPIE", testdata("libmain.c"))...)
	bin := testenv.CC(t, filepath.Join(dir, "libmain"), drv, "-pie", "-L"+dir, "-lhfa", "-Wl,-rpath,"+dir, "-ldl", "-pthread")

	p1 := start(t, bin, []string{loaded.so})
	p2 := start(t, bin, []string{loaded.so})
	both := []*target{p1, p2}
	for _, tg := range both {
		tg.expect("call 5", "liba 105", "linked library before apply")
		tg.expect("dlcall 5", "libb 205", "dlopen'ed library before apply")
	}

	t.Run("linked-pid", func(t *testing.T) {
		apply(t, linked.bundle, p1.pid, 1)
		p1.expect("call 5", "liba 116", "after apply --pid")
		p2.expect("call 5", "liba 105", "other process after apply --pid")
		p1.expect("dlcall 5", "libb 205", "other library after apply --pid")
		requireApplied(t, p1.pid, linked.id, 1, "lib_answer")
		revert(t, linked.id, p1.pid, 1)
		p1.expect("call 5", "liba 105", "after revert")
		requireNothingApplied(t, p1.pid)
	})
	t.Run("dlopened-pid", func(t *testing.T) {
		apply(t, loaded.bundle, p2.pid, 1)
		p2.expect("dlcall 5", "libb 227", "after apply --pid")
		p1.expect("dlcall 5", "libb 205", "other process after apply --pid")
		revert(t, loaded.id, p2.pid, 1)
		p2.expect("dlcall 5", "libb 205", "after revert")
	})
	t.Run("linked-all", func(t *testing.T) {
		applyAll(t, linked.bundle, []int{p1.pid, p2.pid}, 1)
		for _, tg := range both {
			tg.expect("call 5", "liba 116", "after apply --all")
			requireApplied(t, tg.pid, linked.id, 1, "lib_answer")
		}
		revertAll(t, linked.id, []int{p1.pid, p2.pid}, 1)
		for _, tg := range both {
			tg.expect("call 5", "liba 105", "after revert --all")
		}
	})
	t.Run("dlopened-all", func(t *testing.T) {
		applyAll(t, loaded.bundle, []int{p1.pid, p2.pid}, 1)
		for _, tg := range both {
			tg.expect("dlcall 5", "libb 227", "after apply --all")
			tg.expect("call 5", "liba 105", "other library after apply --all")
			requireApplied(t, tg.pid, loaded.id, 1, "dl_answer")
		}
		revertAll(t, loaded.id, []int{p1.pid, p2.pid}, 1)
		for _, tg := range both {
			tg.expect("dlcall 5", "libb 205", "after revert --all")
			requireNothingApplied(t, tg.pid)
			tg.healthy()
		}
	})
}
