package agent

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"hotfleet/internal/api"
	"hotfleet/internal/bundle"
)

// FakeControlPlane implements the device API minimally for tests: it checks
// every signature with api.Verify, serves bundles and answers what the test
// scripts. It is exported to the external test package, which runs the real
// agent binary against it.
type FakeControlPlane struct {
	t   testing.TB
	Srv *httptest.Server

	mu        sync.Mutex
	token     string // the one bootstrap token it accepts
	pub       ed25519.PublicKey
	device    int64
	enrolls   []api.EnrollRequest
	checkIns  []recordedCheckIn
	reports   []api.ReportItem
	badSigs   []string
	answer    api.CheckInResponse
	bundles   map[string][]byte // served by sha256
	fail      []failure         // answers to the next check-ins, in order
	reportErr *failure          // every report post gets this, when set
	revoked   bool
	gate      chan struct{} // when set, bundle downloads wait for it to close
	gen       int64
	genC      chan struct{} // closed and replaced when gen changes

	checkInC chan struct{}
}

type recordedCheckIn struct {
	At   time.Time
	Body api.CheckIn
}

type failure struct {
	status     int
	retryAfter int
	msg        string
}

// NewFakeControlPlane starts a fake server accepting token.
func NewFakeControlPlane(t testing.TB, token string) *FakeControlPlane {
	f := &FakeControlPlane{t: t, token: token, bundles: map[string][]byte{}, genC: make(chan struct{}), checkInC: make(chan struct{}, 100), gen: 1, device: 6}
	f.answer = api.CheckInResponse{Ring: "Broad", Generation: 1, NextCheckInS: 3600}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+api.PathEnroll, f.enroll)
	mux.HandleFunc("POST "+api.PathCheckIn, f.signed(f.checkIn))
	mux.HandleFunc("POST "+api.PathReports, f.signed(f.postReports))
	mux.HandleFunc("GET "+api.PathWatch, f.signed(f.watch))
	mux.HandleFunc("GET "+api.PathBundles+"{sha}", f.bundle)
	f.Srv = httptest.NewServer(mux)
	t.Cleanup(f.Srv.Close)
	return f
}

func writeJSONTest(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (f *FakeControlPlane) enroll(w http.ResponseWriter, r *http.Request) {
	var req api.EnrollRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeJSONTest(w, 400, api.Error{Error: err.Error()})
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.enrolls = append(f.enrolls, req)
	if req.Token != f.token || f.token == "" {
		writeJSONTest(w, http.StatusUnauthorized, api.Error{Error: "the enrollment token is expired or used up"})
		return
	}
	if f.pub.Equal(ed25519.PublicKey(req.PublicKey)) {
		writeJSONTest(w, http.StatusConflict, api.Error{Error: "this public key is already enrolled; the agent must generate a new key to enroll again"})
		return
	}
	f.pub = ed25519.PublicKey(req.PublicKey)
	f.device++
	writeJSONTest(w, 200, api.EnrollResponse{DeviceID: f.device, Ring: "Broad"})
}

// signed checks the signature before the handler runs.
func (f *FakeControlPlane) signed(h func(http.ResponseWriter, *http.Request, []byte)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(r.Body, api.MaxDeviceBody))
		f.mu.Lock()
		pub, dev, revoked := f.pub, f.device, f.revoked
		f.mu.Unlock()
		id, err := api.SignedDevice(r)
		if err == nil && id != dev {
			err = fmt.Errorf("unknown device %d", id)
		}
		if err == nil {
			err = api.Verify(r, pub, body, time.Now())
		}
		if err != nil {
			f.mu.Lock()
			f.badSigs = append(f.badSigs, r.URL.Path+": "+err.Error())
			f.mu.Unlock()
			writeJSONTest(w, http.StatusUnauthorized, api.Error{Error: err.Error()})
			return
		}
		if revoked {
			writeJSONTest(w, http.StatusForbidden, api.Error{Error: fmt.Sprintf("device %d is revoked; re-enroll it with a new token", dev)})
			return
		}
		h(w, r, body)
	}
}

func (f *FakeControlPlane) checkIn(w http.ResponseWriter, r *http.Request, body []byte) {
	var ci api.CheckIn
	if err := json.Unmarshal(body, &ci); err != nil {
		writeJSONTest(w, 400, api.Error{Error: err.Error()})
		return
	}
	f.mu.Lock()
	f.checkIns = append(f.checkIns, recordedCheckIn{At: time.Now(), Body: ci})
	var fl *failure
	if len(f.fail) > 0 {
		fl = &f.fail[0]
		f.fail = f.fail[1:]
	}
	ans := f.answer
	ans.DeviceID, ans.Generation = f.device, f.gen
	ans.Assignments = append([]api.Assignment(nil), f.answer.Assignments...)
	f.mu.Unlock()
	select {
	case f.checkInC <- struct{}{}:
	default:
	}
	if fl != nil {
		if fl.retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(fl.retryAfter))
		}
		writeJSONTest(w, fl.status, api.Error{Error: fl.msg})
		return
	}
	writeJSONTest(w, 200, ans)
}

