package crashtest

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"hotfleet/internal/testenv"
)

const (
	// numTrials is how many times hotfleet is killed mid-operation: the issue
	// asks for at least 200; 240 take about a minute on two idle cores and
	// stay well under the eight-minute budget on a busy machine.
	numTrials = 240
	// trialsPerTarget is how many trials one target process lives through, so
	// damage that accumulates (leaked regions, drifting registers) shows up;
	// each variant gets one target.
	trialsPerTarget = numTrials / 4
	// cmdTimeout bounds one hotfleet run: the engine's busy deadline (10s)
	// plus room for a loaded machine.
	cmdTimeout = 60 * time.Second
	// timingRuns is how many uninterrupted apply/revert pairs measure how long
	// an operation takes; the median bounds the random kill delays, so that
	// most random kills land inside the operation, some just after it.
	timingRuns = 5
)

var seedFlag = flag.Uint64("seed", 0, "random seed for the kill delays (0: from the clock)")

// applyFailpoints and revertFailpoints are the engine's named points on the
// way of each operation (docs/engine.md). Failpoints a run does not reach
// leave it uninterrupted, which the test counts too.
var (
	applyFailpoints  = []string{"prepared", "busy", "switching", "site:1", "site:2", "site:3", "site:4", "site:5", "applied"}
	revertFailpoints = []string{"reverting", "site:1", "site:2", "site:3", "site:4", "site:5", "reverted"}
)

// run is one finished hotfleet process.
type run struct {
	args      []string
	failpoint string
	killAfter time.Duration // < 0: not killed by the test
	killed    bool          // died of SIGKILL, from the test or its failpoint
	exitCode  int
	stdout    string
	stderr    string
	took      time.Duration
}

func (r run) String() string {
	s := "hotfleet " + strings.Join(r.args, " ")
	if r.failpoint != "" {
		s = "HOTFLEET_FAILPOINT=" + r.failpoint + " " + s
	}
	if r.killAfter >= 0 {
		s += fmt.Sprintf(" (SIGKILL after %v)", r.killAfter)
	}
	return s
}

// output is what the run printed, for messages: errors go to stderr,
// per-process results to stdout.
func (r run) output() string {
	return strings.TrimSpace(strings.TrimSpace(r.stderr) + "\n" + r.stdout)
}

func (r run) outcome() string {
	switch {
	case r.killed:
		return "killed"
	case r.exitCode == 0:
		return "completed"
	}
	return "failed"
}

// hotfleet runs the hotfleet binary, optionally with a failpoint, and kills it
// with SIGKILL after killAfter unless that is negative.
func hotfleet(ctx context.Context, failpoint string, killAfter time.Duration, args ...string) (run, error) {
	ctx, cancel := context.WithTimeout(ctx, cmdTimeout)
	defer cancel()
	r := run{args: args, failpoint: failpoint, killAfter: killAfter}
	cmd := exec.CommandContext(ctx, hotfleetBin, args...)
	cmd.Env = os.Environ()
	if failpoint != "" {
		cmd.Env = append(cmd.Env, "HOTFLEET_FAILPOINT="+failpoint)
	}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return r, fmt.Errorf("start %v: %w", r, err)
	}
	if killAfter >= 0 {
		timer := time.AfterFunc(killAfter, func() { cmd.Process.Signal(syscall.SIGKILL) })
		defer timer.Stop()
	}
	err := cmd.Wait()
	r.took = time.Since(start)
	r.stdout, r.stderr = stdout.String(), stderr.String()
	if ctx.Err() != nil {
		return r, fmt.Errorf("%v did not finish within %v; stderr: %s", r, cmdTimeout, r.stderr)
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
		r.killed = true
		return r, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.exitCode = ee.ExitCode()
		return r, nil
	}
	return r, err
}

// region is the part of one entry of 'hotfleet patch status --json' the test
// relies on.
type region struct {
	PatchID    string
	Level      uint32
	State      string
	Consistent bool
	Problem    string
}

