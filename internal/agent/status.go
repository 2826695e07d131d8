package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"time"

	"hotfleet/internal/inventory"
	"hotfleet/internal/readiness"
)

// Status is what 'hotfleet agent status' shows.
type Status struct {
	Device    inventory.Device `json:"device"`
	Started   time.Time        `json:"started"`
	Events    string           `json:"events"` // "netlink", "poll" or "" (rescans only)
	Readiness readiness.Report `json:"readiness"`
	Assigned  []AssignedPatch  `json:"assigned"`
	Withdrawn []string         `json:"withdrawn,omitempty"`
	Problems  []Problem        `json:"problems,omitempty"`
	Processes []ProcessStatus  `json:"processes"` // affected processes only
	Counts    map[string]int   `json:"counts"`    // per state, including "not affected"
	Latency   LatencyStats     `json:"exec_to_patched"`
	Queue     QueueStats       `json:"reports"`
	Applied   uint64           `json:"applied"` // patches applied since the agent started
	Notified  bool             `json:"notified"`
	// ControlPlane is set when the agent is managed by a control plane.
	ControlPlane *ControlPlaneStatus `json:"control_plane,omitempty"`
}

// AssignedPatch is one assigned bundle.
type AssignedPatch struct {
	ID      string   `json:"id"`
	Level   uint32   `json:"level"`
	CVEs    []string `json:"cves,omitempty"`
	Modules []string `json:"modules"` // "name (build-id)"
	SHA256  string   `json:"sha256"`
	Origin  string   `json:"origin"`
}

// ProcessStatus is one affected process.
type ProcessStatus struct {
	Pid     int      `json:"pid"`
	Comm    string   `json:"comm"`
	State   string   `json:"state"`
	Detail  string   `json:"detail,omitempty"`
	Patches []string `json:"patches,omitempty"` // "id:level"
	// LatencyUS is exec→patched, for a process the agent saw start.
	LatencyUS int64 `json:"exec_to_patched_us,omitempty"`
}

// LatencyStats summarises exec→patched over the newest processes.
type LatencyStats struct {
	Count int   `json:"count"`
	P50US int64 `json:"p50_us"`
	P99US int64 `json:"p99_us"`
	MaxUS int64 `json:"max_us"`
}

// QueueStats tells how reports fare.
type QueueStats struct {
	Queued  int    `json:"queued"`
	Sent    uint64 `json:"sent"`
	Dropped uint64 `json:"dropped"`
}

// Status returns the agent's current picture.
func (a *Agent) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := Status{
		Device: a.device, Started: a.started, Events: a.watchMode, Readiness: a.ready,
		Problems: a.problems, Counts: map[string]int{}, Notified: a.st.Notified, Applied: a.applied.Load(),
	}
	for _, as := range a.plan.all {
		ap := AssignedPatch{ID: as.Bundle.ID, Level: as.Bundle.Level, CVEs: as.Bundle.CVEs, SHA256: as.SHA256, Origin: as.Origin}
		for _, m := range as.Bundle.Modules {
			ap.Modules = append(ap.Modules, fmt.Sprintf("%s (%x)", m.Name, []byte(m.BuildID)))
		}
		s.Assigned = append(s.Assigned, ap)
	}
	for id := range a.st.Withdrawn {
		s.Withdrawn = append(s.Withdrawn, id)
	}
	sort.Strings(s.Withdrawn)
	for _, v := range a.views {
		s.Counts[v.status]++
		if !v.affected {
			continue
		}
		ps := ProcessStatus{Pid: v.pid, Comm: v.comm, State: v.status, Detail: v.detail, LatencyUS: v.latency.Microseconds()}
		for k := range v.patches {
			ps.Patches = append(ps.Patches, k)
		}
		sort.Strings(ps.Patches)
		s.Processes = append(s.Processes, ps)
	}
	sort.Slice(s.Processes, func(i, j int) bool { return s.Processes[i].Pid < s.Processes[j].Pid })
	p50, p99, mx := a.lat.percentiles()
	s.Latency = LatencyStats{Count: a.lat.count, P50US: p50.Microseconds(), P99US: p99.Microseconds(), MaxUS: mx.Microseconds()}
	s.Queue = QueueStats{Queued: a.out.Len(), Sent: a.sent.Load(), Dropped: a.out.Dropped()}
	if cp, ok := a.cfg.Source.(*ControlPlane); ok {
		s.ControlPlane = cp.status()
	}
	return s
}

// serveStatus answers status requests on a unix socket only root can reach.
func (a *Agent) serveStatus(path string) (io.Closer, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create the status socket's directory: %w", err)
	}
	// A socket left by an agent that was killed is in the way; one that
	// answers belongs to a running agent.
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("another agent is running (it answers on %s); stop it first", path)
	}
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on the status socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(a.Status())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	return srv, nil
}

// ErrNotRunning means no agent answers on the socket.
var ErrNotRunning = errors.New("the agent is not running")

// QueryStatus asks the running agent for its status.
func QueryStatus(ctx context.Context, socket string) (Status, error) {
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}, Timeout: 10 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://agent/v1/status", nil)
	if err != nil {
		return Status{}, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return Status{}, fmt.Errorf("%w (no answer on %s: %v); start it with 'hotfleet agent' or 'systemctl start hotfleet-agent'", ErrNotRunning, socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Status{}, fmt.Errorf("agent status: %s", resp.Status)
	}
	var s Status
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&s); err != nil {
		return Status{}, fmt.Errorf("agent status: %w", err)
	}
	return s, nil
}
