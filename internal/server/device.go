package server

// deviceRoutes registers the device API (enroll, check-in, reports, watch,
// bundles).
func (s *Server) deviceRoutes() {}
