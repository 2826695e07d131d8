package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// window is what threads.c reports about its 16 workers over a window in
// which each made a given number of calls.
type window struct {
	calls, old, new, threadsOld, threadsNew, idle, bad int
}

func askWindow(t *testing.T, tg *target, calls int) window {
	t.Helper()
	a := tg.ask("window " + strconv.Itoa(calls))
	var w window
	if _, err := fmt.Sscanf(a, "calls=%d old=%d new=%d threads_old=%d threads_new=%d idle=%d bad=%d",
		&w.calls, &w.old, &w.new, &w.threadsOld, &w.threadsNew, &w.idle, &w.bad); err != nil {
		t.Fatalf("window answered %q: %v", a, err)
	}
	t.Logf("window of %d calls per thread: %s", calls, a)
	return w
}

const (
	// workerThreads is the number of threads threads.c runs.
	workerThreads = 16
	// callsPerWindow is how many calls each worker makes in a window that
	// shows which code it runs: enough to be sure, little enough to be
	// quick (a call takes nanoseconds).
	callsPerWindow = 100000
)

// TestManyThreadsInHotFunction: 16 threads call the patched function in a
// tight loop. Every result is the old or the new value, never garbage; after
// apply every thread gets the new value, after revert the old one.
func TestManyThreadsInHotFunction(t *testing.T) {
	needs(t)
	p := buildExe(t, "compute.c", "threads.c", pie)
	b := p.bundle(t, "fix-compute", 1, p.fixed(t, "fixed", "return r + 1000;", "return r + 2000;"), []string{"compute"})
	tg := start(t, p.bin, nil)
	// (5*7+3) % 1000 = 38.
	tg.expect("call 5", "1038", "before apply")
	w := askWindow(t, tg, callsPerWindow)
	if w.idle != 0 || w.new != 0 || w.threadsOld != workerThreads || w.bad != 0 {
		t.Fatalf("before apply: want all %d threads getting the old value, got %+v", workerThreads, w)
	}

	for round := 1; round <= 3; round++ {
		apply(t, b, tg.pid, 1)
		tg.expect("call 5", "2038", fmt.Sprintf("round %d: right after apply", round))
		settle(t, tg, round, "apply")
		w = askWindow(t, tg, callsPerWindow)
		if w.bad != 0 {
			t.Fatalf("round %d: %d results were neither the old nor the new value: %s", round, w.bad, tg.describe())
		}
		if w.old != 0 || w.threadsNew != workerThreads || w.idle != 0 {
			t.Fatalf("round %d: after apply want all %d threads getting only the new value, got %+v", round, workerThreads, w)
		}
		requireApplied(t, tg.pid, "fix-compute", 1, "compute")

		revert(t, "fix-compute", tg.pid, 1)
		tg.expect("call 5", "1038", fmt.Sprintf("round %d: right after revert", round))
		settle(t, tg, round, "revert")
		w = askWindow(t, tg, callsPerWindow)
		if w.bad != 0 {
			t.Fatalf("round %d: %d results were neither the old nor the new value: %s", round, w.bad, tg.describe())
		}
		if w.new != 0 || w.threadsOld != workerThreads || w.idle != 0 {
			t.Fatalf("round %d: after revert want all %d threads getting only the old value, got %+v", round, workerThreads, w)
		}
		requireNothingApplied(t, tg.pid)
	}
	tg.healthy()
}

// settle lets each worker finish the call it was in when the code switched:
// switch at call lets a thread that was inside the function finish that
// call in the code it started in, and with 16 threads on few cores a thread
// may run again only many milliseconds after apply returned. So until each
// thread has made two more calls, each may still deliver one result from
// the code before the switch, never more.
func settle(t *testing.T, tg *target, round int, op string) {
	t.Helper()
	w := askWindow(t, tg, 2)
	stale := w.old
	if op == "revert" {
		stale = w.new
	}
	if w.bad != 0 || stale > workerThreads || w.idle != 0 {
		t.Fatalf("round %d: after %s, %d results came from the code before it (at most one per thread may), %d were garbage, %d threads did not run",
			round, op, stale, w.bad, w.idle)
	}
}

// TestBlockedThreadsSeeNoEINTR: threads blocked in read, epoll_wait and a
// 2 s nanosleep see no EINTR, no spurious wakeup and no short sleep across
// apply and revert (block.c reports any as ERR and exits), and still get the
// data written to them afterwards.
func TestBlockedThreadsSeeNoEINTR(t *testing.T) {
	needs(t)
	p := buildExe(t, "basic.c", "block.c", pie)
	b := p.bundle(t, "fix-block", 1, p.fixed(t, "fixed", "x * 10 + 1", "x * 10 + 7"), []string{"answer"})
	readR, readW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	pollR, pollW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer readW.Close()
	defer pollW.Close()
	tg := start(t, p.bin, nil, readR, pollR) // fd 3 and fd 4
	readR.Close()
	pollR.Close()

	tg.expect("call 5", "51", "before apply")
	// Let every thread block. Patch at a few points of the 2 s sleep.
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	for round := 1; round <= 3; round++ {
		apply(t, b, tg.pid, 1)
		tg.expect("call 5", "57", fmt.Sprintf("round %d: after apply", round))
		time.Sleep(200 * time.Millisecond)
		revert(t, "fix-block", tg.pid, 1)
		tg.expect("call 5", "51", fmt.Sprintf("round %d: after revert", round))
		time.Sleep(200 * time.Millisecond)
	}
	tg.healthy()

	// The blocked reader and poller still get their data.
	if _, err := readW.WriteString("hello\n"); err != nil {
		t.Fatal(err)
	}
	tg.waitEvent("read hello")
	if _, err := pollW.WriteString("ping\n"); err != nil {
		t.Fatal(err)
	}
	tg.waitEvent("epoll ping")

	// Every sleep that was interrupted by the patching has ended by now and
	// was checked to be full length.
	time.Sleep(2*time.Second + 500*time.Millisecond)
	tg.healthy()
	n, err := strconv.Atoi(tg.ask("sleeps"))
	if err != nil {
		t.Fatal(err)
	}
	if minSleeps := int(time.Since(start) / (2 * time.Second)); n < minSleeps {
		t.Errorf("%d full 2 s sleeps ended, want at least %d", n, minSleeps)
	}
	tg.healthy()
}

