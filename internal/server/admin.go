package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"hotfleet/internal/api"
	"hotfleet/internal/atomicfile"
	"hotfleet/internal/store"
)

// adminRoute is one admin endpoint with the least role that may call it.
type adminRoute struct {
	method, path string // path relative to api.PathAdmin
	role         string
	verb, gerund string // for a 403: "cannot publish; publishing needs …"
	h            func(http.ResponseWriter, *http.Request, store.AdminToken) error
}

// adminRouteTable is the admin API. api/openapi.yaml documents each entry;
// a test holds the two together.
func (s *Server) adminRouteTable() []adminRoute {
	const v, o, a = store.RoleViewer, store.RoleOperator, store.RoleAdmin
	return []adminRoute{
		{"POST", api.AdminBundles, a, "upload bundles", "uploading", s.adminUploadBundle},
		{"GET", api.AdminReleases, v, "list releases", "listing releases", s.adminListReleases},
		{"POST", api.AdminReleases, a, "create releases", "creating releases", s.adminCreateRelease},
		{"GET", api.AdminRelease, v, "read releases", "reading releases", s.adminGetRelease},
		{"POST", api.AdminPublish, a, "publish", "publishing", s.adminPublish},
		{"POST", api.AdminExpedite, o, "expedite", "expediting", s.adminExpedite},
		{"POST", api.AdminPause, o, "pause releases", "pausing", s.adminPause},
		{"POST", api.AdminResume, o, "resume releases", "resuming", s.adminResume},
		{"POST", api.AdminRollback, o, "roll back", "rolling back", s.adminRollback},
		{"GET", api.AdminStatus, v, "read release status", "reading status", s.adminStatus},
		{"GET", api.AdminForecast, v, "read forecasts", "reading forecasts", s.adminForecast},
		{"GET", api.AdminRings, v, "read rings", "reading rings", s.adminGetRings},
		{"PUT", api.AdminRings, a, "change rings", "changing rings", s.adminPutRings},
		{"POST", api.AdminRingPause, o, "pause rings", "pausing a ring", s.adminRingPause},
		{"POST", api.AdminRingResume, o, "resume rings", "resuming a ring", s.adminRingResume},
		{"GET", api.AdminThresholds, v, "read settings", "reading settings", s.adminGetThresholds},
		{"PUT", api.AdminThresholds, a, "change settings", "changing settings", s.adminPutThresholds},
		{"GET", api.AdminOverrides, v, "read settings", "reading settings", s.adminGetOverrides},
		{"PUT", api.AdminOverrides, a, "change settings", "changing settings", s.adminPutOverrides},
		{"GET", api.AdminDevices, v, "list devices", "listing devices", s.adminListDevices},
		{"GET", api.AdminDevice, v, "read devices", "reading devices", s.adminGetDevice},
		{"POST", api.AdminDeviceRetire, a, "retire devices", "retiring devices", s.adminRetireDevice},
		{"POST", api.AdminDeviceRevoke, a, "revoke devices", "revoking devices", s.adminRevokeDevice},
		{"POST", api.AdminTokens, a, "create enrollment tokens", "creating enrollment tokens", s.adminCreateToken},
		{"POST", api.AdminAdminTokens, a, "create admin tokens", "creating admin tokens", s.adminCreateAdminToken},
		{"DELETE", api.AdminAdminTokenByID, a, "revoke admin tokens", "revoking admin tokens", s.adminRevokeAdminToken},
		{"GET", api.AdminAudit, v, "read the audit log", "reading the audit log", s.adminAudit},
	}
}

// adminRoutes registers the admin API.
func (s *Server) adminRoutes() {
	for _, rt := range s.adminRouteTable() {
		s.mux.HandleFunc(rt.method+" "+api.PathAdmin+rt.path, s.handle(s.adminAuth(rt)))
	}
}

