package netwatch

import (
	"net"
	"net/netip"
	"sort"
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
	// LinkExists, when set, is asked about a HostVeth the link watcher has
	// not reported yet (the agent creates the veth before it writes the
	// state file, but the two event streams race).
	LinkExists func(name string) bool

	snap  atomic.Pointer[Snapshot]
	hosts atomic.Pointer[map[netip.Addr]struct{}]

	// OnChange runs (under the writer lock) after each published snapshot.
	OnChange func(s *Snapshot, source string)
	// OnStale runs when a source's stale flag changes.
	OnStale func(source string, stale bool)
}

// NewStore returns an empty store. expected names the sources that must
// complete a first load before Ready reports true.
func NewStore(expected ...string) *Store {
	s := &Store{
		sources:  map[string]map[string]*Network{},
		loaded:   map[string]bool{},
		stale:    map[string]bool{},
		expected: expected,
		present:  map[string]struct{}{},
		vethNets: map[string]map[string]int{},
		contNets: map[string]map[string]int{},
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
	s.mu.Lock()
	defer s.mu.Unlock()
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
	s.mu.Lock()
	defer s.mu.Unlock()
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
	f := s.OnStale
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

// applyLocked rebuilds the networks named in changed and publishes a new
// snapshot. Top-level maps are copied (they hold one entry per network or
// per /24); untouched networks and address shards are shared.
func (s *Store) applyLocked(source string, changed map[string]bool) {
	if len(changed) == 0 {
		return
	}
	old := s.snap.Load()
	nw := &Snapshot{
		Version:   old.Version + 1,
		networks:  make(map[string]*NetView, len(old.networks)+len(changed)),
		addrs:     make(map[uint64]addrShard, len(old.addrs)),
		endpoints: old.endpoints,
		records:   old.records,
		naddrs:    old.naddrs,
	}
	for k, v := range old.networks {
		nw.networks[k] = v
	}
	for k, v := range old.addrs {
		nw.addrs[k] = v
	}
	w := &addrWriter{snap: nw, copied: map[uint64]bool{}}
	affected := map[string]bool{} // container keys
	for k := range changed {
		if ov := nw.networks[k]; ov != nil {
			for _, e := range ov.eps {
				w.delIf(e.v4, k)
				w.delIf(e.v6, k)
				affected[e.container] = true
				unref(s.contNets, e.container, k)
			}
			// Every veth the view referenced, hidden endpoints' included.
			for _, veth := range ov.veths {
				unref(s.vethNets, veth, k)
			}
			nw.endpoints -= len(ov.eps)
			nw.records -= ov.records
			delete(nw.networks, k)
		}
		if v := s.mergeLocked(k); v != nil {
			nw.networks[k] = v
			for _, e := range v.eps {
				affected[e.container] = true
				ref(s.contNets, e.container, k)
			}
			nw.endpoints += len(v.eps)
			nw.records += v.records
		}
	}
	for c := range affected {
		s.rebuildClient(w, c)
	}
	nw.gateways = make(map[netip.Addr]struct{}, len(nw.networks)*2)
	for _, v := range nw.networks {
		for _, g := range []netip.Addr{v.Gateway, v.Gateway6} {
			if g.IsValid() {
				nw.gateways[g] = struct{}{}
			}
		}
		for _, p := range []netip.Prefix{v.Subnet, v.Subnet6} {
			if p.IsValid() {
				nw.subnets = append(nw.subnets, subnetEntry{p, v})
			}
		}
	}
	s.snap.Store(nw)
	if s.OnChange != nil {
		s.OnChange(nw, source)
	}
}

func ref(m map[string]map[string]int, a, b string) {
	if a == "" {
		return
	}
	x := m[a]
	if x == nil {
		x = map[string]int{}
		m[a] = x
	}
	x[b]++
}

func unref(m map[string]map[string]int, a, b string) {
	x := m[a]
	if x == nil {
		return
	}
	if x[b]--; x[b] <= 0 {
		delete(x, b)
	}
	if len(x) == 0 {
		delete(m, a)
	}
}

// addrShard holds the addresses of one /24 (IPv4) or /64 (IPv6): a change
// to one network copies only the shards it touches.
type addrShard map[netip.Addr]*addrEntry

func shardOf(a netip.Addr) uint64 {
	if a.Is4() {
		b := a.As4()
		return uint64(b[0])<<16 | uint64(b[1])<<8 | uint64(b[2])
	}
	b := a.As16()
	return 1<<63 | (uint64(b[0])<<56|uint64(b[1])<<48|uint64(b[2])<<40|uint64(b[3])<<32|
		uint64(b[4])<<24|uint64(b[5])<<16|uint64(b[6])<<8|uint64(b[7]))>>1
}

// addrWriter copies a shard on its first write in this update.
type addrWriter struct {
	snap   *Snapshot
	copied map[uint64]bool
}

func (w *addrWriter) shard(a netip.Addr) addrShard {
	k := shardOf(a)
	if w.copied[k] {
		return w.snap.addrs[k]
	}
	old := w.snap.addrs[k]
	sh := make(addrShard, len(old)+1)
	for x, e := range old {
		sh[x] = e
	}
	w.snap.addrs[k] = sh
	w.copied[k] = true
	return sh
}

func (w *addrWriter) delIf(a netip.Addr, net string) {
	if !a.IsValid() {
		return
	}
	if e := w.snap.addrs[shardOf(a)][a]; e == nil || e.net != net {
		return
	}
	sh := w.shard(a)
	delete(sh, a)
	w.snap.naddrs--
	if len(sh) == 0 {
		delete(w.snap.addrs, shardOf(a))
		delete(w.copied, shardOf(a))
	}
}

func (w *addrWriter) set(a netip.Addr, e *addrEntry) {
	if !a.IsValid() {
		return
	}
	sh := w.shard(a)
	if _, ok := sh[a]; !ok {
		w.snap.naddrs++
	}
	sh[a] = e
}

// hiddenLocked reports whether the endpoint's host link is known gone.
func (s *Store) hiddenLocked(veth string) bool {
	if veth == "" || !s.linksKnown {
		return false
	}
	if _, ok := s.present[veth]; ok {
		return false
	}
	if s.LinkExists != nil && s.LinkExists(veth) {
		s.present[veth] = struct{}{}
		return false
	}
	return true
}

// mergeLocked builds the view of network k from every source naming it.
func (s *Store) mergeLocked(k string) *NetView {
	var parts []*Network
	var srcs []string
	for src, m := range s.sources {
		if n := m[k]; n != nil {
			srcs = append(srcs, src)
		}
	}
	if len(srcs) == 0 {
		return nil
	}
	sort.Strings(srcs) // deterministic choice of network properties
	for _, src := range srcs {
		parts = append(parts, s.sources[src][k])
	}
	v := &NetView{Name: parts[0].Name, key: k, names: map[string]*RRSet{}, byName: map[string]*RRSet{}, byContainer: map[string][]int{}}
	for _, p := range parts {
		if !v.Subnet.IsValid() && p.Subnet.IsValid() {
			v.Subnet = p.Subnet.Masked()
		}
		if !v.Subnet6.IsValid() && p.Subnet6.IsValid() {
			v.Subnet6 = p.Subnet6.Masked()
		}
		if !v.Gateway.IsValid() {
			v.Gateway = p.Gateway.Unmap()
		}
		if !v.Gateway6.IsValid() {
			v.Gateway6 = p.Gateway6
		}
	}
	v.Apex = k + "."
	v.soaNs = "ns.dns." + v.Apex
	v.soaMbox = "hostmaster." + v.Apex
	seen := map[string]struct{}{} // veths referenced for this view
	for _, p := range parts {
		for i := range p.Endpoints {
			e := &p.Endpoints[i]
			if e.Name == "" {
				continue
			}
			if _, dup := seen[e.HostVeth]; e.HostVeth != "" && !dup {
				seen[e.HostVeth] = struct{}{}
				// Referenced before the hidden check: a hidden endpoint
				// must come back when its veth appears.
				v.veths = append(v.veths, e.HostVeth)
				ref(s.vethNets, e.HostVeth, k)
			}
			if s.hiddenLocked(e.HostVeth) {
				continue
			}
			ei := epInfo{
				name:      key(e.Name),
				container: e.Container,
				hostVeth:  e.HostVeth,
				v4:        e.IPv4.Unmap(),
				v6:        e.IPv6,
				links:     e.Links,
			}
			if ei.container == "" {
				// Without a container identity the endpoint is its own client.
				ei.container = "\x00" + k + "/" + ei.name
			}
			if ei.v4.IsValid() && !ei.v4.Is4() {
				ei.v4 = netip.Addr{}
			}
			if ei.v6.IsValid() && !ei.v6.Is6() {
				ei.v6 = netip.Addr{}
			}
			v.byContainer[ei.container] = append(v.byContainer[ei.container], len(v.eps))
			v.eps = append(v.eps, ei)
			v.add(v.byName, ei.name, ei.v4, ei.v6)
			v.add(v.names, ei.name, ei.v4, ei.v6)
			for _, a := range e.Aliases {
				if a = key(a); a != "" && a != ei.name {
					v.add(v.names, a, ei.v4, ei.v6)
				}
			}
		}
	}
	for _, rs := range v.names {
		v.records += len(rs.V4) + len(rs.V6)
	}
	return v
}

// rebuildClient recomputes container c's client from its networks.
func (s *Store) rebuildClient(w *addrWriter, c string) {
	nets := s.contNets[c]
	if len(nets) == 0 {
		return // its addresses went with its networks
	}
	cl := &Client{Key: c}
	for k := range nets {
		if v := w.snap.networks[k]; v != nil {
			cl.Networks = append(cl.Networks, v)
		}
	}
	sort.Slice(cl.Networks, func(i, j int) bool { return cl.Networks[i].key < cl.Networks[j].key })
	for _, v := range cl.Networks {
		for _, i := range v.byContainer[c] {
			e := &v.eps[i]
			for _, l := range e.links {
				cl.Links = append(cl.Links, Link{Target: key(l.Target), Alias: key(l.Alias)})
			}
			ae := &addrEntry{client: cl, net: v.key, ptr: e.name + "." + v.Apex, view: v}
			w.set(e.v4, ae)
			w.set(e.v6, ae)
		}
	}
}

// Snapshot is an immutable view of every network. Never modify it.
type Snapshot struct {
	Version   uint64
	networks  map[string]*NetView
	addrs     map[uint64]addrShard
	naddrs    int
	gateways  map[netip.Addr]struct{}
	subnets   []subnetEntry
	endpoints int
	records   int
}

type subnetEntry struct {
	p netip.Prefix
	v *NetView
}

type addrEntry struct {
	client *Client
	net    string
	ptr    string // NAME.NETWORK. (relative to the root zone)
	view   *NetView
}

// Counts returns the number of networks, endpoints and address records.
func (s *Snapshot) Counts() (networks, endpoints, records int) {
	return len(s.networks), s.endpoints, s.records + s.naddrs
}

// Network returns the view of a network by lower-case name, or nil.
func (s *Snapshot) Network(lname string) *NetView { return s.networks[lname] }

// Networks returns every network (unordered).
func (s *Snapshot) Networks() []*NetView {
	out := make([]*NetView, 0, len(s.networks))
	for _, v := range s.networks {
		out = append(out, v)
	}
	return out
}

// Client returns the client owning address a, or nil.
func (s *Snapshot) Client(a netip.Addr) *Client {
	if e := s.addrs[shardOf(a)][a]; e != nil {
		return e.client
	}
	return nil
}

// PTR returns NAME.NETWORK. for an endpoint address and its network.
func (s *Snapshot) PTR(a netip.Addr) (string, *NetView) {
	if e := s.addrs[shardOf(a)][a]; e != nil {
		return e.ptr, e.view
	}
	return "", nil
}

// InSubnet returns the first network whose subnet holds a, or nil.
func (s *Snapshot) InSubnet(a netip.Addr) *NetView {
	for _, e := range s.subnets {
		if e.p.Contains(a) {
			return e.v
		}
	}
	return nil
}

// Managed reports whether a lies in a managed network's subnet.
func (s *Snapshot) Managed(a netip.Addr) bool { return s.InSubnet(a) != nil }

// Client is a container as a DNS client: its networks and links.
type Client struct {
	Key      string
	Networks []*NetView // sorted by name
	Links    []Link     // lower-case
}

// Sees reports whether the client is attached to v.
func (c *Client) Sees(v *NetView) bool {
	for _, n := range c.Networks {
		if n == v {
			return true
		}
	}
	return false
}

// NetView is the merged, immutable view of one network.
type NetView struct {
	Name     string
	Apex     string // lower-case "NETWORK."
	Subnet   netip.Prefix
	Subnet6  netip.Prefix
	Gateway  netip.Addr
	Gateway6 netip.Addr
	key      string
	names    map[string]*RRSet // names and aliases
	byName   map[string]*RRSet // endpoint names only (link targets)
	eps      []epInfo
	// veths are the host veths this view referenced in Store.vethNets
	// (visible or hidden endpoints), unreferenced as a whole on rebuild.
	veths []string
	// byContainer indexes eps by container, to rebuild clients quickly.
	byContainer map[string][]int
	records     int
	arena       []byte
	// soaNs and soaMbox are the SOA's names under the root zone, built once
	// instead of per negative answer.
	soaNs, soaMbox string
}

// SOANames returns "ns.dns.NETWORK." and "hostmaster.NETWORK.", the names
// of the network's SOA under the root zone.
func (v *NetView) SOANames() (ns, mbox string) { return v.soaNs, v.soaMbox }

type epInfo struct {
	name      string
	container string
	hostVeth  string
	v4, v6    netip.Addr
	links     []Link
}

// RRSet holds the distinct addresses of one name on one network, ready to
// put in answers (shared, read-only).
type RRSet struct {
	V4 []net.IP
	V6 []net.IP
}

func (v *NetView) add(m map[string]*RRSet, name string, a4, a6 netip.Addr) {
	rs := m[name]
	if rs == nil {
		rs = &RRSet{}
		m[name] = rs
	}
	if a4.IsValid() && !containsIP(rs.V4, a4) {
		b := a4.As4()
		rs.V4 = append(rs.V4, v.ipBytes(b[:]))
	}
	if a6.IsValid() && !containsIP(rs.V6, a6) {
		b := a6.As16()
		rs.V6 = append(rs.V6, v.ipBytes(b[:]))
	}
}

// ipBytes copies an address into the network's arena: a few large
// allocations instead of one per address keep the heap small in objects,
// which shortens GC marking (and the tail of change-to-answer) at 10k
// endpoints.
func (v *NetView) ipBytes(b []byte) net.IP {
	if cap(v.arena)-len(v.arena) < len(b) {
		v.arena = make([]byte, 0, 4096)
	}
	n := len(v.arena)
	v.arena = append(v.arena, b...)
	return net.IP(v.arena[n : n+len(b) : n+len(b)])
}

func containsIP(l []net.IP, a netip.Addr) bool {
	for _, ip := range l {
		if b, ok := netip.AddrFromSlice(ip); ok && b.Unmap() == a.Unmap() {
			return true
		}
	}
	return false
}

// Lookup returns the addresses of a lower-case name or alias, or nil.
func (v *NetView) Lookup(label string) *RRSet { return v.names[label] }

// Endpoint returns the addresses of the endpoint named label, or nil.
func (v *NetView) Endpoint(label string) *RRSet { return v.byName[label] }

// Endpoints returns the number of endpoints.
func (v *NetView) Endpoints() int { return len(v.eps) }
