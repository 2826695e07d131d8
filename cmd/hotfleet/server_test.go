package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"hotfleet/internal/api"
	"hotfleet/internal/bundle"
	"hotfleet/internal/store"
	"hotfleet/internal/testenv"
)

// TestServerCommand runs 'hotfleet server' as an operator would: it
// creates its database in the data directory, says where it listens, serves
// devices, follows the test clock hook, and stops cleanly on SIGTERM.
func TestServerCommand(t *testing.T) {
	dir := t.TempDir()
	bin, err := testenv.BuildHotfleet(dir)
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	offsetFile := filepath.Join(dir, "clock-offset")
	cmd := exec.Command(bin, "server", "--listen", "127.0.0.1:0", "--data-dir", data, "--checkin-interval", "10s", "--log-level", "debug")
	cmd.Env = append(os.Environ(), clockOffsetEnv+"="+offsetFile)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})

	// Wait for the listening line; earlier lines (the bootstrap token) are kept.
	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var url string
	var out []string
	deadline := time.After(30 * time.Second)
	for url == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("server exited before listening: %v\nstdout: %q\nstderr: %s", <-exited, out, stderr.String())
			}
			out = append(out, l)
			if rest, ok := strings.CutPrefix(l, "hotfleet server listening on "); ok {
				url, _, _ = strings.Cut(rest, " ")
				dbPath := filepath.Join(data, "server.db")
				if !strings.HasSuffix(l, "(db: sqlite "+dbPath+")") {
					t.Errorf("listening line %q does not name the database %s", l, dbPath)
				}
			}
		case <-deadline:
			t.Fatalf("no listening line in 30 s; stdout %q\nstderr: %s", out, stderr.String())
		}
	}
	if strings.HasSuffix(url, ":0") {
		t.Fatalf("listening line %q shows port 0, not the port picked", url)
	}
	resp, err := http.Get(url + api.PathHealth)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("health: %v %v", resp, err)
	}
	resp.Body.Close()

	// Set up a release and a device pinned to First through the database
	// the server uses (SQLite allows a second process on the file).
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(data, "server.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	secret, _, err := st.CreateToken(ctx, store.NewToken{CreatedBy: "test", TTL: time.Hour, MaxUses: 1, Ring: "First"})
	if err != nil {
		t.Fatal(err)
	}
	old := sha256.Sum256([]byte("old"))
	fix, err := bundle.Marshal(&bundle.Bundle{ID: "hf-fix", Level: 1, Modules: []bundle.Module{{BuildID: bytes.Repeat([]byte{0xaa}, 20), Name: "nginx",
		Code: make([]byte, 16), Funcs: []bundle.Func{{Name: "f", Site: 0x1000, OldSize: 16, OldHash: old[:], Size: 16}}}}})
	if err != nil {
		t.Fatal(err)
	}
	sha, _, err := st.PutBundle(ctx, fix)
	if err != nil {
		t.Fatal(err)
	}
	rel, err := st.CreateRelease(ctx, store.NewRelease{Name: "fix", Kind: store.KindHotpatch, Severity: "low",
		Bundles: map[string]string{strings.Repeat("aa", 20): sha}, CreatedBy: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.PublishRelease(ctx, rel.ID, "test", false); err != nil {
		t.Fatal(err)
	}

	pub, key, _ := ed25519.GenerateKey(nil)
	body, _ := json.Marshal(api.EnrollRequest{Token: secret, PublicKey: pub, Hostname: "web1"})
	resp, err = http.Post(url+api.PathEnroll, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	var enrolled api.EnrollResponse
	json.NewDecoder(resp.Body).Decode(&enrolled)
	resp.Body.Close()
	if resp.StatusCode != 200 || enrolled.Ring != "First" {
		t.Fatalf("enroll: %s %+v", resp.Status, enrolled)
	}
	checkIn := func() (api.CheckInResponse, string) {
		t.Helper()
		b := []byte(`{"agent_version":"test","ready":true,"inventory_hash":""}`)
		req, _ := http.NewRequest("POST", url+api.PathCheckIn, bytes.NewReader(b))
		api.Sign(req, enrolled.DeviceID, key, b, time.Now())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		var ci api.CheckInResponse
		if resp.StatusCode != 200 || json.Unmarshal(raw, &ci) != nil {
			t.Fatalf("check-in: %s %s", resp.Status, raw)
		}
		return ci, string(raw)
	}
	ci, _ := checkIn()
	if ci.NextCheckInS < 7.5 || ci.NextCheckInS > 12.5 {
		t.Errorf("next check-in in %g s with --checkin-interval 10s", ci.NextCheckInS)
	}
	st1, err := st.DeviceReleaseState(ctx, enrolled.DeviceID, rel.ID)
	if err == nil {
		t.Fatalf("ring First has the release before its 1-day deferral: %+v", st1)
	}
	// Two days later on the policy clock, First has it.
	if err := os.WriteFile(offsetFile, []byte("48h\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if ci, raw := checkIn(); len(ci.Assignments) != 1 {
		t.Fatalf("check-in 48 h later: %s; want the release assigned", raw)
	}
	if s, err := st.DeviceReleaseState(ctx, enrolled.DeviceID, rel.ID); err != nil || s.Ring != "First" {
		t.Fatalf("after moving the clock 48 h: %+v, %v; want the release to reach First", s, err)
	}

	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Fatalf("server exit on SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("server did not stop within 15 s of SIGTERM")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("shutdown took %v", took)
	}
}
