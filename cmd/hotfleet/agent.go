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
	PatchDir    string   `json:"patch_dir"`
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
	return nil
}

func cmdAgent(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "status" {
		return cmdAgentStatus(ctx, args[1:])
	}
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	configPath := fs.String("config", "", "agent config file (JSON); flags override it")
	patchDir := fs.String("patch-dir", "", "directory of assigned bundles (*.hfp)")
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
	if c.PatchDir == "" {
		return fmt.Errorf("%w: the agent needs --patch-dir (the control plane comes in a later version)", errUsage)
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
		StateDir: c.StateDir, Source: agent.NewDirSource(c.PatchDir), Socket: c.Socket,
		Workers: c.Workers, CPUBudget: c.CPUBudget, Rescan: time.Duration(c.Rescan), WatchMode: c.Events,
		Notify:   notify.Config{Enabled: notifyOn, Summary: c.NotifyTitle, Body: c.NotifyBody, MotdPath: c.NotifyMotd},
		Packages: packages, Log: log,
	}
	if fp := os.Getenv(failpointEnv); fp != "" {
		if cfg.Failpoint, err = killAt(fp); err != nil {
			return fmt.Errorf("%w: %s: %v", errUsage, failpointEnv, err)
		}
	}
	if c.ReportURL != "" {
		cfg.Sender = agent.HTTPSender{URL: c.ReportURL}
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
