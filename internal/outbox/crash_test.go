package outbox

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The crash tests run this test binary again as a child that works on an
// outbox until it is killed; the variables say what the child does.
const (
	childDirEnv   = "HOTFLEET_OUTBOX_CHILD_DIR"
	childPointEnv = "HOTFLEET_OUTBOX_CHILD_FAILPOINT"
	// crashMaxItems is small so that the bound drops reports in the crash test.
	crashMaxItems = 16
	// crashPad makes each report about 300 bytes, the size the agent sends.
	crashPad = 230
)

type tagged struct {
	Tag string `json:"tag"`
	Pad string `json:"pad"`
}

// TestHelperChild is the child of TestCrashLoop and TestCrashInCompaction.
func TestHelperChild(t *testing.T) {
	dir := os.Getenv(childDirEnv)
	if dir == "" {
		t.Skip("child process of the crash tests")
	}
	out := bufio.NewWriter(os.Stdout)
	say := func(format string, args ...any) {
		fmt.Fprintf(out, format+"\n", args...)
		out.Flush()
	}
	die := func(err error) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	compactMinBytes = 2 << 10 // compact every few dozen reports
	if point := os.Getenv(childPointEnv); point != "" {
		failpoint = func(p string) {
			if p == point {
				say("at %s", p)
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {}
			}
		}
		compactMinBytes = 1 // the Ack below must compact
		o, err := Open(dir, Options{})
		if err != nil {
			die(err)
		}
		say("open")
		// The parent filled 30 reports; ack 20, which compacts, then append.
		if err := o.Ack(20); err != nil {
			die(err)
		}
		say("acked")
		if _, err := o.Append("apply", "after", tagged{Tag: "after"}); err != nil {
			die(err)
		}
		say("appended")
		os.Exit(0)
	}

	failpoint = func(p string) {
		if p == "compact:done" {
			say("C")
		}
	}
	o, err := Open(dir, Options{MaxItems: crashMaxItems})
	if err != nil {
		die(err)
	}
	say("open %d %d", o.Dropped(), o.Recovered().DiscardedBytes)
	pad := strings.Repeat("p", crashPad)
	for i := 0; ; i++ {
		if i%7 == 6 {
			items, err := o.Peek(5)
			if err != nil {
				die(err)
			}
			if len(items) > 0 {
				upTo := items[len(items)-1].Seq
				say("k %d", upTo)
				if err := o.Ack(upTo); err != nil {
					die(err)
				}
				say("K %d", upTo)
			}
			continue
		}
		tag := fmt.Sprintf("%d-%d", os.Getpid(), i)
		it, err := o.Append("apply", tag, tagged{Tag: tag, Pad: pad})
		if err != nil {
			die(err)
		}
		say("A %d %s %d", it.Seq, tag, o.Dropped())
	}
}

func child(t *testing.T, dir, point string) (*exec.Cmd, io.ReadCloser, *strings.Builder) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperChild$")
	cmd.Env = append(os.Environ(), childDirEnv+"="+dir, childPointEnv+"="+point)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := new(strings.Builder)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, stdout, stderr
}