// UnmarshalJSON accepts the field names in any case, with or without
// underscores (PatchID, patch_id), so the test checks what status says, not
// how it spells it.
func (r *region) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	fields := map[string]any{"patchid": &r.PatchID, "id": &r.PatchID, "level": &r.Level, "state": &r.State, "consistent": &r.Consistent, "problem": &r.Problem}
	seen := map[string]bool{}
	for k, v := range raw {
		key := strings.ToLower(strings.ReplaceAll(k, "_", ""))
		if dst, ok := fields[key]; ok {
			if err := json.Unmarshal(v, dst); err != nil {
				return fmt.Errorf("field %s: %w", k, err)
			}
			seen[key] = true
		}
	}
	for _, k := range []string{"state", "consistent"} {
		if !seen[k] {
			return fmt.Errorf("region %s has no field %q", b, k)
		}
	}
	if r.PatchID == "" {
		return fmt.Errorf("region %s names no patch id", b)
	}
	return nil
}

// knownStates are the states a region header can hold (livepatch contract).
var knownStates = map[string]bool{
	"prepared": true, "switching": true, "applied": true,
	"reverting": true, "reverted": true, "superseded": true,
}

// status runs 'hotfleet patch status --pid PID --json' and returns the state
// of the test's patch: "none" when the process holds no region for it.
func status(ctx context.Context, pid int) (string, region, error) {
	r, err := hotfleet(ctx, "", -1, "patch", "status", "--pid", strconv.Itoa(pid), "--json")
	if err != nil {
		return "", region{}, err
	}
	if r.exitCode != 0 {
		return "", region{}, fmt.Errorf("%v exited with %d: %s", r, r.exitCode, r.output())
	}
	regions, err := parseStatus([]byte(r.stdout))
	if err != nil {
		return "", region{}, fmt.Errorf("%v: %w; output: %s", r, err, r.stdout)
	}
	found := "none"
	var reg region
	for _, g := range regions {
		if !knownStates[g.State] {
			return "", g, fmt.Errorf("%v: region of patch %s has unknown state %q; output: %s", r, g.PatchID, g.State, r.stdout)
		}
		if g.PatchID != patchID {
			return "", g, fmt.Errorf("%v: unexpected patch %q in a process only %s ever touched; output: %s", r, g.PatchID, patchID, r.stdout)
		}
		// Several regions may remain (older, reverted ones); the live one
		// decides what runs.
		if found == "none" || live(g.State) {
			found, reg = g.State, g
		}
	}
	return found, reg, nil
}

// interrupted reports whether a region in this state is an operation a
// killed hotfleet left half done.
func interrupted(state string) bool {
	return state == "prepared" || state == "switching" || state == "reverting"
}

// live reports whether a region in this state may hold switched sites.
func live(state string) bool {
	return state == "applied" || state == "switching" || state == "reverting"
}

// parseStatus accepts the status output as a list of regions, or an object
// holding one ("regions"/"patches"/"applied").
func parseStatus(out []byte) ([]region, error) {
	var list []region
	if err := json.Unmarshal(out, &list); err == nil {
		return list, nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(out, &obj); err != nil {
		return nil, fmt.Errorf("status output is not JSON: %w", err)
	}
	for _, k := range []string{"regions", "patches", "applied"} {
		if raw, ok := obj[k]; ok {
			if string(raw) == "null" {
				return nil, nil
			}
			if err := json.Unmarshal(raw, &list); err != nil {
				return nil, fmt.Errorf("status output field %q: %w", k, err)
			}
			return list, nil
		}
	}
	return nil, errors.New("status output holds no list of regions")
}

// expectCode is the code the target must run when status reports state, and
// whether status pins it down at all: in the middle of a switch either side
// is fine, as long as the process is not half patched.
func expectCode(state string) (codeState, bool) {
	switch state {
	case "applied":
		return allNew, true
	case "none", "prepared", "reverted", "superseded":
		return allOld, true
	}
	return 0, false
}

// counts is a histogram printed at the end.
type counts map[string]int

func (c counts) String() string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  %4d  %s\n", c[k], k)
	}
	return b.String()
}

