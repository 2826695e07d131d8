// Package api is the wire contract between hotfleet's agents, its CLI and
// its server: the JSON bodies, the paths and the device request signature.
// Both sides import it, so they cannot drift apart. It holds no logic beyond
// signing and checking signatures.
//
// Trust: a device proves who it is by signing every request with the
// Ed25519 key it generated at enrollment; the server holds only the public
// key. Admins present bearer tokens, stored hashed by the server.
package api

import (
	"encoding/json"
	"time"
)

// Paths. {sha256} is a bundle's lowercase hex SHA-256.
const (
	PathEnroll  = "/v1/device/enroll"  // POST EnrollRequest → EnrollResponse (token-authenticated)
	PathCheckIn = "/v1/device/checkin" // POST CheckIn → CheckInResponse (signed)
	PathReports = "/v1/device/reports" // POST Reports → ReportsResponse (signed)
	PathWatch   = "/v1/device/watch"   // GET ?generation=N&timeout=S → WatchResponse (signed, long-poll)
	PathBundles = "/v1/bundles/"       // GET /v1/bundles/{sha256}: immutable, cacheable, public
	PathAdmin   = "/v1/admin/"         // the admin API; see api/openapi.yaml
	PathHealth  = "/healthz"           // GET: 200 when the database answers
)

// Limits on what a server reads from a request, each with its reason.
const (
	// MaxDeviceBody bounds a check-in or report post; an inventory of a busy
	// machine (thousands of modules) fits in well under this.
	MaxDeviceBody = 8 << 20
	// MaxAdminBody bounds an admin request other than a bundle upload.
	MaxAdminBody = 1 << 20
	// MaxBundle bounds an uploaded bundle, as the bundle decoder does.
	MaxBundle = 64 << 20
	// MaxWatch is the longest a watch is held open; proxies commonly cut
	// idle connections at 60-120 s.
	MaxWatch = 55 * time.Second
)

// Error is every 4xx and 5xx body: what is wrong, with which field, and
// what to do. Field is a JSON path such as "rings[2].percent", or "".
type Error struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

// EnrollRequest enrolls a device with a bootstrap token. PublicKey is the
// device's own Ed25519 public key (32 bytes, base64 in JSON); the private
// key never leaves the device.
type EnrollRequest struct {
	Token     string            `json:"token"`
	PublicKey []byte            `json:"public_key"`
	Hostname  string            `json:"hostname"`
	Labels    map[string]string `json:"labels,omitempty"`
}

// EnrollResponse names the device. DeviceID is never reused.
type EnrollResponse struct {
	DeviceID int64  `json:"device_id"`
	Ring     string `json:"ring"`
}

// CheckIn is a device's compact state. Inventory is sent only when the
// server asked for it (NeedInventory) or its hash changed.
type CheckIn struct {
	AgentVersion  string        `json:"agent_version"`
	Ready         bool          `json:"ready"`
	Readiness     []Problem     `json:"readiness,omitempty"` // why not ready
	InventoryHash string        `json:"inventory_hash"`
	Inventory     *Inventory    `json:"inventory,omitempty"`
	Bundles       []BundleState `json:"bundles,omitempty"`  // one per assigned bundle
	Problems      []Problem     `json:"problems,omitempty"` // assigned bundles the agent refuses
	Generation    int64         `json:"generation"`         // the last one the server sent
}

// Problem is a reason with the action that fixes it.
type Problem struct {
	Check  string `json:"check,omitempty"`
	Reason string `json:"reason"`
	Action string `json:"action,omitempty"`
}

// Inventory is what runs on the device, by module.
type Inventory struct {
	Hostname  string   `json:"hostname"`
	Kernel    string   `json:"kernel,omitempty"`
	OS        string   `json:"os,omitempty"`
	Arch      string   `json:"arch,omitempty"`
	Processes int      `json:"processes"`
	Modules   []Module `json:"modules"`
}

// Module is one module mapped by at least one process.
type Module struct {
	BuildID   string `json:"build_id"`
	Name      string `json:"name"`              // base name of the file, e.g. libexpat.so.1.8.10
	Package   string `json:"package,omitempty"` // owning package with version, when known
	Processes int    `json:"processes"`
}

// BundleState is how one assigned bundle fares on the device.
type BundleState struct {
	SHA256      string `json:"sha256"`
	Applied     int    `json:"applied"`     // processes running it
	Pending     int    `json:"pending"`     // processes that map its modules and do not run it yet
	Failing     int    `json:"failing"`     // processes where the last attempt failed
	Quarantined int    `json:"quarantined"` // processes given up on for now
	Error       string `json:"error,omitempty"`
	Permanent   bool   `json:"permanent,omitempty"` // the error will not go away by retrying (build-id, old bytes)
}

// CheckInResponse is the device's full assignment set: a bundle missing
// from it is withdrawn, and the agent reverts it.
type CheckInResponse struct {
	DeviceID      int64        `json:"device_id"`
	Ring          string       `json:"ring"`
	Generation    int64        `json:"generation"`
	Assignments   []Assignment `json:"assignments"`
	Held          []Notice     `json:"held,omitempty"` // releases paused or rolled back for this device, and why
	NeedInventory bool         `json:"need_inventory,omitempty"`
	// NextCheckIn is when to check in again, jittered by the server.
	NextCheckInS float64 `json:"next_checkin_s"`
}

// Assignment is one bundle the device must enforce.
type Assignment struct {
	Release     int64  `json:"release"`
	ReleaseName string `json:"release_name"`
	BuildID     string `json:"build_id"`
	SHA256      string `json:"sha256"`
	Size        int64  `json:"size"`
	URL         string `json:"url"` // path under the server, e.g. /v1/bundles/{sha256}
}

// Notice is a release the device does not get now, and why.
type Notice struct {
	Release     int64  `json:"release"`
	ReleaseName string `json:"release_name"`
	State       string `json:"state"` // paused, rolled-back
	Ring        string `json:"ring,omitempty"`
	Reason      string `json:"reason"`
}

// Reports delivers queued agent reports; the server deduplicates by
// (device, seq), so delivery is at least once.
type Reports struct {
	Reports []ReportItem `json:"reports"`
}

// ReportItem is one report; Report is the agent's report document.
type ReportItem struct {
	Seq    int64           `json:"seq"`
	Report json.RawMessage `json:"report"`
}

// ReportsResponse counts what was stored.
type ReportsResponse struct {
	Accepted   int `json:"accepted"`
	Duplicates int `json:"duplicates"`
}

// WatchResponse ends a watch: the generation changed (check in now) or
// the watch timed out (Changed false: watch again).
type WatchResponse struct {
	Generation int64 `json:"generation"`
	Changed    bool  `json:"changed"`
}