// TestCrashLoop kills a child that appends and acks in a loop with SIGKILL at
// random moments, many times over the same directory, and checks after each
// kill that every report whose Append returned is there exactly once and
// intact unless acked or dropped by the bound, that nothing acked came back,
// that Seq only grows across restarts and that Dropped never goes back.
func TestCrashLoop(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes for several seconds")
	}
	// rounds is how many kills: with ~20 operations per child, kills land in
	// every step of Append, Ack, compaction and Open many times.
	const rounds = 150
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("seed %d", seed)
	dir := t.TempDir()

	known := map[uint64]string{} // Seq -> tag of every report that may be queued
	var ackedDone, ackIntent, maxSeq, dropped uint64
	var appends, acks, compactions, recoveredBytes int
	for round := range rounds {
		cmd, stdout, stderr := child(t, dir, "")
		lines := make(chan string)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// Most kills land while the child works; some during its start.
		var timer <-chan time.Time
		if rng.IntN(5) == 0 {
			timer = time.After(time.Duration(rng.IntN(15000)) * time.Microsecond)
		}
		pid := cmd.Process.Pid
		var printedDropped uint64
		handle := func(line string) {
			f := strings.Fields(line)
			switch f[0] {
			case "open":
				if timer == nil {
					timer = time.After(time.Duration(rng.IntN(30000)) * time.Microsecond)
				}
				d, _ := strconv.ParseUint(f[1], 10, 64)
				if d < dropped {
					t.Fatalf("round %d: child opened with Dropped %d, but %d were dropped before", round, d, dropped)
				}
			case "A":
				seq, _ := strconv.ParseUint(f[1], 10, 64)
				if seq <= maxSeq {
					t.Fatalf("round %d: Append returned Seq %d, but %d was assigned before", round, seq, maxSeq)
				}
				maxSeq = seq
				known[seq] = f[2]
				printedDropped, _ = strconv.ParseUint(f[3], 10, 64)
				appends++
			case "k":
				ackIntent, _ = strconv.ParseUint(f[1], 10, 64)
			case "K":
				ackedDone, _ = strconv.ParseUint(f[1], 10, 64)
				acks++
			case "C":
				compactions++
			}
		}
	wait:
		for {
			select {
			case line, ok := <-lines:
				if !ok {
					break wait
				}
				handle(line)
			case <-timer:
				break wait
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		for line := range lines {
			handle(line) // printed before the kill landed
		}
		cmd.Wait()
		if ws := cmd.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() {
			t.Fatalf("round %d: child ended by itself: %s", round, stderr)
		}

		before, _ := os.ReadFile(filepath.Join(dir, logName))
		o, err := Open(dir, Options{MaxItems: crashMaxItems})
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		if r := o.Recovered(); r.DiscardedBytes > 0 {
			// A write the kill interrupted at a page boundary is torn.
			t.Logf("round %d: Open discarded %d torn bytes at the end of the %d-byte log (%d into its last page)", round, r.DiscardedBytes, len(before), len(before)%4096)
		}
		recoveredBytes += int(o.Recovered().DiscardedBytes)
		items, err := o.Peek(1 << 20)
		if err != nil {
			t.Fatal(err)
		}
		present := map[uint64]bool{}
		for i, it := range items {
			var body tagged
			if err := json.Unmarshal(it.Body, &body); err != nil {
				t.Fatalf("round %d: item %d: torn body %q: %v", round, it.Seq, it.Body, err)
			}
			if i > 0 && it.Seq <= items[i-1].Seq {
				t.Fatalf("round %d: Seq %d after %d", round, it.Seq, items[i-1].Seq)
			}
			if it.Seq <= ackedDone {
				t.Fatalf("round %d: item %d is back after Ack(%d) returned", round, it.Seq, ackedDone)
			}
			tag, ok := known[it.Seq]
			switch {
			case ok && (tag != body.Tag || it.Key != tag):
				t.Fatalf("round %d: item %d holds report %q (key %q), but its Append returned for %q", round, it.Seq, body.Tag, it.Key, tag)
			case !ok && (it.Seq <= maxSeq || !strings.HasPrefix(body.Tag, fmt.Sprintf("%d-", pid))):
				t.Fatalf("round %d: item %d (%q) is no report this or an earlier child appended", round, it.Seq, body.Tag)
			case !ok:
				maxSeq = it.Seq // the Append the kill interrupted made it
			}
			present[it.Seq] = true
		}
		// Every report newer than any ack in flight, and among the newest
		// crashMaxItems-1 (one more may have been appended unseen), must
		// have survived.
		var must []uint64
		for seq := range known {
			if seq > ackIntent {
				must = append(must, seq)
			}
		}
		slices.Sort(must)
		if len(must) > crashMaxItems-1 {
			must = must[len(must)-(crashMaxItems-1):]
		}
		for _, seq := range must {
			if !present[seq] {
				t.Fatalf("round %d: report %d (%s) is lost: its Append returned, no ack covered it and it is among the newest %d", round, seq, known[seq], crashMaxItems-1)
			}
		}
		if len(items) > crashMaxItems {
			t.Fatalf("round %d: %d items queued, bound %d", round, len(items), crashMaxItems)
		}
		if d := o.Dropped(); d < printedDropped || d < dropped {
			t.Fatalf("round %d: Dropped %d after reopen, but the child saw %d and earlier reopens %d", round, d, printedDropped, dropped)
		} else {
			dropped = d
		}
		known = map[uint64]string{}
		for _, it := range items {
			var body tagged
			json.Unmarshal(it.Body, &body)
			known[it.Seq] = body.Tag
		}
		o.Close()
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "."+logName+".tmp-") {
			t.Errorf("leftover temp file %s after the last reopen", e.Name())
		}
	}
	t.Logf("%d kills: %d appends and %d acks returned, %d compactions finished, %d reports dropped by the bound, %d torn bytes discarded",
		rounds, appends, acks, compactions, dropped, recoveredBytes)
	if compactions == 0 || dropped == 0 || acks == 0 {
		t.Errorf("the children never compacted, dropped or acked: the test did not exercise what it claims")
	}
}

