package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"hotfleet/internal/agent"
	"hotfleet/internal/notify"
)

const (
	defaultStateDir = "/var/lib/hotfleet"
	defaultSocket   = "/run/hotfleet/agent.sock"
)

// agentConfig is the agent's config file (--config): the same settings as
// the flags, which override it.
type agentConfig struct {
	PatchDir string `json:"patch_dir"`
	// Control plane mode, the alternative to patch_dir.
	Server          string            `json:"server"`
	EnrollToken     string            `json:"enroll_token"`
	EnrollTokenFile string            `json:"enroll_token_file"`
	Labels          map[string]string `json:"labels"`
	Hostname        string            `json:"hostname"`

	StateDir    string   `json:"state_dir"`
	Socket      string   `json:"socket"`
	ReportURL   string   `json:"report_url"`
	Workers     int      `json:"workers"`
	CPUBudget   float64  `json:"cpu_budget"`
	Rescan      duration `json:"rescan"`
	Events      string   `json:"events"`
	Packages    *bool    `json:"packages"`
	Notify      *bool    `json:"notify"`
	NotifyTitle string   `json:"notify_summary"`
	NotifyBody  string   `json:"notify_body"`
	NotifyMotd  string   `json:"notify_motd"`
	LogLevel    string   `json:"log_level"`
}

type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string such as \"30s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = duration(v)
	return nil
}

// maxConfigSize bounds the config file: it holds a dozen settings.
const maxConfigSize = 1 << 20

func readAgentConfig(path string) (agentConfig, error) {
	var c agentConfig
	f, err := os.Open(path)
	if err != nil {
		return c, fmt.Errorf("read the agent config: %w", err)
	}
	defer f.Close()
	dec := json.NewDecoder(io.LimitReader(f, maxConfigSize))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("agent config %s: %w", path, err)
	}
	return c, c.validate()
}

func (c agentConfig) validate() error {
	if c.CPUBudget < 0 || c.CPUBudget > 8 {
		return fmt.Errorf("cpu_budget %.2f: give a share of one core between 0.01 and 8", c.CPUBudget)
	}
	if c.Workers < 0 || c.Workers > 64 {
		return fmt.Errorf("workers %d: give 1 to 64", c.Workers)
	}
	switch c.Events {
	case "", "netlink", "poll":
	default:
		return fmt.Errorf("events %q: give netlink or poll", c.Events)
	}
	switch c.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log_level %q: give debug, info, warn or error", c.LogLevel)
	}
	if len(c.Labels) > maxAgentLabels {
		return fmt.Errorf("labels: %d given, at most %d", len(c.Labels), maxAgentLabels)
	}
	for k, v := range c.Labels {
		if k == "" || len(k) > maxLabelKey || len(v) > maxLabelValue || strings.ContainsAny(k, "= \t\n\x00") {
			return fmt.Errorf("label %q=%q: give KEY=VALUE with a key of 1-%d characters without '=' or spaces, a value of at most %d", k, v, maxLabelKey, maxLabelValue)
		}
	}
	return nil
}

// Label bounds, as the server enforces them: labels select rings, they are
// not a place for data.
const (
	maxAgentLabels = 32
	maxLabelKey    = 63
	maxLabelValue  = 255
)

// modeError checks that exactly one source of assignments is given.
func (c agentConfig) modeError() error {
	switch {
	case c.PatchDir != "" && c.Server != "":
		return fmt.Errorf("give either --patch-dir (standalone) or --server (managed by a control plane), not both")
	case c.PatchDir == "" && c.Server == "":
		return fmt.Errorf("the agent needs --patch-dir DIR (standalone) or --server URL (managed by a control plane)")
	case c.Server != "" && c.ReportURL != "":
		return fmt.Errorf("--report-url is for --patch-dir mode; under --server reports go to the control plane")
	case c.PatchDir != "" && (c.EnrollToken != "" || c.EnrollTokenFile != "" || len(c.Labels) > 0 || c.Hostname != ""):
		return fmt.Errorf("--enroll-token, --enroll-token-file, --label and --hostname need --server")
	case c.EnrollToken != "" && c.EnrollTokenFile != "":
		return fmt.Errorf("give --enroll-token or --enroll-token-file, not both")
	}
	return nil
}