func (f *FakeControlPlane) postReports(w http.ResponseWriter, r *http.Request, body []byte) {
	var rs api.Reports
	if err := json.Unmarshal(body, &rs); err != nil {
		writeJSONTest(w, 400, api.Error{Error: err.Error()})
		return
	}
	f.mu.Lock()
	fl := f.reportErr
	if fl == nil {
		f.reports = append(f.reports, rs.Reports...)
	}
	f.mu.Unlock()
	if fl != nil {
		if fl.retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(fl.retryAfter))
		}
		writeJSONTest(w, fl.status, api.Error{Error: fl.msg})
		return
	}
	writeJSONTest(w, 200, api.ReportsResponse{Accepted: len(rs.Reports)})
}

func (f *FakeControlPlane) watch(w http.ResponseWriter, r *http.Request, _ []byte) {
	gen, _ := strconv.ParseInt(r.URL.Query().Get("generation"), 10, 64)
	secs, _ := strconv.Atoi(r.URL.Query().Get("timeout"))
	timeout := min(time.Duration(secs)*time.Second, api.MaxWatch)
	for {
		f.mu.Lock()
		cur, c := f.gen, f.genC
		f.mu.Unlock()
		if cur != gen {
			writeJSONTest(w, 200, api.WatchResponse{Generation: cur, Changed: true})
			return
		}
		select {
		case <-c:
		case <-time.After(timeout):
			writeJSONTest(w, 200, api.WatchResponse{Generation: cur})
			return
		case <-r.Context().Done():
			return
		}
	}
}

func (f *FakeControlPlane) bundle(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	data, ok := f.bundles[r.PathValue("sha")]
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	if !ok {
		writeJSONTest(w, 404, api.Error{Error: "no such bundle"})
		return
	}
	w.Write(data)
}

// Assign makes the next answers assign these bundles (and nothing else),
// serves them, and bumps the generation.
func (f *FakeControlPlane) Assign(bs ...*bundle.Bundle) []string {
	f.t.Helper()
	var shas []string
	var as []api.Assignment
	for i, b := range bs {
		data, err := bundle.Marshal(b)
		if err != nil {
			f.t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		sha := hex.EncodeToString(sum[:])
		shas = append(shas, sha)
		f.mu.Lock()
		f.bundles[sha] = data
		f.mu.Unlock()
		as = append(as, api.Assignment{Release: int64(i + 1), ReleaseName: "rel-" + b.ID, BuildID: hex.EncodeToString(b.Modules[0].BuildID),
			SHA256: sha, Size: int64(len(data)), URL: api.PathBundles + sha})
	}
	f.mu.Lock()
	f.answer.Assignments = as
	f.mu.Unlock()
	f.Bump()
	return shas
}

// Bump raises the generation, waking watches.
func (f *FakeControlPlane) Bump() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gen++
	close(f.genC)
	f.genC = make(chan struct{})
}

// CheckIns returns the check-ins received so far.
func (f *FakeControlPlane) CheckIns() []recordedCheckIn {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recordedCheckIn(nil), f.checkIns...)
}

// Reports returns the reports received so far, decoded.
func (f *FakeControlPlane) Reports() ([]Report, []int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var rs []Report
	var seqs []int64
	for _, it := range f.reports {
		var r Report
		json.Unmarshal(it.Report, &r)
		rs = append(rs, r)
		seqs = append(seqs, it.Seq)
	}
	return rs, seqs
}

// BadSignatures lists the requests whose signature did not verify.
func (f *FakeControlPlane) BadSignatures() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.badSigs...)
}

// WaitCheckIn waits for a check-in that satisfies ok.
func (f *FakeControlPlane) WaitCheckIn(t testing.TB, what string, timeout time.Duration, ok func(api.CheckIn) bool) api.CheckIn {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, c := range f.CheckIns() {
			if ok(c.Body) {
				return c.Body
			}
		}
		if time.Now().After(deadline) {
			cs := f.CheckIns()
			last := "none"
			if len(cs) > 0 {
				b, _ := json.Marshal(cs[len(cs)-1].Body)
				last = string(b)
			}
			t.Fatalf("no check-in with %s within %s; %d check-ins, the last: %s", what, timeout, len(cs), last)
		}
		select {
		case <-f.checkInC:
		case <-time.After(100 * time.Millisecond):
		}
	}
}
