package server

// adminRoutes registers the admin API.
func (s *Server) adminRoutes() {}
