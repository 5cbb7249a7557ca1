package netwatch

import (
	"net"
	"net/netip"
)

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
	unready   int
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

// Unready returns the number of endpoints whose healthcheck does not pass
// (starting or unhealthy).
func (s *Snapshot) Unready() int { return s.unready }

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
	unready     int // endpoints not ready (health)
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
	health    Health
}

// RRSet holds the distinct addresses of one name on one network, ready to
// put in answers (shared, read-only). A set of every member also holds the
// views Pick chooses from, built with the snapshot.
type RRSet struct {
	V4 []net.IP
	V6 []net.IP
	// ready: the ready members (rs itself when every member is);
	// preferred: ready, or rs when none is; all: the set of every member,
	// nil in that set itself.
	ready, preferred, all *RRSet
}

func (v *NetView) add(m map[string]*RRSet, name string, a4, a6 netip.Addr, ready bool) {
	rs := m[name]
	if rs == nil {
		rs = &RRSet{}
		m[name] = rs
	}
	v.addMember(rs, a4, a6, ready)
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

// Lookup returns the addresses of a lower-case name or alias, or nil.
func (v *NetView) Lookup(label string) *RRSet { return v.names[label] }

// Endpoint returns the addresses of the endpoint named label, or nil.
func (v *NetView) Endpoint(label string) *RRSet { return v.byName[label] }

// Endpoints returns the number of endpoints.
func (v *NetView) Endpoints() int { return len(v.eps) }

// Unready returns the number of endpoints not ready (starting, unhealthy).
func (v *NetView) Unready() int { return v.unready }
