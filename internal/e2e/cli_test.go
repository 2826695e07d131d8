package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The --json output of apply, revert and status is read by walking every
// JSON value hotfleet prints and picking the objects that describe one
// process (they carry a pid) or one patch (they carry a patch id). Objects
// nested in a process object inherit its pid. Keys are matched ignoring case,
// '_' and '-', so "pause_us" and "PauseUS" read the same.

// jsonObject is one decoded JSON object with the pid it belongs to.
type jsonObject struct {
	fields map[string]any // normalised keys
	pid    int            // own or inherited pid; 0 if none
}

func normKey(k string) string {
	return strings.ToLower(strings.NewReplacer("_", "", "-", "").Replace(k))
}

// decodeAll decodes every JSON value in out.
func decodeAll(t *testing.T, what, out string) []any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(out))
	dec.UseNumber()
	var vals []any
	for {
		var v any
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s --json printed something that is not JSON (%v):\n%s", what, err, out)
		}
		vals = append(vals, v)
	}
	if len(vals) == 0 {
		t.Fatalf("%s --json printed no JSON:\n%q", what, out)
	}
	return vals
}

// objects returns every JSON object in out, each with its pid.
func objects(t *testing.T, what, out string) []jsonObject {
	t.Helper()
	var objs []jsonObject
	var walk func(v any, pid int)
	walk = func(v any, pid int) {
		switch v := v.(type) {
		case map[string]any:
			o := jsonObject{fields: map[string]any{}, pid: pid}
			for k, x := range v {
				o.fields[normKey(k)] = x
			}
			if p, ok := o.int("pid"); ok {
				o.pid = p
			}
			objs = append(objs, o)
			for _, x := range v {
				walk(x, o.pid)
			}
		case []any:
			for _, x := range v {
				walk(x, pid)
			}
		}
	}
	for _, v := range decodeAll(t, what, out) {
		walk(v, 0)
	}
	return objs
}

func (o jsonObject) has(key string) bool {
	_, ok := o.fields[normKey(key)]
	return ok
}

func (o jsonObject) int(keys ...string) (int, bool) {
	for _, k := range keys {
		switch v := o.fields[normKey(k)].(type) {
		case json.Number:
			if f, err := v.Float64(); err == nil {
				return int(f), true
			}
		case string:
			if n, err := strconv.Atoi(v); err == nil {
				return n, true
			}
		}
	}
	return 0, false
}

func (o jsonObject) float(keys ...string) (float64, bool) {
	for _, k := range keys {
		if v, ok := o.fields[normKey(k)].(json.Number); ok {
			if f, err := v.Float64(); err == nil {
				return f, true
			}
		}
	}
	return 0, false
}

func (o jsonObject) str(keys ...string) string {
	for _, k := range keys {
		switch v := o.fields[normKey(k)].(type) {
		case string:
			return v
		case json.Number:
			return v.String()
		}
	}
	return ""
}

func (o jsonObject) bool(keys ...string) (bool, bool) {
	for _, k := range keys {
		if v, ok := o.fields[normKey(k)].(bool); ok {
			return v, true
		}
	}
	return false, false
}

// funcNames lists the function names under "functions": names or objects
// with a "name".
func (o jsonObject) funcNames() []string {
	var names []string
	list, _ := o.fields["functions"].([]any)
	for _, f := range list {
		switch f := f.(type) {
		case string:
			names = append(names, f)
		case map[string]any:
			for k, v := range f {
				if normKey(k) == "name" {
					if s, ok := v.(string); ok {
						names = append(names, s)
					}
				}
			}
		}
	}
	slices.Sort(names)
	return names
}

func (o jsonObject) String() string {
	b, _ := json.Marshal(o.fields)
	return string(b)
}

// ---------------------------------------------------------------------------
// apply / revert reports.

// outcome is the per-process report of apply or revert.
type outcome struct {
	jsonObject
	ok        bool
	functions int
	pauseUS   float64
	errText   string
}

// outcomes reads the per-process reports of apply or revert --json.
func outcomes(t *testing.T, r cliResult) map[int]outcome {
	t.Helper()
	res := map[int]outcome{}
	for _, o := range objects(t, "hotfleet "+strings.Join(r.args, " "), r.stdout) {
		p, ok := o.int("pid")
		if !ok {
			continue
		}
		oc := outcome{jsonObject: o}
		oc.errText = o.str("error", "err", "message")
		if v, ok := o.bool("ok", "success", "succeeded"); ok {
			oc.ok = v
		} else {
			oc.ok = oc.errText == ""
		}
		if n, ok := o.int("functions", "functions_patched", "functions_restored", "sites"); ok {
			oc.functions = n
		} else if list, ok := o.fields["functions"].([]any); ok {
			oc.functions = len(list)
		}
		if us, ok := o.float("pause_us", "pauseus", "pause_micros"); ok {
			oc.pauseUS = us
		} else if ns, ok := o.float("pause_ns", "pause"); ok {
			oc.pauseUS = ns / 1e3
		}
		res[p] = oc
	}
	return res
}