// maxTokenFile bounds the enrollment token file: a token is a short line.
const maxTokenFile = 4 << 10

func readTokenFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("read the enrollment token: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxTokenFile+1))
	if err != nil {
		return "", fmt.Errorf("read the enrollment token %s: %w", path, err)
	}
	tok := strings.TrimSpace(string(data))
	if len(data) > maxTokenFile || tok == "" || strings.ContainsAny(tok, " \t\n") {
		return "", fmt.Errorf("enrollment token file %s: want one token on one line (from 'hotfleet token create')", path)
	}
	return tok, nil
}

func parseAgentLabels(kvs []string, into map[string]string) (map[string]string, error) {
	if len(kvs) == 0 {
		return into, nil
	}
	if into == nil {
		into = map[string]string{}
	}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--label %q: give KEY=VALUE", kv)
		}
		into[k] = v
	}
	return into, nil
}

func cmdAgent(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "status" {
		return cmdAgentStatus(ctx, args[1:])
	}
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	configPath := fs.String("config", "", "agent config file (JSON); flags override it")
	patchDir := fs.String("patch-dir", "", "directory of assigned bundles (*.hfp): the standalone agent")
	server := fs.String("server", "", "control plane URL: the managed agent (instead of --patch-dir)")
	enrollToken := fs.String("enroll-token", "", "bootstrap token to enroll with --server (needed once)")
	enrollTokenFile := fs.String("enroll-token-file", "", "file holding the bootstrap token (instead of --enroll-token)")
	hostname := fs.String("hostname", "", "hostname to enroll under (default: the kernel's)")
	var labels stringList
	fs.Var(&labels, "label", "KEY=VALUE label sent at enrollment (repeatable)")
	stateDir := fs.String("state-dir", "", "state and report queue (default "+defaultStateDir+")")
	socket := fs.String("socket", "", "status socket (default "+defaultSocket+")")
	reportURL := fs.String("report-url", "", "post reports to this URL (default: keep them queued)")
	workers := fs.Int("workers", 0, "processes patched at once (default: number of CPUs, at least 2)")
	budget := fs.Float64("cpu-budget", 0, "share of one core patch work may use on average (default 0.5)")
	rescan := fs.Duration("rescan", 0, "full rescan interval, the safety net behind events (default 60s)")
	events := fs.String("events", "", "exec/exit events: netlink or poll (default: netlink, else poll)")
	noNotify := fs.Bool("no-notify", false, "do not tell logged-in users when the device is first hot patched")
	noPackages := fs.Bool("no-packages", false, "do not look up which package owns each module")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (default info)")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	var c agentConfig
	if *configPath != "" {
		var err error
		if c, err = readAgentConfig(*configPath); err != nil {
			return err
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	override := func(name string, dst *string, v string) {
		if set[name] || *dst == "" {
			*dst = v
		}
	}
	override("patch-dir", &c.PatchDir, *patchDir)
	override("server", &c.Server, *server)
	override("enroll-token", &c.EnrollToken, *enrollToken)
	override("enroll-token-file", &c.EnrollTokenFile, *enrollTokenFile)
	override("hostname", &c.Hostname, *hostname)
	// A flag chooses the mode over the config file; both flags together
	// are refused below.
	if set["enroll-token"] && !set["enroll-token-file"] {
		c.EnrollTokenFile = ""
	}
	if set["enroll-token-file"] && !set["enroll-token"] {
		c.EnrollToken = ""
	}
	if set["patch-dir"] && !set["server"] {
		c.Server = ""
	}
	if set["server"] && !set["patch-dir"] {
		c.PatchDir = ""
	}
	if labels, err := parseAgentLabels(labels, c.Labels); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	} else {
		c.Labels = labels
	}
	override("state-dir", &c.StateDir, *stateDir)
	override("socket", &c.Socket, *socket)
	override("report-url", &c.ReportURL, *reportURL)
	override("events", &c.Events, *events)
	override("log-level", &c.LogLevel, *logLevel)
	if set["workers"] {
		c.Workers = *workers
	}
	if set["cpu-budget"] {
		c.CPUBudget = *budget
	}
	if set["rescan"] {
		c.Rescan = duration(*rescan)
	}
	if c.StateDir == "" {
		c.StateDir = defaultStateDir
	}
	if c.Socket == "" {
		c.Socket = defaultSocket
	}
	if err := c.validate(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if err := c.modeError(); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	notifyOn := !*noNotify && (c.Notify == nil || *c.Notify)
	packages := !*noPackages && (c.Packages == nil || *c.Packages)

	level := slog.LevelInfo
	switch c.LogLevel {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	var err error
	cfg := agent.Config{
		StateDir: c.StateDir, Socket: c.Socket,
		Workers: c.Workers, CPUBudget: c.CPUBudget, Rescan: time.Duration(c.Rescan), WatchMode: c.Events,
		Notify:   notify.Config{Enabled: notifyOn, Summary: c.NotifyTitle, Body: c.NotifyBody, MotdPath: c.NotifyMotd},
		Packages: packages, Log: log,
	}
	if fp := os.Getenv(failpointEnv); fp != "" {
		if cfg.Failpoint, err = killAt(fp); err != nil {
			return fmt.Errorf("%w: %s: %v", errUsage, failpointEnv, err)
		}
	}
	switch {
	case c.Server != "":
		token := c.EnrollToken
		if c.EnrollTokenFile != "" {
			if token, err = readTokenFile(c.EnrollTokenFile); err != nil {
				return err
			}
		}
		cp, err := agent.OpenControlPlane(ctx, agent.ControlPlaneConfig{
			Server: c.Server, StateDir: c.StateDir, EnrollToken: token, Hostname: c.Hostname, Labels: c.Labels,
			AgentVersion: version, Log: log,
		})
		if err != nil {
			return err
		}
		cfg.Source, cfg.Sender = cp, cp
	default:
		cfg.Source = agent.NewDirSource(c.PatchDir)
		if c.ReportURL != "" {
			cfg.Sender = agent.HTTPSender{URL: c.ReportURL}
		}
	}
	a, err := agent.New(cfg)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

func cmdAgentStatus(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("agent status", flag.ContinueOnError)
	socket := fs.String("socket", defaultSocket, "the agent's status socket")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	s, err := agent.QueryStatus(ctx, *socket)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	printAgentStatus(os.Stdout, s)
	return nil
}

func printAgentStatus(w io.Writer, s agent.Status) {
	d := s.Device
	fmt.Fprintf(w, "device   %s (%s), %s, kernel %s, %s\n", d.Hostname, d.MachineID, d.OSName, d.Kernel, d.Arch)
	if s.Readiness.Ready {
		fmt.Fprintln(w, "ready    hotpatch-ready")
	} else {
		fmt.Fprintln(w, "ready    NOT hotpatch-ready:")
		for _, c := range s.Readiness.Failing() {
			fmt.Fprintf(w, "           %s: %s\n             action: %s\n", c.Name, c.Reason, c.Action)
		}
	}
	events := s.Events
	if events == "" {
		events = "none (rescans only)"
	}
	fmt.Fprintf(w, "running  since %s, events from %s\n", s.Started.Format(time.RFC3339), events)
	if len(s.Assigned) == 0 {
		fmt.Fprintln(w, "assigned nothing")
	}
	for _, p := range s.Assigned {
		cves := ""
		if len(p.CVEs) > 0 {
			cves = " (" + strings.Join(p.CVEs, ", ") + ")"
		}
		fmt.Fprintf(w, "assigned %s level %d%s for %s\n", p.ID, p.Level, cves, strings.Join(p.Modules, ", "))
	}
	for _, id := range s.Withdrawn {
		fmt.Fprintf(w, "withdrawn %s: reverted wherever it is found\n", id)
	}
	for _, p := range s.Problems {
		fmt.Fprintf(w, "refused  %s: %s\n", p.Origin, p.Error)
	}
	var parts []string
	for _, st := range []string{agent.StatePatched, agent.StatePending, agent.StateBusy, agent.StateQuarantined, agent.StateFailed, agent.StateNotAffected} {
		if n := s.Counts[st]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, st))
		}
	}
	if len(parts) == 0 {
		parts = []string{"none seen yet"}
	}
	fmt.Fprintf(w, "processes %s\n", strings.Join(parts, ", "))
	if s.Latency.Count > 0 {
		fmt.Fprintf(w, "new processes patched %d after exec in p50 %s, p99 %s\n", s.Latency.Count,
			time.Duration(s.Latency.P50US)*time.Microsecond, time.Duration(s.Latency.P99US)*time.Microsecond)
	}
	fmt.Fprintf(w, "reports  %d queued, %d sent, %d dropped\n", s.Queue.Queued, s.Queue.Sent, s.Queue.Dropped)
	if cp := s.ControlPlane; cp != nil {
		printControlPlane(w, cp)
	}
	if len(s.Processes) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PID\tCOMMAND\tSTATE\tPATCHES\tDETAIL")
		for _, p := range s.Processes {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", p.Pid, p.Comm, p.State, strings.Join(p.Patches, " "), p.Detail)
		}
		tw.Flush()
	}
}

