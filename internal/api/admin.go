package api

import (
	"encoding/json"
	"time"
)

// AdminTokenFile is the file, in the server's state directory, that holds
// the first admin token of a new server; the CLI reads it by default.
const AdminTokenFile = "admin-token"

// Admin API paths, relative to PathAdmin; {id}, {sha} and {name} are path
// parameters.
const (
	AdminBundles        = "bundles"                // POST raw .hfp body → BundleUpload
	AdminReleases       = "releases"               // GET → ReleaseList; POST ReleaseRequest → Release
	AdminRelease        = "releases/{id}"          // GET → Release
	AdminPublish        = "releases/{id}/publish"  // POST PublishRequest → Release
	AdminExpedite       = "releases/{id}/expedite" // POST → Release
	AdminPause          = "releases/{id}/pause"    // POST PauseRequest → Release
	AdminResume         = "releases/{id}/resume"   // POST ResumeRequest → Release
	AdminRollback       = "releases/{id}/rollback" // POST ReasonRequest → Release
	AdminStatus         = "releases/{id}/status"   // GET → ReleaseStatus
	AdminForecast       = "releases/{id}/forecast" // GET → Forecast
	AdminRings          = "rings"                  // GET/PUT the rings config ({"rings": [...]}, days)
	AdminRingPause      = "rings/{name}/pause"     // POST ReasonRequest
	AdminRingResume     = "rings/{name}/resume"    // POST
	AdminThresholds     = "settings/thresholds"    // GET/PUT Thresholds
	AdminOverrides      = "settings/overrides"     // GET/PUT Overrides
	AdminDevices        = "devices"                // GET ?after=&limit=&all= → DeviceList
	AdminDevice         = "devices/{id}"           // GET → DeviceDetail
	AdminDeviceRetire   = "devices/{id}/retire"    // POST ReasonRequest (optional body) → Device
	AdminDeviceRevoke   = "devices/{id}/revoke"    // POST ReasonRequest → Device
	AdminTokens         = "tokens"                 // POST TokenRequest → TokenResponse (enrollment)
	AdminAdminTokens    = "admin-tokens"           // POST AdminTokenRequest → AdminTokenResponse
	AdminAdminTokenByID = "admin-tokens/{id}"      // DELETE: revoke
	AdminAudit          = "audit"                  // GET ?after=&limit= → AuditList
)

// BundleUpload describes a stored bundle.
type BundleUpload struct {
	SHA256   string   `json:"sha256"`
	ID       string   `json:"id"`
	Level    uint32   `json:"level"`
	BuildIDs []string `json:"build_ids"`
	Size     int64    `json:"size"`
	Created  bool     `json:"created"` // false: the same bytes were stored before
}

// ReleaseRequest creates a draft release from uploaded bundles.
type ReleaseRequest struct {
	Name         string   `json:"name"`
	Kind         string   `json:"kind"`     // hotpatch or baseline
	Severity     string   `json:"severity"` // low, moderate, important, critical
	CVEs         []string `json:"cves,omitempty"`
	Notes        string   `json:"notes,omitempty"`
	Bundles      []string `json:"bundles"` // SHA-256 of uploaded bundles
	AutoRollback bool     `json:"auto_rollback,omitempty"`
}

// Release is a release as admins see it.
type Release struct {
	ID           int64           `json:"id"`
	Name         string          `json:"name"`
	Kind         string          `json:"kind"`
	Severity     string          `json:"severity"`
	CVEs         []string        `json:"cves"`
	Notes        string          `json:"notes,omitempty"`
	State        string          `json:"state"` // draft, published, paused, rolled-back
	Bundles      []ReleaseBundle `json:"bundles"`
	CreatedBy    string          `json:"created_by"`
	CreatedAt    time.Time       `json:"created_at"`
	PublishedAt  *time.Time      `json:"published_at,omitempty"`
	ExpeditedAt  *time.Time      `json:"expedited_at,omitempty"`
	AutoRollback bool            `json:"auto_rollback"`
}

// ReleaseBundle is the bundle a release gives one build-id.
type ReleaseBundle struct {
	BuildID string `json:"build_id"`
	SHA256  string `json:"sha256"`
}

// ReleaseList is every release, newest first.
type ReleaseList struct {
	Releases []Release `json:"releases"`
}

// PublishRequest publishes a draft; Expedite skips the rings' deferrals.
type PublishRequest struct {
	Expedite bool `json:"expedite,omitempty"`
}

// PauseRequest pauses a release everywhere, or in one ring.
type PauseRequest struct {
	Reason string `json:"reason"`
	Ring   string `json:"ring,omitempty"`
}

// ResumeRequest ends a release's pauses: all of them, or one ring's.
type ResumeRequest struct {
	Ring string `json:"ring,omitempty"`
}

// ReasonRequest carries why an admin acts (rollback, revoke, ring pause).
type ReasonRequest struct {
	Reason string `json:"reason"`
}

// ReleaseStatus is where a release stands, ring by ring, in ring order.
type ReleaseStatus struct {
	Release Release      `json:"release"`
	At      time.Time    `json:"at"`
	Rings   []RingStatus `json:"rings"`
	Pauses  []Pause      `json:"pauses,omitempty"` // in effect now
	// Actions are the automatic actions taken on the release (halts,
	// rollbacks), oldest first.
	Actions []AuditEntry `json:"actions,omitempty"`
}

