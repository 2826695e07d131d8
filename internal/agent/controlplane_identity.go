package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"hotfleet/internal/api"
	"hotfleet/internal/atomicfile"
)

// Identity files in the state directory. The private key is generated on
// the device and never leaves it; the server learns only the public key.
const (
	deviceKeyFile   = "device.key"
	identityFile    = "identity.json"
	assignmentsFile = "assignments.json"
	bundlesDir      = "bundles"
)

// identity names this device to its control plane.
type identity struct {
	Server     string    `json:"server"`
	DeviceID   int64     `json:"device_id"`
	Ring       string    `json:"ring"`
	EnrolledAt time.Time `json:"enrolled_at"`
}

// ErrEnrollRefused is returned when the server refuses the bootstrap token.
var ErrEnrollRefused = errors.New("enrollment refused")

// loadOrCreateKey reads the device key, or generates one on the first start.
// The key is written before enrolling, so an agent killed mid-enrollment
// enrolls again with the same key.
func loadOrCreateKey(dir string) (ed25519.PrivateKey, error) {
	path := filepath.Join(dir, deviceKeyFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("generate the device key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("encode the device key: %w", err)
		}
		if err := atomicfile.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, fmt.Errorf("write the device key %s: %w", path, err)
		}
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the device key: %w", err)
	}
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("device key %s is not a PEM private key: move it and %s aside to enroll the device again", path, identityFile)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	key, ok := k.(ed25519.PrivateKey)
	if err != nil || !ok {
		return nil, fmt.Errorf("device key %s is not an Ed25519 key: move it and %s aside to enroll the device again", path, identityFile)
	}
	return key, nil
}

// normalizeServer checks the server URL and drops a trailing slash, so that
// "https://cp/" and "https://cp" name the same control plane.
func normalizeServer(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("control plane URL %q: want http(s)://HOST[:PORT]", s)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("control plane URL %q: give it without a query or fragment", s)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// enroll trades the bootstrap token for a device id. Transient failures
// (no connection, 5xx) are retried with backoff until ctx ends: a device
// that boots before the network or the server has nothing to enforce yet.
// A refused token is final.
func (cp *ControlPlane) enroll(ctx context.Context) error {
	if cp.cfg.EnrollToken == "" {
		return fmt.Errorf("this device is not enrolled with %s: give --enroll-token or --enroll-token-file (create a token with 'hotfleet token create')", cp.server)
	}
	host := cp.cfg.Hostname
	if host == "" {
		host, _ = os.Hostname()
	}
	body, err := json.Marshal(api.EnrollRequest{
		Token: cp.cfg.EnrollToken, PublicKey: cp.key.Public().(ed25519.PublicKey), Hostname: host, Labels: cp.cfg.Labels,
	})
	if err != nil {
		return err
	}
	var bo backoff
	rekeyed := false
	for {
		var resp api.EnrollResponse
		err := cp.call(ctx, http.MethodPost, api.PathEnroll, body, false, &resp, requestTimeout)
		var se *statusError
		switch {
		case err == nil:
			id := identity{Server: cp.server, DeviceID: resp.DeviceID, Ring: resp.Ring, EnrolledAt: time.Now().UTC()}
			if id.DeviceID <= 0 {
				return fmt.Errorf("enroll with %s: the server answered device id %d; check the server's version", cp.server, id.DeviceID)
			}
			if err := atomicfile.WriteJSON(filepath.Join(cp.cfg.StateDir, identityFile), id, 0o600); err != nil {
				return fmt.Errorf("save the device identity: %w", err)
			}
			cp.id = id
			cp.log.Info("enrolled with the control plane", "server", cp.server, "device", id.DeviceID, "ring", id.Ring)
			return nil
		case errors.As(err, &se) && se.Status == http.StatusUnauthorized:
			if strings.Contains(se.Msg, "hotfleet token create") {
				return fmt.Errorf("%w: %s", ErrEnrollRefused, se.Msg)
			}
			return fmt.Errorf("%w: %s; create a new token with 'hotfleet token create'", ErrEnrollRefused, se.Msg)
		case errors.As(err, &se) && se.Status == http.StatusConflict && !rekeyed:
			// The key was enrolled by an earlier run that died before
			// saving the identity: that enrollment is lost, so enroll
			// afresh under a new key.
			cp.log.Warn("the device key is already enrolled but the identity was not saved; enrolling with a new key", "server", cp.server)
			if err := os.Remove(filepath.Join(cp.cfg.StateDir, deviceKeyFile)); err != nil {
				return fmt.Errorf("replace the device key: %w", err)
			}
			if cp.key, err = loadOrCreateKey(cp.cfg.StateDir); err != nil {
				return err
			}
			if body, err = json.Marshal(api.EnrollRequest{
				Token: cp.cfg.EnrollToken, PublicKey: cp.key.Public().(ed25519.PublicKey), Hostname: host, Labels: cp.cfg.Labels,
			}); err != nil {
				return err
			}
			rekeyed = true
			continue
		case errors.As(err, &se) && se.Status/100 == 4 && se.Status != http.StatusTooManyRequests:
			return fmt.Errorf("enroll with %s: %w", cp.server, err)
		}
		wait := bo.next(retryAfterOf(err))
		cp.log.Warn("enrollment failed; retrying", "server", cp.server, "retry_in", wait, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// statusError is an answer other than 2xx, with the server's message.
type statusError struct {
	Op         string
	Status     int
	Msg        string
	RetryAfter time.Duration
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s: %d %s: %s", e.Op, e.Status, http.StatusText(e.Status), e.Msg)
}

func retryAfterOf(err error) time.Duration {
	var se *statusError
	if errors.As(err, &se) {
		return se.RetryAfter
	}
	return 0
}

// maxAnswer bounds a JSON answer from the server: a check-in answer lists a
// few dozen assignments.
const maxAnswer = 8 << 20

// call sends one request (signed unless it is the enrollment) and decodes
// the JSON answer into out.
func (cp *ControlPlane) call(ctx context.Context, method, path string, body []byte, signed bool, out any, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, cp.server+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("User-Agent", "hotfleet-agent/"+cp.cfg.AgentVersion)
	if signed {
		api.Sign(req, cp.id.DeviceID, cp.key, body, time.Now())
	}
	op := method + " " + cp.server + req.URL.Path
	resp, err := cp.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return fmt.Errorf("%s: read the answer: %w", op, err)
	}
	if resp.StatusCode/100 != 2 {
		se := &statusError{Op: op, Status: resp.StatusCode, Msg: strings.TrimSpace(string(data))}
		var e api.Error
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			se.Msg = e.Error
			if e.Field != "" {
				se.Msg += " (field " + e.Field + ")"
			}
		}
		if len(se.Msg) > 500 {
			se.Msg = se.Msg[:500] + "..."
		}
		se.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"))
		return se
	}
	if len(data) > maxAnswer {
		return fmt.Errorf("%s: the answer is larger than %d MiB", op, maxAnswer>>20)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%s: decode the answer: %w", op, err)
	}
	return nil
}

// parseRetryAfter reads a Retry-After in seconds (the form hotfleet's server
// sends), bounded by maxRetryAfter.
func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	var n int
	if _, err := fmt.Sscanf(v, "%d", &n); err != nil || n <= 0 {
		if t, err := http.ParseTime(v); err == nil {
			return min(max(time.Until(t), 0), maxRetryAfter)
		}
		return 0
	}
	return min(time.Duration(n)*time.Second, maxRetryAfter)
}