// adminAuth checks the bearer token and its role before rt runs, and tags
// the request's audit entries with the client's address.
func (s *Server) adminAuth(rt adminRoute) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		h := r.Header.Get("Authorization")
		secret, ok := strings.CutPrefix(h, "Bearer ")
		if !ok || strings.TrimSpace(secret) == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="hotfleet admin"`)
			return statusError(http.StatusUnauthorized, "no admin token: send 'Authorization: Bearer TOKEN' (hotfleet CLI: --token, --token-file or HOTFLEET_TOKEN)")
		}
		tok, err := s.st.AuthenticateAdmin(r.Context(), strings.TrimSpace(secret))
		switch {
		case errors.Is(err, store.ErrAdminTokenUnknown):
			w.Header().Set("WWW-Authenticate", `Bearer realm="hotfleet admin"`)
			return statusError(http.StatusUnauthorized, "the admin token is unknown; check it, or ask an admin for one")
		case errors.Is(err, store.ErrAdminTokenExpired), errors.Is(err, store.ErrAdminTokenRevoked):
			w.Header().Set("WWW-Authenticate", `Bearer realm="hotfleet admin"`)
			return statusError(http.StatusUnauthorized, "%v", err)
		case err != nil:
			return err
		}
		if store.RoleRank(tok.Role) < store.RoleRank(rt.role) {
			return statusError(http.StatusForbidden, "%s token '%s' cannot %s; %s needs %s token", tok.Role, tok.Name, rt.verb, rt.gerund, article(rt.role))
		}
		ctx := store.WithRemoteAddr(r.Context(), r.RemoteAddr)
		return rt.h(w, r.WithContext(ctx), tok)
	}
}

func article(role string) string {
	if role == store.RoleAdmin || role == store.RoleOperator {
		return "an " + role
	}
	return "a " + role
}

// storeError maps the store's sentinel errors to statuses; others pass.
func storeError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound):
		return &httpError{status: http.StatusNotFound, msg: err.Error(), err: err}
	case errors.Is(err, store.ErrConflict):
		return &httpError{status: http.StatusConflict, msg: err.Error(), err: err}
	}
	return err
}

// pathID reads the integer path parameter name.
func pathID(r *http.Request, name string) (int64, error) {
	v := r.PathValue(name)
	id, err := strconv.ParseInt(v, 10, 64)
	if err != nil || id <= 0 {
		return 0, badRequest(name, "%s %q in the path is not a positive integer", name, v)
	}
	return id, nil
}

// decodeAdmin reads and strictly decodes an admin request body. An empty
// body is allowed when optional, leaving v as it is.
func decodeAdmin(r *http.Request, v any, optional bool) error {
	b, err := readBody(r, api.MaxAdminBody)
	if err != nil {
		return err
	}
	if optional && len(strings.TrimSpace(string(b))) == 0 {
		return nil
	}
	return decodeJSON(b, v)
}

// Bootstrap makes sure an admin can act on a new server: when no admin
// token exists, it creates one and writes it to a file in dir (mode 0600),
// returning the file's path; otherwise it returns "".
func (s *Server) Bootstrap(ctx context.Context, dir string) (string, error) {
	has, err := s.st.HasAdminToken(ctx)
	if err != nil || has {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("bootstrap admin token: create %s: %w", dir, err)
	}
	secret, tok, err := s.st.CreateAdminToken(ctx, "bootstrap", store.RoleAdmin, 0, "server")
	if err != nil {
		return "", fmt.Errorf("bootstrap admin token: %w", err)
	}
	path := filepath.Join(dir, api.AdminTokenFile)
	if err := atomicfile.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		// Nobody will ever see this secret: revoke it, so that the next
		// start bootstraps again.
		if rerr := s.st.RevokeAdminToken(ctx, tok.ID, "server"); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return "", fmt.Errorf("bootstrap admin token: write %s; fix the directory and restart: %w", path, err)
	}
	return path, nil
}