// maxReported is how many failed trials are printed in full; later ones get
// one line, so a systematic failure shows its pattern without burying it.
const maxReported = 12

const (
	opApply  = 0
	opRevert = 1
)

var opNames = [2]string{"apply", "revert"}

// crashRun is the state of the test across trials.
type crashRun struct {
	t        *testing.T
	ctx      context.Context
	rng      *rand.Rand
	prog     program
	variant  string
	tg       *target
	applied  bool             // what the target runs now
	duration [2]time.Duration // of uninterrupted apply and revert
	fpIdx    [2]int

	phases   counts // what each kill interrupted, by status right after it
	outcomes counts // what the next run did
	failures counts // failed trials by what was killed where
	targets  []*target
}

func (c *crashRun) opArgs(op int) []string {
	pid := strconv.Itoa(c.tg.pid)
	if op == opApply {
		return []string{"patch", "apply", c.prog.bundle, "--pid", pid}
	}
	return []string{"patch", "revert", patchID, "--pid", pid}
}

// checkCode checks the target is healthy and runs want.
func (c *crashRun) checkCode(want codeState) error {
	got, err := c.tg.check()
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("target runs %v code, want %v", got, want)
	}
	return nil
}

// newTarget starts a fresh target of the current program, measuring how long
// uninterrupted operations take when measure is set.
func (c *crashRun) newTarget(measure bool) {
	t := c.t
	t.Helper()
	if c.tg != nil {
		select {
		case <-c.tg.done:
		default:
			c.tg.cmd.Process.Kill()
			<-c.tg.done
		}
	}
	c.tg = startTarget(t, c.prog.exe)
	c.targets = append(c.targets, c.tg)
	c.applied = false
	if err := c.checkCode(allOld); err != nil {
		t.Fatalf("fresh %s target: %v", c.variant, err)
	}
	if !measure {
		return
	}
	// Uninterrupted runs bound the random kill delays, and show the
	// operations work at all before anything is killed.
	var took [2][]time.Duration
	for i := 0; i < timingRuns; i++ {
		for op := opApply; op <= opRevert; op++ {
			r, err := hotfleet(c.ctx, "", -1, c.opArgs(op)...)
			if err != nil {
				t.Fatal(err)
			}
			if r.exitCode != 0 {
				t.Fatalf("uninterrupted %v failed with exit status %d: %s", r, r.exitCode, r.output())
			}
			took[op] = append(took[op], r.took)
			if err := c.checkCode([2]codeState{allNew, allOld}[op]); err != nil {
				t.Fatalf("after uninterrupted %v: %v", r, err)
			}
		}
	}
	for op := range took {
		slices.Sort(took[op])
		c.duration[op] = took[op][len(took[op])/2]
	}
	t.Logf("%s target (pid %d): uninterrupted apply takes %v (median of %d), revert %v", c.variant, c.tg.pid, c.duration[opApply], timingRuns, c.duration[opRevert])
}