// failpointEnv names a point where the agent kills itself with SIGKILL, as a
// crash or an OOM kill would: "NAME:N" for the N-th time it passes NAME
// (points: before-apply, prepared, applied, after-apply, reverted). Crash
// consistency tests use it; it needs the power to set the agent's
// environment, which is already root's.
const failpointEnv = "HOTFLEET_AGENT_FAILPOINT"

func killAt(spec string) (func(string), error) {
	name, nth, ok := strings.Cut(spec, ":")
	n, err := strconv.Atoi(nth)
	if !ok || err != nil || n < 1 {
		return nil, fmt.Errorf("want NAME:N with N >= 1, got %q", spec)
	}
	var hits atomic.Int64
	return func(point string) {
		if point == name && hits.Add(1) == int64(n) {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way; go no further
		}
	}, nil
}

func printControlPlane(w io.Writer, cp *agent.ControlPlaneStatus) {
	fmt.Fprintf(w, "server   %s, device %d, ring %s\n", cp.Server, cp.DeviceID, cp.Ring)
	switch {
	case cp.LastCheckIn.IsZero():
		fmt.Fprintln(w, "checkin  not yet")
	case cp.LastError == "":
		fmt.Fprintf(w, "checkin  ok at %s, generation %d\n", cp.LastCheckIn.Format(time.RFC3339), cp.Generation)
	default:
		fmt.Fprintf(w, "checkin  FAILED at %s: %s\n", cp.LastCheckIn.Format(time.RFC3339), cp.LastError)
	}
	if cp.Revoked {
		fmt.Fprintln(w, "         the server refuses this device (revoked); the last assignments stay enforced")
	}
	if !cp.NextCheckIn.IsZero() {
		fmt.Fprintf(w, "         next at %s\n", cp.NextCheckIn.Format(time.RFC3339))
	}
	answer := "never"
	if !cp.LastAnswer.IsZero() {
		answer = cp.LastAnswer.Format(time.RFC3339)
	}
	fmt.Fprintf(w, "         %d assignments, as of %s\n", cp.Assignments, answer)
	for _, n := range cp.Held {
		fmt.Fprintf(w, "held     release %s %s: %s\n", n.ReleaseName, n.State, n.Reason)
	}
	for _, d := range cp.Downloads {
		fmt.Fprintf(w, "download failed %s\n", d)
	}
}