// RingStatus is one ring's schedule and counts for a release. Counts maps
// a device state (assigned, applied, failed, not-applicable, needs-restart,
// offline) to a number of devices; offline devices are not counted as
// assigned.
type RingStatus struct {
	Ring     string           `json:"ring"`
	Eligible *time.Time       `json:"eligible,omitempty"`
	Deadline *time.Time       `json:"deadline,omitempty"`
	GraceEnd *time.Time       `json:"grace_end,omitempty"`
	Held     bool             `json:"held,omitempty"`   // a pause keeps the ring from starting
	Paused   bool             `json:"paused,omitempty"` // paused now
	Counts   map[string]int64 `json:"counts"`
	Total    int64            `json:"total"`
}

// Pause is a pause in effect.
type Pause struct {
	ID        int64     `json:"id"`
	Release   int64     `json:"release,omitempty"` // 0: every release in Ring
	Ring      string    `json:"ring,omitempty"`    // "": every ring
	Actor     string    `json:"actor"`
	Reason    string    `json:"reason"`
	CreatedAt time.Time `json:"created_at"`
}

// Forecast is who is expected to get a release when, and the share of the
// applicable devices expected compliant over time since publication (for a
// draft: as if published now).
type Forecast struct {
	Release       int64            `json:"release"`
	Published     time.Time        `json:"published"`
	At            time.Time        `json:"at"`
	Devices       []DeviceForecast `json:"devices"`
	Curve         []CurvePoint     `json:"curve"`
	NotApplicable int              `json:"not_applicable"`
}

// DeviceForecast is when one applicable device is expected to get the release.
type DeviceForecast struct {
	DeviceID int64      `json:"device_id"`
	Hostname string     `json:"hostname"`
	Ring     string     `json:"ring"`
	Eligible *time.Time `json:"eligible,omitempty"`
	Expected *time.Time `json:"expected,omitempty"`
	Away     bool       `json:"away,omitempty"`    // silent for long; Expected is its expected return
	Unknown  bool       `json:"unknown,omitempty"` // never seen, or its ring is held
}

// CurvePoint: Compliant (0..1) of the applicable devices by OffsetS
// seconds after publication.
type CurvePoint struct {
	OffsetS   float64 `json:"offset_s"`
	Compliant float64 `json:"compliant"`
}

// Thresholds decide when a release halts itself.
type Thresholds struct {
	MinFailures       int     `json:"min_failures"`
	MaxFailurePercent float64 `json:"max_failure_percent"`
	Rollback          bool    `json:"rollback"`
}

// Overrides are the admin's exceptions to hash placement: device id →
// ring pins, and label rules tried in order.
type Overrides struct {
	Pins   map[string]string `json:"pins,omitempty"`
	Labels []LabelRule       `json:"labels,omitempty"`
}

// LabelRule places devices carrying Label ("key" or "key=value") in Ring.
type LabelRule struct {
	Label string `json:"label"`
	Ring  string `json:"ring"`
}

// Device is a device as admins list it.
type Device struct {
	ID       int64  `json:"id"`
	Hostname string `json:"hostname"`
	Ring     string `json:"ring"`
	// PlacedBy says why it is in Ring: pin, label or hash.
	PlacedBy     string            `json:"placed_by"`
	PlacedLabel  string            `json:"placed_label,omitempty"`
	State        string            `json:"state"` // active, retired, revoked
	Ready        bool              `json:"ready"`
	Readiness    []Problem         `json:"readiness,omitempty"`
	LastSeen     *time.Time        `json:"last_seen,omitempty"`
	EnrolledAt   time.Time         `json:"enrolled_at"`
	Labels       map[string]string `json:"labels,omitempty"`
	AgentVersion string            `json:"agent_version,omitempty"`
}

// DeviceList is a page of devices by id; Next is the after= of the next
// page, 0 at the end.
type DeviceList struct {
	Devices []Device `json:"devices"`
	Next    int64    `json:"next,omitempty"`
}

// DeviceDetail is one device with its inventory and its release states.
type DeviceDetail struct {
	Device
	Modules  []Module        `json:"modules"`
	Releases []DeviceRelease `json:"releases"`
}

// DeviceRelease is a device's state for one release.
type DeviceRelease struct {
	Release   int64     `json:"release"`
	Ring      string    `json:"ring"`
	State     string    `json:"state"`
	Reason    string    `json:"reason,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// TokenRequest creates an enrollment token. TTL is a Go duration ("24h").
type TokenRequest struct {
	TTL     string            `json:"ttl"`
	MaxUses int               `json:"max_uses"`
	Ring    string            `json:"ring,omitempty"`
	Labels  map[string]string `json:"labels,omitempty"`
}

// TokenResponse holds the enrollment token's secret, shown only once.
type TokenResponse struct {
	Token     string    `json:"token"`
	ID        int64     `json:"id"`
	ExpiresAt time.Time `json:"expires_at"`
}

// AdminTokenRequest creates an admin token; TTL "" or "0" never expires.
type AdminTokenRequest struct {
	Name string `json:"name"`
	Role string `json:"role"` // viewer, operator, admin
	TTL  string `json:"ttl,omitempty"`
}

// AdminTokenResponse holds the admin token's secret, shown only once.
type AdminTokenResponse struct {
	Token     string     `json:"token"`
	ID        int64      `json:"id"`
	Name      string     `json:"name"`
	Role      string     `json:"role"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
}

// AuditEntry is one line of the audit log.
type AuditEntry struct {
	ID         int64           `json:"id"`
	At         time.Time       `json:"at"`
	Actor      string          `json:"actor"`
	Action     string          `json:"action"`
	Target     string          `json:"target"`
	Details    json.RawMessage `json:"details,omitempty"`
	RemoteAddr string          `json:"remote_addr,omitempty"`
}

// AuditList is a page of the audit log, oldest first; Next is the after=
// of the next page, 0 at the end.
type AuditList struct {
	Entries []AuditEntry `json:"entries"`
	Next    int64        `json:"next,omitempty"`
}