// trial kills one apply or revert, checks what it left, and runs the next
// command to completion. key names what was killed where, for the counts.
func (c *crashRun) trial(n int) (key string, err error) {
	op := opApply
	if c.applied {
		op = opRevert
	}
	// Even trials kill at a random moment, odd ones at a failpoint.
	var r run
	mode := "random"
	if n%2 == 0 {
		delay := time.Duration(c.rng.Int64N(int64(c.duration[op]) + 1))
		r, err = hotfleet(c.ctx, "", delay, c.opArgs(op)...)
	} else {
		fps := [2][]string{applyFailpoints, revertFailpoints}[op]
		fp := fps[c.fpIdx[op]%len(fps)]
		c.fpIdx[op]++
		mode = "failpoint " + fp
		r, err = hotfleet(c.ctx, fp, -1, c.opArgs(op)...)
	}
	key = fmt.Sprintf("%s, %s", opNames[op], mode)
	if err != nil {
		return key, err
	}
	if r.outcome() == "failed" {
		health := "the target is healthy"
		if _, err := c.tg.check(); err != nil {
			health = err.Error()
		}
		return key, fmt.Errorf("%v failed with exit status %d instead of being killed or completing: %s; %s", r, r.exitCode, r.output(), health)
	}

	// Right after the kill: the target lives, runs one side consistently,
	// and status describes the state.
	got, err := c.tg.check()
	if err != nil {
		return key, fmt.Errorf("after %v (%s): %w", r, r.outcome(), err)
	}
	state, reg, err := status(c.ctx, c.tg.pid)
	if err != nil {
		return key, fmt.Errorf("after %v (%s): %w", r, r.outcome(), err)
	}
	if interrupted(state) && (reg.Consistent || reg.Problem == "") {
		return key, fmt.Errorf("after %v (%s): status says %q but not what is left to do (%+v)", r, r.outcome(), state, reg)
	}
	if want, ok := expectCode(state); ok && got != want {
		return key, fmt.Errorf("after %v (%s): status says %q (%+v) but the target runs %v code", r, r.outcome(), state, reg, got)
	}
	if r.outcome() == "completed" {
		wantState := [2]string{"applied", "reverted"}[op]
		if !(state == wantState || (op == opRevert && state == "none")) {
			return key, fmt.Errorf("%v completed but status says %q (%+v)", r, state, reg)
		}
	}
	phase := state
	if state != "none" && !reg.Consistent {
		phase += " (status: inconsistent)"
	}
	c.phases[fmt.Sprintf("%-6s %-20s -> %-9s, status %s", opNames[op], mode, r.outcome(), phase)]++

	// The next run goes to completion: the same operation again, a
	// recovery, or the opposite operation, in turn.
	var next []string
	nextName := ""
	switch (n / 2) % 3 {
	case 0:
		next, nextName = c.opArgs(op), opNames[op]+" again"
	case 1:
		next, nextName = []string{"patch", "status", "--pid", strconv.Itoa(c.tg.pid), "--json", "--recover"}, "status --recover"
	default:
		next, nextName = c.opArgs(1-op), opNames[1-op]+" instead"
	}
	nr, err := hotfleet(c.ctx, "", -1, next...)
	if err != nil {
		return key, err
	}
	runs, err := c.tg.check()
	if err != nil {
		return key, fmt.Errorf("after %v (%s, status %q) then %v (exit %d: %s): %w", r, r.outcome(), state, nr, nr.exitCode, oneLine(nr.output(), 300), err)
	}
	after, reg, err := status(c.ctx, c.tg.pid)
	if err != nil {
		return key, fmt.Errorf("after %v then %v: %w", r, nr, err)
	}
	if after != "none" && !knownFinal(after) {
		return key, fmt.Errorf("after %v then %v (exit %d: %s), status still says %q (%+v) and the target runs %v code: the interrupted operation was neither finished nor undone",
			r, nr, nr.exitCode, nr.output(), after, reg, runs)
	}
	if !reg.Consistent && after != "none" {
		return key, fmt.Errorf("after %v then %v, status says %q but inconsistent: %s", r, nr, after, reg.Problem)
	}
	want, _ := expectCode(after)
	switch {
	case nr.exitCode == 0 && strings.HasPrefix(nextName, "apply"):
		if want != allNew {
			return key, fmt.Errorf("%v succeeded (%s) after %v (%s, status %q), but status then says %q (%+v) and the target runs %v code", nr, nr.output(), r, r.outcome(), state, after, reg, runs)
		}
	case nr.exitCode == 0 && strings.HasPrefix(nextName, "revert"):
		if want != allOld {
			return key, fmt.Errorf("%v succeeded (%s) after %v (%s, status %q), but status then says %q (%+v) and the target runs %v code", nr, nr.output(), r, r.outcome(), state, after, reg, runs)
		}
	case nr.exitCode != 0 && strings.HasPrefix(nextName, "revert") && want == allOld && strings.Contains(nr.output(), "not applied"):
		// Reverting what the kill left unapplied: an error that says so,
		// with the process unchanged, is what a user should get.
	case nr.exitCode != 0:
		return key, fmt.Errorf("after %v (%s, status %q), %v failed with exit status %d: %s", r, r.outcome(), state, nr, nr.exitCode, nr.output())
	}
	if runs != want {
		return key, fmt.Errorf("after %v then %v (exit %d: %s), status says %q (%+v) but the target runs %v code", r, nr, nr.exitCode, oneLine(nr.output(), 300), after, reg, runs)
	}
	c.applied = want == allNew
	c.outcomes[fmt.Sprintf("%-6s %-9s then %-16s -> exit %d, status %s", opNames[op], r.outcome(), nextName, nr.exitCode, after)]++
	return key, nil
}

