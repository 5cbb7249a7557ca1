package netwatch

import (
	"net/netip"
	"sort"
)

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
		unready:   old.unready,
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
			nw.unready -= ov.unready
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
			nw.unready += v.unready
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
	if s.onChange != nil {
		s.onChange(nw, source)
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
				health:    e.Health,
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
			ready := ei.health.Ready()
			if !ready {
				v.unready++
			}
			v.add(v.byName, ei.name, ei.v4, ei.v6, ready)
			v.add(v.names, ei.name, ei.v4, ei.v6, ready)
			for _, a := range e.Aliases {
				if a = key(a); a != "" && a != ei.name {
					v.add(v.names, a, ei.v4, ei.v6, ready)
				}
			}
		}
	}
	for _, rs := range v.names {
		rs.seal()
		v.records += len(rs.V4) + len(rs.V6)
	}
	for _, rs := range v.byName {
		rs.seal()
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