// TestCrashInCompaction kills the child at each step of the compaction that
// its Ack starts, and at the steps of writes, and checks that the reopened
// queue holds exactly the reports the Ack left (or, when the kill came before
// the ack was fsynced, possibly all of them), each once, and that Seq goes on.
func TestCrashInCompaction(t *testing.T) {
	for _, point := range []string{
		"ack:written", "ack:synced",
		"compact:begin", "compact:temp-written", "compact:temp-synced", "compact:renamed", "compact:done",
		"append:written", "append:synced",
	} {
		t.Run(point, func(t *testing.T) {
			dir := t.TempDir()
			o := open(t, dir, Options{})
			appendN(t, o, "", 30)
			o.Close()

			cmd, stdout, stderr := child(t, dir, point)
			out, _ := io.ReadAll(stdout)
			cmd.Wait()
			if !strings.Contains(string(out), "at "+point+"\n") {
				t.Fatalf("the child never reached %s: %s%s", point, out, stderr)
			}
			o = open(t, dir, Options{})
			got := bodies(t, o)
			post := make([]int, 0, 10)
			for n := 20; n < 30; n++ {
				post = append(post, n)
			}
			acked := strings.Contains(string(out), "acked")
			switch {
			case slices.Equal(got, post):
			case point == "ack:written" && len(got) == 30:
				// the ack was not yet fsynced: its loss is allowed
			case strings.HasPrefix(point, "append:") && len(got) == 11 && slices.Equal(got[:10], post):
				// the report being appended may or may not be there, but whole
			default:
				t.Fatalf("after a kill at %s (ack returned: %v): reports %v, want %v", point, acked, got, post)
			}
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				if strings.Contains(e.Name(), ".tmp-") {
					t.Errorf("leftover %s after reopen", e.Name())
				}
			}
			it, err := o.Append("apply", "", report{N: 99})
			if err != nil {
				t.Fatal(err)
			}
			if it.Seq <= 30 {
				t.Errorf("Append after the crash got Seq %d; 30 were assigned before", it.Seq)
			}
			if fi, err := os.Stat(filepath.Join(dir, logName)); err != nil {
				t.Fatal(err)
			} else if point != "ack:written" && fi.Size() > 2<<10+12*sizeOf("apply", "", report{N: 10}) {
				t.Logf("log is %d bytes after the crash at %s", fi.Size(), point)
			}
		})
	}
}
