package netwatch

import (
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
)

// Store merges what every source publishes, by network name, and serves
// lookups from an immutable Snapshot swapped atomically: a query never waits
// on an update, and an update rebuilds only the network it touches.
type Store struct {
	mu       sync.Mutex
	sources  map[string]map[string]*Network // source → network key → network
	loaded   map[string]bool
	stale    map[string]bool
	expected []string

	// Host-side links. Before the first SyncLinks nothing is hidden; after
	// it, an endpoint whose HostVeth is not present is hidden.
	linksKnown bool
	present    map[string]struct{}
	vethNets   map[string]map[string]int // veth → network keys naming it (refcount)
	// contNets indexes containers to the networks they are on (refcount),
	// so a change rebuilds a client without scanning every network.
	contNets map[string]map[string]int
	// linkGen counts link removals and resyncs (see confirmLinks).
	linkGen uint64

	snap  atomic.Pointer[Snapshot]
	hosts atomic.Pointer[map[netip.Addr]struct{}]

	linkExists func(name string) bool
	onChange   func(s *Snapshot, source string)
	onStale    func(source string, stale bool)
}

// StoreOptions configures a Store. The hooks are fixed at construction.
type StoreOptions struct {
	// Expected names the sources that must complete a first load before
	// Ready reports true.
	Expected []string
	// LinkExists, when set, is asked (outside the writer lock) about a
	// HostVeth the link watcher has not reported yet (the agent creates the
	// veth before it writes the state file, but the two event streams race).
	LinkExists func(name string) bool
	// OnChange runs (under the writer lock) after each published snapshot.
	OnChange func(s *Snapshot, source string)
	// OnStale runs when a source's stale flag changes.
	OnStale func(source string, stale bool)
}

// NewStore returns an empty store without hooks. expected names the sources
// that must complete a first load before Ready reports true.
func NewStore(expected ...string) *Store {
	return NewStoreWith(StoreOptions{Expected: expected})
}

// NewStoreWith returns an empty store configured by o.
func NewStoreWith(o StoreOptions) *Store {
	s := &Store{
		sources:    map[string]map[string]*Network{},
		loaded:     map[string]bool{},
		stale:      map[string]bool{},
		expected:   o.Expected,
		linkExists: o.LinkExists,
		onChange:   o.OnChange,
		onStale:    o.OnStale,
		present:    map[string]struct{}{},
		vethNets:   map[string]map[string]int{},
		contNets:   map[string]map[string]int{},
	}
	s.snap.Store(&Snapshot{
		networks: map[string]*NetView{},
		addrs:    map[uint64]addrShard{},
		gateways: map[netip.Addr]struct{}{},
	})
	empty := map[netip.Addr]struct{}{}
	s.hosts.Store(&empty)
	return s
}

// Snapshot returns the current immutable view.
func (s *Store) Snapshot() *Snapshot { return s.snap.Load() }

// Ready reports whether every expected source completed its first load.
func (s *Store) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.expected {
		if !s.loaded[e] {
			return false
		}
	}
	return true
}

// Stale reports the stale flag of every source that ever set one.
func (s *Store) Stale() map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]bool, len(s.stale))
	for k, v := range s.stale {
		out[k] = v
	}
	return out
}

func key(name string) string { return strings.ToLower(name) }

// Replace implements Sink.
func (s *Store) Replace(source string, networks []*Network) {
	found, gen := s.confirmLinks(networks...)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addConfirmedLocked(found, gen)
	old := s.sources[source]
	next := make(map[string]*Network, len(networks))
	for _, n := range networks {
		if n != nil && n.Name != "" {
			next[key(n.Name)] = n
		}
	}
	s.sources[source] = next
	s.loaded[source] = true
	changed := map[string]bool{}
	for k := range old {
		changed[k] = true
	}
	for k := range next {
		changed[k] = true
	}
	s.applyLocked(source, changed)
}

// Update implements Sink.
func (s *Store) Update(source string, n *Network) {
	if n == nil || n.Name == "" {
		return
	}
	found, gen := s.confirmLinks(n)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addConfirmedLocked(found, gen)
	m := s.sources[source]
	if m == nil {
		m = map[string]*Network{}
		s.sources[source] = m
	}
	k := key(n.Name)
	m[k] = n
	s.applyLocked(source, map[string]bool{k: true})
}

// Remove implements Sink.
func (s *Store) Remove(source, network string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key(network)
	if _, ok := s.sources[source][k]; !ok {
		return
	}
	delete(s.sources[source], k)
	s.applyLocked(source, map[string]bool{k: true})
}

// SetStale implements Sink.
func (s *Store) SetStale(source string, stale bool) {
	s.mu.Lock()
	changed := s.stale[source] != stale
	s.stale[source] = stale
	f := s.onStale
	s.mu.Unlock()
	if changed && f != nil {
		f(source, stale)
	}
}

// SetHostAddrs sets the host's own addresses: queries from them (and from
// loopback and the networks' gateways) come from "the host".
func (s *Store) SetHostAddrs(addrs map[netip.Addr]struct{}) { s.hosts.Store(&addrs) }

// IsHost reports whether a is the host itself.
func (s *Store) IsHost(a netip.Addr) bool { return s.IsHostIn(s.snap.Load(), a) }

// IsHostIn is IsHost with the snapshot the caller already holds.
func (s *Store) IsHostIn(snap *Snapshot, a netip.Addr) bool {
	if a.IsLoopback() {
		return true
	}
	if _, ok := (*s.hosts.Load())[a]; ok {
		return true
	}
	_, ok := snap.gateways[a]
	return ok
}
