package atomicfile

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

type state struct {
	Gen     int      `json:"gen"`
	Applied []string `json:"applied"`
}

func TestWriteReadJSONRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	for gen := 1; gen <= 3; gen++ {
		want := state{Gen: gen, Applied: []string{fmt.Sprintf("CVE-2024-%04d", gen)}}
		if err := WriteJSON(path, want, 0o600); err != nil {
			t.Fatal(err)
		}
		var got state
		if err := ReadJSON(path, &got); err != nil {
			t.Fatal(err)
		}
		if got.Gen != want.Gen || len(got.Applied) != 1 || got.Applied[0] != want.Applied[0] {
			t.Fatalf("generation %d: read back %+v, want %+v", gen, got, want)
		}
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600: state may hold secrets", fi.Mode().Perm())
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries after three writes, want only state.json: %v", len(entries), entries)
	}
}

func TestReadJSONMissing(t *testing.T) {
	var s state
	err := ReadJSON(filepath.Join(t.TempDir(), "nope.json"), &s)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadJSON of a missing file: %v, want an error wrapping fs.ErrNotExist", err)
	}
	if errors.Is(err, ErrCorrupt) {
		t.Errorf("a missing file is reported as corrupt: %v", err)
	}
}

func TestReadJSONCorrupt(t *testing.T) {
	for _, tc := range []struct {
		name, content, wantInErr string
	}{
		{"empty", "", "not valid JSON"},
		{"truncated", `{"gen": 3, "applied": ["CVE-`, "not valid JSON"},
		{"garbage", "\x00\x01\x02binary", "at byte 1"},
		{"trailing", `{"gen": 1} {"gen": 2}`, "not valid JSON"},
		{"wrong type", `{"gen": "three"}`, "another shape than *atomicfile.state"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			var s state
			err := ReadJSON(path, &s)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("ReadJSON(%q): %v, want an error wrapping ErrCorrupt", tc.content, err)
			}
			for _, want := range []string{path, tc.wantInErr, "move it aside"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
}

// TestLeftoversRemoved checks that temp files of crashed writers of the same
// name are removed by the next write, while another live writer's temp file,
// other names' temp files and unrelated files stay.
func TestLeftoversRemoved(t *testing.T) {
	dir := t.TempDir()
	sleeper := exec.Command("sleep", "60")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })

	deadPid := 1<<22 + 1      // above the kernel's pid_max limit: never a live process
	files := map[string]bool{ // name -> must survive
		fmt.Sprintf(".state.json.tmp-%d-17", deadPid):             false,
		fmt.Sprintf(".state.json.tmp-%d-18", os.Getpid()):         false, // ours, not in flight
		".state.json.tmp-garbage":                                 false,
		fmt.Sprintf(".state.json.tmp-%d-19", sleeper.Process.Pid): true,
		fmt.Sprintf(".other.json.tmp-%d-20", deadPid):             true,
		"unrelated": true,
	}
	for name := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("half"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := WriteFile(filepath.Join(dir, "state.json"), []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, keep := range files {
		_, err := os.Stat(filepath.Join(dir, name))
		if exists := err == nil; exists != keep {
			t.Errorf("%s: exists=%v after WriteFile, want %v", name, exists, keep)
		}
	}
}

func TestConcurrentWriters(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	const writers, rounds = 8, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers*rounds)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				if err := WriteJSON(path, state{Gen: w*1000 + r}, 0o600); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var s state
	if err := ReadJSON(path, &s); err != nil {
		t.Fatal(err)
	}
	if s.Gen%1000 != rounds-1 {
		t.Errorf("final generation %d is no writer's last write (x%03d)", s.Gen, rounds-1)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Errorf("%d entries left after concurrent writes, want only state.json: %v", len(entries), entries)
	}
}

const childEnv = "HOTFLEET_ATOMICFILE_CHILD"

// crashPayloadBytes makes each write span many pages, so that a kill during
// the write would leave a visible mix if the write were not atomic.
const crashPayloadBytes = 256 << 10

type payload struct {
	Gen  int    `json:"gen"`
	Fill string `json:"fill"`
}

func fill(gen int) string { return strings.Repeat(string(rune('a'+gen%26)), crashPayloadBytes) }

// TestHelperWriter is the child of TestCrashAtomicity: it replaces the file
// in a loop, printing each generation once WriteJSON has returned.
func TestHelperWriter(t *testing.T) {
	path := os.Getenv(childEnv)
	if path == "" {
		t.Skip("child process of TestCrashAtomicity")
	}
	out := bufio.NewWriter(os.Stdout)
	for gen := 1; ; gen++ {
		if err := WriteJSON(path, payload{Gen: gen, Fill: fill(gen)}, 0o600); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Fprintf(out, "%d\n", gen)
		out.Flush()
	}
}

// TestCrashAtomicity kills a writer with SIGKILL at random moments and checks
// that the file then holds one whole generation, at least the last one the
// writer saw acknowledged, and that the next write removes the leftover temp
// file.
func TestCrashAtomicity(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes for a few seconds")
	}
	const rounds = 40 // each round is one kill: enough to land in every step of WriteFile many times
	dir := t.TempDir()
	path := filepath.Join(dir, "state.json")
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 0))
	t.Logf("seed %d", seed)
	leftovers := 0
	for round := range rounds {
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperWriter$")
		cmd.Env = append(os.Environ(), childEnv+"="+path)
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lastAck := 0
		acks := make(chan int)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				var g int
				fmt.Sscan(sc.Text(), &g)
				acks <- g
			}
			close(acks)
		}()
		deadline := time.After(time.Duration(5+rng.IntN(60)) * time.Millisecond)
	wait:
		for {
			select {
			case g, ok := <-acks:
				if !ok {
					break wait
				}
				lastAck = g
			case <-deadline:
				break wait
			}
		}
		cmd.Process.Signal(syscall.SIGKILL)
		for g := range acks {
			lastAck = g // printed before the kill landed
		}
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("round %d: writer ended by itself (%v): %s", round, err, stderr.String())
		}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".state.json.tmp-") {
				leftovers++
			}
		}
		if lastAck == 0 {
			if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) && round == 0 {
				continue // killed before the first write
			}
		}
		var got payload
		if err := ReadJSON(path, &got); err != nil {
			t.Fatalf("round %d: after kill: %v", round, err)
		}
		if got.Gen < lastAck {
			t.Fatalf("round %d: file holds generation %d, but generation %d was acknowledged", round, got.Gen, lastAck)
		}
		if got.Fill != fill(got.Gen) {
			t.Fatalf("round %d: generation %d holds another generation's content: a mix", round, got.Gen)
		}
	}
	// One more write in this process cleans up what the last kill left.
	if err := WriteFile(path, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("%d entries left after the final write, want only state.json: %v", len(entries), entries)
	}
	t.Logf("%d rounds, %d kills left a temp file behind", rounds, leftovers)
}