// TestCrashConsistency kills hotfleet apply and revert at random moments and
// at every failpoint, and checks after each kill that the target lives, runs
// consistently old or new code, that status describes what is left, and that
// the next hotfleet run finishes or undoes the interrupted operation.
func TestCrashConsistency(t *testing.T) {
	testenv.NeedRoot(t)
	testenv.NeedGCC(t)
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	seed := *seedFlag
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("seed %d (rerun with -args -seed %d)", seed, seed)
	c := &crashRun{
		t: t, ctx: context.Background(), rng: rand.New(rand.NewPCG(seed, 0)),
		phases: counts{}, outcomes: counts{}, failures: counts{},
	}
	begin := time.Now()
	failed := 0
	for n := 0; n < numTrials; n++ {
		if n%trialsPerTarget == 0 {
			if c.tg != nil {
				if err := c.tg.finish(); err != nil {
					t.Error(err)
				}
			}
			v := variants[(n/trialsPerTarget)%len(variants)]
			c.prog, c.variant = buildProgram(t, v), v.name
			c.tg = nil
			c.newTarget(true)
		}
		key, err := c.trial(n)
		if err != nil {
			err = c.withTargetState(err)
			failed++
			c.failures[key]++
			if failed <= maxReported {
				t.Errorf("trial %d (%s target): %v", n, c.variant, err)
			} else {
				t.Errorf("trial %d (%s target): %s", n, c.variant, oneLine(err.Error(), 400))
			}
			// Go on with a fresh process so one failure does not hide the
			// pattern of the others.
			c.newTarget(false)
		}
	}
	if err := c.tg.finish(); err != nil {
		t.Error(err)
	}
	t.Logf("%d trials (%d failed) in %v, seed %d", numTrials, failed, time.Since(begin).Round(time.Second), seed)
	var eintrs uint64
	for _, tg := range c.targets {
		eintrs += tg.epollEINTR
	}
	t.Logf("epoll_wait calls failed with EINTR (a hotfleet killed between a thread's interrupt and its stop; see testdata/target.c): %d", eintrs)
	t.Logf("what each kill interrupted (operation, kill, how the run ended, status right after):\n%v", c.phases)
	t.Logf("what the next run did (operation killed, then, exit status and final status):\n%v", c.outcomes)
	if failed > 0 {
		t.Logf("failed trials by what was killed where:\n%v", c.failures)
	}
}

// oneLine puts a message on one line of at most n bytes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		s = s[:n] + "..."
	}
	return s
}

// withTargetState adds what the target printed, or how it died, to err when
// err does not say it already: a failing hotfleet run is often only the
// messenger of a target that died a moment earlier.
func (c *crashRun) withTargetState(err error) error {
	msg := err.Error()
	if s := strings.TrimSpace(c.tg.stderr.String()); s != "" && !strings.Contains(msg, s) {
		return fmt.Errorf("%w; the target printed: %s", err, s)
	}
	select {
	case <-c.tg.done:
		if !strings.Contains(msg, "died") && !strings.Contains(msg, "exited (") {
			return fmt.Errorf("%w; the target ended: %v", err, c.tg.err)
		}
	default:
	}
	return err
}

// knownFinal reports whether a status state is the end of an operation.
func knownFinal(state string) bool {
	return state == "applied" || state == "reverted" || state == "superseded"
}
