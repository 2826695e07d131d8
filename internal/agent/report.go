package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"hotfleet/internal/outbox"
)

// Report kinds, as the control plane receives them.
const (
	KindApplied     = "applied"     // a patch was applied (or found applied) in a process
	KindReverted    = "reverted"    // a withdrawn patch was reverted in a process
	KindFailed      = "failed"      // an apply or revert failed; retried unless Permanent
	KindQuarantined = "quarantined" // a process failed too often and is left alone for a while
	KindCrash       = "crash"       // a patched process died of a fatal signal soon after patching
	KindReadiness   = "readiness"   // the readiness report changed
	KindInventory   = "inventory"   // the inventory changed
	KindRejected    = "rejected"    // an assigned bundle could not be used
)

// Report is one event the agent tells the control plane.
type Report struct {
	Kind      string    `json:"kind"`
	Time      time.Time `json:"time"`
	Pid       int       `json:"pid,omitempty"`
	Start     uint64    `json:"start,omitempty"` // with Pid, names the process across pid reuse
	Comm      string    `json:"comm,omitempty"`
	PatchID   string    `json:"patch_id,omitempty"`
	Level     uint32    `json:"level,omitempty"`
	Functions int       `json:"functions,omitempty"`
	PauseUS   int64     `json:"pause_us,omitempty"`
	Replaced  string    `json:"replaced,omitempty"`
	// Bundle is the SHA-256 of the bundle an applied, failed or reverted
	// report is about: the control plane counts a release's results by it.
	Bundle string `json:"bundle,omitempty"`
	// Found is set for an apply the agent found already done (by an earlier
	// run that could not report it), rather than did now.
	Found     bool   `json:"found,omitempty"`
	Error     string `json:"error,omitempty"`
	Permanent bool   `json:"permanent,omitempty"`
	Attempts  int    `json:"attempts,omitempty"`
	// Crash reports: the fatal signal and how long after the patch.
	Signal       string   `json:"signal,omitempty"`
	SignalNumber int      `json:"signal_number,omitempty"`
	CoreDumped   bool     `json:"core_dumped,omitempty"`
	SinceApplyS  float64  `json:"since_apply_s,omitempty"`
	Patches      []string `json:"patches,omitempty"` // every "id:level" applied in the crashed process
	Bundles      []string `json:"bundles,omitempty"` // the SHA-256 of every bundle applied in it, where known
	// LatencyUS is exec→patched for a process the agent saw start.
	LatencyUS int64           `json:"latency_us,omitempty"`
	Detail    json.RawMessage `json:"detail,omitempty"` // readiness or inventory document
}

// report queues r durably. The coalescing key keeps the newest state of one
// thing when the queue is over its bound.
func (a *Agent) report(r Report) {
	if r.Time.IsZero() {
		r.Time = time.Now().UTC()
	}
	key := r.Kind
	if r.Pid != 0 {
		key = fmt.Sprintf("%s/%d:%d/%s", r.Kind, r.Pid, r.Start, r.PatchID)
	}
	// The control plane hears of outcomes at the next (debounced) check-in.
	signal(a.outcomeC)
	if _, err := a.out.Append(r.Kind, key, r); err != nil {
		// The outbox is on the state disk; when it fails, so does the state.
		// Say so loudly: the report is the only copy.
		a.log.Error("queue report", "kind", r.Kind, "pid", r.Pid, "patch", r.PatchID, "err", err)
	}
}

// Sender delivers queued reports. HTTPSender posts them to a URL (the
// standalone agent); ControlPlane posts them, signed, to the control plane.
type Sender interface {
	Send(ctx context.Context, device string, items []outbox.Item) error
}

// RetryAfterError asks the agent to wait before sending again.
type RetryAfterError struct {
	After time.Duration
	Err   error
}

func (e *RetryAfterError) Error() string { return fmt.Sprintf("%v (retry after %s)", e.Err, e.After) }
func (e *RetryAfterError) Unwrap() error { return e.Err }

// HTTPSender posts batches of reports as JSON.
type HTTPSender struct {
	URL    string
	Client *http.Client
}

// batch is the body of one report post. Receivers deduplicate by
// (device, seq): delivery is at least once.
type batch struct {
	Device  string      `json:"device"`
	Reports []batchItem `json:"reports"`
}

type batchItem struct {
	Seq    uint64          `json:"seq"`
	Report json.RawMessage `json:"report"`
}

// maxRetryAfter bounds how long a server may tell the agent to stay quiet, so
// a bad header cannot silence a device for days.
const maxRetryAfter = time.Hour

func (s HTTPSender) Send(ctx context.Context, device string, items []outbox.Item) error {
	b := batch{Device: device}
	for _, it := range items {
		b.Reports = append(b.Reports, batchItem{Seq: it.Seq, Report: it.Body})
	}
	body, err := json.Marshal(b)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	c := s.Client
	if c == nil {
		c = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("send %d reports to %s: %w", len(items), s.URL, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 == 2 {
		return nil
	}
	err = fmt.Errorf("send %d reports to %s: %s", len(items), s.URL, resp.Status)
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		if n, perr := strconv.Atoi(ra); perr == nil && n > 0 {
			return &RetryAfterError{After: min(time.Duration(n)*time.Second, maxRetryAfter), Err: err}
		}
	}
	return err
}

// Sending backoff: a server that is down is asked again later, not hammered.
const (
	sendBatch      = 200              // reports per post: ~100 KiB
	sendBackoffMin = time.Second      // first retry after a failed post
	sendBackoffMax = 2 * time.Minute  // longest wait between tries while the server is down
	sendIdle       = 30 * time.Second // recheck the queue even without a wake-up
)

// sendLoop delivers the outbox until ctx ends.
func (a *Agent) sendLoop(ctx context.Context) {
	if a.cfg.Sender == nil {
		return
	}
	backoff := sendBackoffMin
	for {
		items, err := a.out.Peek(sendBatch)
		if err != nil {
			a.log.Error("read queued reports", "err", err)
		}
		wait := sendIdle
		if len(items) > 0 {
			err := a.cfg.Sender.Send(ctx, a.device.MachineID, items)
			switch {
			case err == nil:
				if err := a.out.Ack(items[len(items)-1].Seq); err != nil {
					a.log.Error("drop sent reports from the queue", "err", err)
				}
				backoff = sendBackoffMin
				a.sent.Add(uint64(len(items)))
				continue
			case ctx.Err() != nil:
				return
			default:
				wait = backoff
				var ra *RetryAfterError
				if errors.As(err, &ra) {
					wait = max(wait, ra.After)
				}
				backoff = min(backoff*2, sendBackoffMax)
				a.log.Warn("reports not sent; kept on disk", "queued", a.out.Len(), "retry_in", wait, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-a.out.Notify():
			if wait != sendIdle {
				// A failing server is not retried faster because more
				// reports arrived.
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
		case <-time.After(wait):
		}
	}
}
