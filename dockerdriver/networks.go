package dockerdriver

// Networks returns the Docker networks the plugin serves: Docker network
// ID → netalias network (for collecting what a lost dockerd leaked, which
// asks the Docker API outside any driver call).
func (s *Server) Networks() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.nets))
	for id, m := range s.nets {
		out[id] = m.Network
	}
	return out
}
