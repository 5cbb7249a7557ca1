package netwatch

// SyncLinks sets the complete set of host links (after a (re)subscription).
func (s *Store) SyncLinks(present map[string]struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := map[string]bool{}
	for v, nets := range s.vethNets {
		_, was := s.present[v]
		_, now := present[v]
		if was != now || !s.linksKnown {
			for k := range nets {
				changed[k] = true
			}
		}
	}
	s.present = present
	s.linksKnown = true
	s.linkGen++
	s.applyLocked("netlink", changed)
}

// LinkAdded records a new host link.
func (s *Store) LinkAdded(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.present[name]; ok {
		return
	}
	s.present[name] = struct{}{}
	if nets := s.vethNets[name]; len(nets) > 0 && s.linksKnown {
		s.applyLocked("netlink", keys(nets))
	}
}

// LinkRemoved records that a host link is gone: endpoints on it go at once.
func (s *Store) LinkRemoved(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Counted even for a link not known here: it may be one that
	// confirmLinks is finding right now.
	s.linkGen++
	if _, ok := s.present[name]; !ok {
		return
	}
	delete(s.present, name)
	if nets := s.vethNets[name]; len(nets) > 0 && s.linksKnown {
		s.applyLocked("netlink", keys(nets))
	}
}

func keys(m map[string]int) map[string]bool {
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

// hiddenLocked reports whether the endpoint's host link is known gone.
func (s *Store) hiddenLocked(veth string) bool {
	if veth == "" || !s.linksKnown {
		return false
	}
	if _, ok := s.present[veth]; ok {
		return false
	}
	return true
}

// confirmLinks asks linkExists, outside the writer lock, about the host
// veths of nets that the link watcher has not reported yet: the agent
// creates a veth before it writes the state file, but the netlink event and
// the file event race, and an endpoint must not be hidden for losing that
// race. It returns the veths found, and the link generation they were
// checked against (see addConfirmedLocked).
func (s *Store) confirmLinks(nets ...*Network) (found []string, gen uint64) {
	if s.linkExists == nil {
		return nil, 0
	}
	var unknown []string
	s.mu.Lock()
	if s.linksKnown {
		for _, n := range nets {
			if n == nil {
				continue
			}
			for i := range n.Endpoints {
				v := n.Endpoints[i].HostVeth
				if _, ok := s.present[v]; v != "" && !ok {
					unknown = append(unknown, v)
				}
			}
		}
	}
	gen = s.linkGen
	s.mu.Unlock()
	for _, v := range unknown {
		if s.linkExists(v) {
			found = append(found, v)
		}
	}
	return found, gen
}

// addConfirmedLocked marks the veths confirmLinks found as present, unless
// a link removal or resync happened since (then a found veth may be gone
// again; the watcher's own event un-hides an endpoint whose veth exists).
func (s *Store) addConfirmedLocked(found []string, gen uint64) {
	if gen != s.linkGen {
		return
	}
	for _, v := range found {
		s.present[v] = struct{}{}
	}
}
