package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"hotfleet/internal/api"
	"hotfleet/internal/bundle"
	"hotfleet/internal/server"
	"hotfleet/internal/store"
	"hotfleet/internal/testenv"
)

// TestAdminCLI runs the built binary against an in-process server, as an
// admin would: upload and create, publish, pause, status, rings, tokens,
// and a refusal worded by the server.
func TestAdminCLI(t *testing.T) {
	dir := t.TempDir()
	bin, err := testenv.BuildHotfleet(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := store.Open(ctx, filepath.Join(dir, "server.db"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv := server.New(server.Config{Store: st})
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	tokenFile, err := srv.Bootstrap(ctx, dir)
	if err != nil || tokenFile == "" {
		t.Fatalf("Bootstrap: %q, %v", tokenFile, err)
	}

	run := func(wantOK bool, args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "HOTFLEET_SERVER="+hs.URL, "HOTFLEET_TOKEN=")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if (err == nil) != wantOK {
			t.Fatalf("hotfleet %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
		}
		if !wantOK {
			return stderr.String()
		}
		return stdout.String()
	}
	decode := func(out string, v any) {
		t.Helper()
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("output is not the API's JSON: %v\n%s", err, out)
		}
	}

	h := sha256.Sum256([]byte("old"))
	data, err := bundle.Marshal(&bundle.Bundle{ID: "expat-fix", Level: 1, Modules: []bundle.Module{{
		BuildID: bytes.Repeat([]byte{0xab}, 20), Name: "libexpat.so.1", Code: make([]byte, 32),
		Funcs: []bundle.Func{{Name: "XML_Parse", Site: 0x1139, OldSize: 32, OldHash: h[:], Offset: 0, Size: 32}}}}})
	if err != nil {
		t.Fatal(err)
	}
	hfp := filepath.Join(dir, "fix.hfp")
	if err := os.WriteFile(hfp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	auth := []string{"--token-file", tokenFile}

	var rel api.Release
	decode(run(true, append([]string{"release", "create", "--name", "expat 2026-11", "--severity", "important", "--cve", "CVE-2024-45490",
		"--bundle", hfp, "--json"}, auth...)...), &rel)
	if rel.State != "draft" || rel.CreatedBy != "admin:bootstrap" || len(rel.Bundles) != 1 || rel.Bundles[0].BuildID != strings.Repeat("ab", 20) {
		t.Fatalf("created %+v", rel)
	}
	id := strconv.FormatInt(rel.ID, 10)
	decode(run(true, append([]string{"release", "publish", id, "--json"}, auth...)...), &rel)
	if rel.State != "published" || rel.PublishedAt == nil {
		t.Fatalf("published %+v", rel)
	}
	decode(run(true, append([]string{"release", "pause", id, "--reason", "crash reports", "--json"}, auth...)...), &rel)
	if rel.State != "paused" {
		t.Fatalf("paused %+v", rel)
	}
	var status api.ReleaseStatus
	decode(run(true, append([]string{"release", "status", id, "--json"}, auth...)...), &status)
	if len(status.Rings) != 5 || len(status.Pauses) != 1 || status.Pauses[0].Reason != "crash reports" {
		t.Fatalf("status %+v", status)
	}
	table := run(true, append([]string{"release", "status", id}, auth...)...)
	for _, want := range []string{"RING", "ELIGIBLE", "ASSIGNED", "NOT-APPLICABLE", "OFFLINE", "Broad", "crash reports", "Automatic actions: none"} {
		if !strings.Contains(table, want) {
			t.Errorf("status table lacks %q:\n%s", want, table)
		}
	}

	// An operator token made with the CLI cannot publish; the server's
	// words reach the user.
	var op api.AdminTokenResponse
	decode(run(true, append([]string{"token", "admin", "--name", "ci", "--role", "operator", "--json"}, auth...)...), &op)
	msg := run(false, "release", "publish", id, "--token", op.Token)
	if !strings.Contains(msg, "operator token 'ci' cannot publish; publishing needs an admin token") {
		t.Errorf("refusal reads %q", msg)
	}
	decode(run(true, "release", "resume", id, "--token", op.Token, "--json"), &rel)
	if rel.State != "published" {
		t.Errorf("resumed %+v", rel)
	}

	var rings struct {
		Rings []struct{ Name string } `json:"rings"`
	}
	decode(run(true, append([]string{"ring", "list", "--json"}, auth...)...), &rings)
	if len(rings.Rings) != 5 || rings.Rings[0].Name != "Test" {
		t.Errorf("rings %+v", rings)
	}
	var tok api.TokenResponse
	decode(run(true, append([]string{"token", "create", "--ttl", "1h", "--uses", "3", "--ring", "Test", "--label", "site=fra", "--json"}, auth...)...), &tok)
	if tok.Token == "" || tok.ID == 0 {
		t.Errorf("enrollment token %+v", tok)
	}
	if msg := run(false, "release", "list", "--token", "wrong"); !strings.Contains(msg, "401") || !strings.Contains(msg, "unknown") {
		t.Errorf("unknown token: %q", msg)
	}
}