// checkOutcomes checks that each pid got a successful report with nfuncs
// functions and a measured pause, and that no other process was touched.
func checkOutcomes(t *testing.T, r cliResult, pids []int, nfuncs int) map[int]outcome {
	t.Helper()
	r.mustSucceed(t)
	got := outcomes(t, r)
	for _, pid := range pids {
		oc, ok := got[pid]
		if !ok {
			t.Fatalf("the report names no process %d: %v", pid, r)
		}
		if !oc.ok {
			t.Fatalf("process %d: the report says it failed (%s): %v", pid, oc.errText, r)
		}
		if oc.functions != nfuncs {
			t.Errorf("process %d: the report says %d functions, want %d: %v", pid, oc.functions, nfuncs, oc)
		}
		if oc.pauseUS <= 0 {
			t.Errorf("process %d: the report gives no pause (want microseconds > 0): %v", pid, oc)
		}
	}
	return got
}

// apply applies a bundle to one process and checks the report.
func apply(t *testing.T, bundle string, pid, nfuncs int, extra ...string) outcome {
	t.Helper()
	args := append([]string{"patch", "apply", bundle, "--pid", strconv.Itoa(pid), "--json"}, extra...)
	r := hotfleet(t, args...)
	oc := checkOutcomes(t, r, []int{pid}, nfuncs)[pid]
	t.Logf("applied %s to %d: %d functions, pause %.0f µs", bundle, pid, oc.functions, oc.pauseUS)
	return oc
}

// applyAll applies a bundle with --all and checks that exactly the given
// processes (among those the test started) were patched.
func applyAll(t *testing.T, bundle string, pids []int, nfuncs int) {
	t.Helper()
	r := hotfleet(t, "patch", "apply", bundle, "--all", "--json")
	checkOutcomes(t, r, pids, nfuncs)
}

// revert reverts patch id in one process and checks the report.
func revert(t *testing.T, id string, pid, nfuncs int) {
	t.Helper()
	r := hotfleet(t, "patch", "revert", id, "--pid", strconv.Itoa(pid), "--json")
	checkOutcomes(t, r, []int{pid}, nfuncs)
}

// revertAll reverts patch id everywhere and checks that every pid was reverted.
func revertAll(t *testing.T, id string, pids []int, nfuncs int) {
	t.Helper()
	r := hotfleet(t, "patch", "revert", id, "--all", "--json")
	checkOutcomes(t, r, pids, nfuncs)
}

// ---------------------------------------------------------------------------
// status.

// patchState is one patch status reports in one process.
type patchState struct {
	pid   int
	id    string
	level int
	state string
	funcs []string
	raw   string
}

func (p patchState) String() string { return p.raw }

// parseStatus reads 'status --json' output.
func parseStatus(t *testing.T, r cliResult) []patchState {
	t.Helper()
	r.mustSucceed(t)
	if strings.TrimSpace(r.stdout) == "" {
		return nil
	}
	var out []patchState
	for _, o := range objects(t, "hotfleet "+strings.Join(r.args, " "), r.stdout) {
		id := o.str("patch_id", "patchid", "id")
		if id == "" || !(o.has("level") || o.has("state")) {
			continue
		}
		lvl, _ := o.int("level")
		out = append(out, patchState{pid: o.pid, id: id, level: lvl, state: o.str("state"), funcs: o.funcNames(), raw: o.String()})
	}
	return out
}

// status returns what 'hotfleet patch status --pid PID --json' reports for pid.
func status(t *testing.T, pid int) []patchState {
	t.Helper()
	var out []patchState
	for _, p := range parseStatus(t, hotfleet(t, "patch", "status", "--pid", strconv.Itoa(pid), "--json")) {
		if p.pid == 0 || p.pid == pid {
			p.pid = pid
			out = append(out, p)
		}
	}
	return out
}

// inEffect keeps the patches whose code runs: applied ones.
func inEffect(ps []patchState) []patchState {
	var out []patchState
	for _, p := range ps {
		if p.state == "applied" {
			out = append(out, p)
		}
	}
	return out
}

func describeStates(ps []patchState) string {
	if len(ps) == 0 {
		return "nothing"
	}
	var b bytes.Buffer
	for _, p := range ps {
		fmt.Fprintf(&b, "\n  %s", p.raw)
	}
	return b.String()
}

// requireApplied checks that status shows exactly patch id at level applied
// in pid, with the given functions (sorted).
func requireApplied(t *testing.T, pid int, id string, level int, funcs ...string) {
	t.Helper()
	all := status(t, pid)
	got := inEffect(all)
	if len(got) != 1 || got[0].id != id {
		t.Fatalf("status of %d: want only %s applied, got %s", pid, id, describeStates(all))
	}
	if got[0].level != level {
		t.Errorf("status of %d: %s is at level %d, want %d", pid, id, got[0].level, level)
	}
	slices.Sort(funcs)
	if !slices.Equal(got[0].funcs, funcs) {
		t.Errorf("status of %d: %s patches functions %v, want %v", pid, id, got[0].funcs, funcs)
	}
}

// requireNothingApplied checks that status shows no patch in effect in pid.
func requireNothingApplied(t *testing.T, pid int) {
	t.Helper()
	all := status(t, pid)
	if got := inEffect(all); len(got) > 0 {
		t.Fatalf("status of %d: want nothing applied, got %s", pid, describeStates(all))
	}
}
