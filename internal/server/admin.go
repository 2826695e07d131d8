package server

import "context"

// adminRoutes registers the admin API.
func (s *Server) adminRoutes() {}

// Bootstrap makes sure an admin can act on a new server: when no admin
// token exists, it creates one and writes it to a file in dir (mode 0600),
// returning the file's path; otherwise it returns "".
func (s *Server) Bootstrap(ctx context.Context, dir string) (string, error) { return "", nil }