// TestQuiescentMode: in quiescent mode no thread may be inside an old
// function. A function busy half of the time gets patched; one a thread
// never leaves makes apply fail by its deadline, naming the function, with
// the target unchanged. Without quiescent mode the latter is patched at
// call: the spinning thread stays in the old code, new calls run the new.
func TestQuiescentMode(t *testing.T) {
	needs(t)
	p := buildExe(t, "quiet_unit.c", "quiet.c", pie)
	busyFix := p.fixed(t, "busy", "\treturn 1;\n}", "\treturn 2;\n}")
	stuckFix := p.fixed(t, "stuck", "return 10;", "return 20;")
	// Quiescent by the author's choice, at build time.
	bBusy := p.bundle(t, "fix-busy", 1, busyFix, []string{"busy_part"}, "--quiescent")
	bStuck := p.bundle(t, "fix-stuck", 1, stuckFix, []string{"stuck"})
	bStuckQ := p.bundle(t, "fix-stuck-q", 1, stuckFix, []string{"stuck"}, "--quiescent-func", "stuck")
	tg := start(t, p.bin, nil)
	const orig = "busy=1 stuck=10"
	tg.expect("call 0", orig, "before apply")

	t.Run("busy-part-of-the-time", func(t *testing.T) {
		apply(t, bBusy, tg.pid, 1)
		tg.expect("call 0", "busy=2 stuck=10", "after apply")
		requireApplied(t, tg.pid, "fix-busy", 1, "busy_part")
		revert(t, "fix-busy", tg.pid, 1)
		tg.expect("call 0", orig, "after revert")
		requireNothingApplied(t, tg.pid)
	})

	// deadline is what the user gives; giveUp is how much longer than that
	// the command may take (one backoff step, detaching, reporting).
	const deadline, giveUp = 2 * time.Second, 6 * time.Second
	neverReturns := []struct {
		name, bundle string
		args         []string
	}{
		{"apply-quiescent", bStuck, []string{"--quiescent"}},
		{"built-quiescent", bStuckQ, nil},
	}
	for _, c := range neverReturns {
		t.Run("never-returns-"+c.name, func(t *testing.T) {
			args := append([]string{"patch", "apply", c.bundle, "--pid", strconv.Itoa(tg.pid), "--deadline", deadline.String()}, c.args...)
			r := hotfleet(t, args...)
			r.mustFail(t, "stuck")
			if r.took > deadline+giveUp {
				t.Errorf("apply gave up after %v, want about the %v deadline", r.took, deadline)
			}
			if r.took < deadline/2 {
				t.Errorf("apply gave up after %v, before trying for the %v deadline", r.took, deadline)
			}
			tg.expect("call 0", orig, "after the failed apply")
			requireNothingApplied(t, tg.pid)
			tg.healthy()
		})
	}

	t.Run("never-returns-switch-at-call", func(t *testing.T) {
		apply(t, bStuck, tg.pid, 1)
		tg.expect("call 0", "busy=1 stuck=20", "after apply")
		revert(t, "fix-stuck", tg.pid, 1)
		tg.expect("call 0", orig, "after revert")
		tg.healthy()
	})
}

// TestProcessExitsMidPatch: the target is killed while hotfleet patches it.
// hotfleet must neither hang nor crash: it either finished before the
// process died, or says the process exited.
func TestProcessExitsMidPatch(t *testing.T) {
	needs(t)
	p := buildExe(t, "compute.c", "threads.c", pie)
	b := p.bundle(t, "fix-compute", 1, p.fixed(t, "fixed", "return r + 1000;", "return r + 2000;"), []string{"compute"})
	const trials = 8
	failed := 0
	for i := 0; i < trials; i++ {
		tg := start(t, p.bin, nil)
		tg.expect("call 5", "1038", "before apply")
		// Spread the kill over the tens of milliseconds an apply to 16 busy
		// threads takes.
		delay := time.Duration(i) * 5 * time.Millisecond
		killed := make(chan struct{})
		go func() {
			defer close(killed)
			time.Sleep(delay)
			_ = syscall.Kill(tg.pid, syscall.SIGKILL)
		}()
		r := hotfleet(t, "patch", "apply", b, "--pid", strconv.Itoa(tg.pid))
		<-killed
		if strings.Contains(r.stderr, "panic:") || strings.Contains(r.stderr, "goroutine ") {
			t.Fatalf("trial %d: hotfleet crashed: %v", i, r)
		}
		if r.exit != 0 {
			failed++
			r.mustFail(t, strconv.Itoa(tg.pid), "exited")
		}
	}
	t.Logf("%d of %d applies saw the process exit", failed, trials)
	if failed == 0 {
		t.Errorf("no apply saw the process exit; the kill came too late to test anything")
	}
}
