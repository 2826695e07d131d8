package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"hotfleet/internal/bundle"
	"hotfleet/internal/livepatch/lptest"
)

const targetSrc = "../../internal/livepatch/testdata/target.c"

// hotfleetRun runs the command line in-process and returns what it printed.
func hotfleetRun(t *testing.T, args ...string) (string, error) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		done <- string(b)
	}()
	err = run(context.Background(), args)
	os.Stdout = saved
	w.Close()
	return <-done, err
}

// uniqueTarget builds the test program with a build-id no other test's
// process has, so that --all touches only this test's processes.
func uniqueTarget(t *testing.T) string {
	t.Helper()
	return lptest.BuildTarget(t, targetSrc, "target", "-DVARIANT="+strconv.Itoa(1000+os.Getpid()%100000))
}

func writeBundle(t *testing.T, b *bundle.Bundle) string {
	t.Helper()
	data, err := bundle.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), b.ID+".hfp")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestPatchApplyStatusRevert(t *testing.T) {
	bin := uniqueTarget(t)
	// Not children of this process: with --all, hotfleet patches them
	// concurrently, and proc's tracers must not see each other's tracees as
	// their children.
	a, b := lptest.StartGrandchild(t, bin), lptest.StartGrandchild(t, bin)
	want := a.Call("answer")
	fix := writeBundle(t, lptest.MakeBundle(t, bin, "hf-cli", 1, lptest.Fn{Old: "answer", Code: lptest.Ret(42)}))

	out, err := hotfleetRun(t, "patch", "apply", fix, "--all")
	if err != nil {
		t.Fatalf("apply --all: %v\n%s", err, out)
	}
	line := regexp.MustCompile(`(?m)^pid (\d+) \(target\): applied hf-cli level 1: 1 functions switched, pause \d+ µs$`)
	if got := line.FindAllStringSubmatch(out, -1); len(got) != 2 {
		t.Fatalf("apply --all printed:\n%s\nwant one 'applied' line for each of pids %d and %d", out, a.Pid, b.Pid)
	}
	a.Expect("answer", "42")
	b.Expect("answer", "42")

	out, err = hotfleetRun(t, "patch", "status", "--pid", strconv.Itoa(a.Pid))
	if err != nil || !strings.Contains(out, "hf-cli") || !strings.Contains(out, "applied") || !strings.Contains(out, "answer (active)") {
		t.Fatalf("status: %v\n%s", err, out)
	}
	out, err = hotfleetRun(t, "patch", "status", "--pid", strconv.Itoa(a.Pid), "--json")
	var rows []statusRegion
	if err != nil || json.Unmarshal([]byte(out), &rows) != nil || len(rows) != 1 || rows[0].State != "applied" ||
		rows[0].PatchID != "hf-cli" || rows[0].Pid != a.Pid || len(rows[0].Functions) != 1 || !rows[0].Functions[0].Active {
		t.Fatalf("status --json: %v\n%s", err, out)
	}

	out, err = hotfleetRun(t, "patch", "revert", "hf-cli", "--pid", strconv.Itoa(a.Pid), "--json")
	var res []procResult
	if err != nil || json.Unmarshal([]byte(out), &res) != nil || len(res) != 1 || !res[0].OK || res[0].Functions != 1 || res[0].PatchID != "hf-cli" {
		t.Fatalf("revert --json: %v\n%s", err, out)
	}
	a.Expect("answer", want)
	b.Expect("answer", "42")

	out, err = hotfleetRun(t, "patch", "revert", "hf-cli", "--all")
	if err != nil || !strings.Contains(out, "pid "+strconv.Itoa(b.Pid)+" (target): reverted hf-cli level 1: 1 functions restored") {
		t.Fatalf("revert --all: %v\n%s", err, out)
	}
	b.Expect("answer", want)
}

func TestPatchApplyFailures(t *testing.T) {
	bin := uniqueTarget(t)
	p := lptest.Start(t, bin)
	want := p.Call("answer")
	b := lptest.MakeBundle(t, bin, "hf-bad", 1, lptest.Fn{Old: "answer", Code: lptest.Ret(42)}, lptest.Fn{Old: "tiny", Code: lptest.Ret(9)})
	fix := writeBundle(t, b)

	// A refused patch: one FAILED line naming the function, exit status 1.
	out, err := hotfleetRun(t, "patch", "apply", fix, "--pid", strconv.Itoa(p.Pid))
	if err == nil || errors.Is(err, errUsage) || !strings.Contains(out, "FAILED: apply hf-bad to pid") || !strings.Contains(out, "function tiny is 3 bytes long") {
		t.Fatalf("apply of a too-small function: %v\n%s", err, out)
	}
	p.Expect("answer", want)

	// A truncated bundle is refused before any process is touched.
	data, err := os.ReadFile(fix)
	if err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(t.TempDir(), "short.hfp")
	if err := os.WriteFile(short, data[:len(data)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	out, err = hotfleetRun(t, "patch", "apply", short, "--pid", strconv.Itoa(p.Pid))
	if err == nil || !errors.Is(err, bundle.ErrMalformed) || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("apply of a truncated bundle: %v\n%s", err, out)
	}
	p.Expect("answer", want)

	if _, err := hotfleetRun(t, "patch", "apply", fix); !errors.Is(err, errUsage) {
		t.Errorf("apply without --pid or --all: %v, want a usage error", err)
	}
	out, err = hotfleetRun(t, "patch", "revert", "hf-none", "--pid", strconv.Itoa(p.Pid))
	if err == nil || !strings.Contains(out, "patch hf-none is not applied in pid") {
		t.Errorf("revert of a patch not applied: %v\n%s", err, out)
	}
}
