package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sort"

	"github.com/netalias/netalias/agent/events"
	"github.com/netalias/netalias/agent/ipam"
	"github.com/netalias/netalias/agent/link"
	"github.com/netalias/netalias/agent/names"
	"github.com/netalias/netalias/agent/netns"
	"github.com/netalias/netalias/agent/resolvconf"
	"github.com/netalias/netalias/agent/store"
	"github.com/netalias/netalias/state"
)

// ConnectSpec is what `connect` asks for.
type ConnectSpec struct {
	Network string
	Netns   string // name under /run/netns, path, or PID
	Name    string // endpoint name; default: the namespace's name
	Aliases []string
	Links   []state.Link
	IP      string
	IP6     string
	Owner   *state.Owner // set by Run: reclaim when this process is gone
}

// Connect attaches a namespace to a network. On error nothing is left
// behind and the state is unchanged.
func (m *Manager) Connect(spec ConnectSpec) (*state.Endpoint, error) {
	ref, err := netns.Resolve(spec.Netns)
	if err != nil {
		return nil, err
	}
	name := spec.Name
	if name == "" {
		name = ref.Name
		if name == "" {
			name = filepath.Base(ref.Path)
			if spec.Netns != "" && isPID(spec.Netns) {
				name = "pid-" + spec.Netns
			}
		}
		if err := names.Label("endpoint name", name); err != nil {
			return nil, fmt.Errorf("%v (derived from the namespace; give one with --name)", err)
		}
	} else if err := names.Label("endpoint name", name); err != nil {
		return nil, err
	}
	for _, a := range spec.Aliases {
		if err := names.DNSName("alias", a); err != nil {
			return nil, err
		}
	}
	for _, l := range spec.Links {
		if err := names.Label("link target", l.Target); err != nil {
			return nil, err
		}
		if err := names.DNSName("link alias", l.Alias); err != nil {
			return nil, err
		}
	}
	var ip4, ip6 netip.Addr
	if spec.IP != "" {
		if ip4, err = netip.ParseAddr(spec.IP); err != nil || !ip4.Is4() {
			return nil, fmt.Errorf("invalid --ip %q: not an IPv4 address", spec.IP)
		}
	}
	if spec.IP6 != "" {
		if ip6, err = netip.ParseAddr(spec.IP6); err != nil || !ip6.Is6() {
			return nil, fmt.Errorf("invalid --ip6 %q: not an IPv6 address", spec.IP6)
		}
	}

	lk, snap, err := m.begin()
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()
	f, err := lookup(snap, spec.Network)
	if err != nil {
		return nil, err
	}
	n := f.Network
	for _, ep := range f.Endpoints {
		if ep.Container == ref.Path || netns.Same(ep.Netns, ref.Path) {
			return nil, fmt.Errorf("namespace %s is already connected to network %q as %q", ref.Path, n.Name, ep.Name)
		}
		if ep.Name == name {
			return nil, fmt.Errorf("endpoint name %q is already in use on network %q (by %s)", name, n.Name, ep.Netns)
		}
	}
	sub, gw, sub6, gw6 := n.Subnet, n.Gateway, n.Subnet6, n.Gateway6
	used4 := map[netip.Addr]bool{gw: true}
	used6 := map[netip.Addr]bool{gw6: true}
	for _, ep := range f.Endpoints {
		used4[ep.IPv4] = true
		used6[ep.IPv6] = true
	}
	mem4, mem6 := map[netip.Addr]bool{}, map[netip.Addr]bool{}
	for who, l := range f.Leases {
		if who == name {
			continue
		}
		mem4[l.IPv4] = true
		mem6[l.IPv6] = true
	}
	lease := f.Leases[name]
	if ip4.IsValid() {
		if err := ipam.CheckHost("--ip", sub, ip4); err != nil {
			return nil, err
		}
		if ip4 == gw {
			return nil, fmt.Errorf("--ip %s is the gateway of network %q", ip4, n.Name)
		}
		if used4[ip4] {
			return nil, fmt.Errorf("--ip %s is already in use on network %q", ip4, n.Name)
		}
	} else {
		if ip4, err = ipam.AllocAddr(sub, used4, mem4, lease.IPv4); err != nil {
			return nil, fmt.Errorf("network %q: %w", n.Name, err)
		}
	}
	if ip6.IsValid() {
		if !sub6.IsValid() {
			return nil, fmt.Errorf("--ip6 given but network %q has no IPv6 subnet", n.Name)
		}
		if err := ipam.CheckHost("--ip6", sub6, ip6); err != nil {
			return nil, err
		}
		if used6[ip6] {
			return nil, fmt.Errorf("--ip6 %s is already in use on network %q", ip6, n.Name)
		}
	} else if sub6.IsValid() {
		if ip6, err = ipam.AllocAddr(sub6, used6, mem6, lease.IPv6); err != nil {
			return nil, fmt.Errorf("network %q: %w", n.Name, err)
		}
	}

	// The default route goes via the container's first non-internal network.
	wantRoute := !n.Internal
	for _, other := range snap.Files {
		for _, ep := range other.Endpoints {
			if ep.Container == ref.Path && !other.Network.Internal {
				wantRoute = false
			}
		}
	}
	id := newID()
	mac := net.HardwareAddr{0x02, 0x42, 0, 0, 0, 0}
	copy(mac[2:], ip4.AsSlice())
	v := link.Veth{
		HostName: vethName(id), Bridge: n.Bridge, Netns: ref.Path, MTU: n.MTU, MAC: mac,
		Addr: netip.PrefixFrom(ip4, sub.Bits()),
	}
	if ip6.IsValid() {
		v.Addr6 = netip.PrefixFrom(ip6, sub6.Bits())
	}
	if wantRoute {
		v.Gateway = gw
		if ip6.IsValid() {
			v.Gateway6 = gw6
		}
	}
	// Record the veth as pending deletion before it exists: if this
	// process dies before the final write, a later reconcile deletes it.
	oldEps, oldPending, oldLeases := f.Endpoints, f.PendingDelete, cloneLeases(f.Leases)
	restore := func() { f.Endpoints, f.PendingDelete, f.Leases = oldEps, oldPending, oldLeases }
	f.PendingDelete = append(f.PendingDelete[:len(f.PendingDelete):len(f.PendingDelete)], state.PendingVeth{Name: v.HostName, Since: now(), Creating: true})
	// No fsync: a killed process loses nothing, and a machine crash takes
	// the veth with it.
	if err := m.store.WriteIntent(f); err != nil {
		restore()
		return nil, err
	}
	undo := func(err error) (*state.Endpoint, error) {
		link.DeleteLink(v.HostName)
		restore()
		if werr := m.store.Write(f); werr != nil {
			return nil, errors.Join(err, werr)
		}
		m.updateResolver(snap, ref.Path)
		return nil, err
	}
	ifname, err := link.Attach(v)
	if err != nil {
		return undo(err)
	}
	if err := failpoint("connect:attached"); err != nil {
		return undo(err)
	}
	ep := state.Endpoint{
		ID: id, Name: name, Aliases: spec.Aliases, Links: spec.Links,
		IPv4: ip4, IPv6: ip6, MAC: mac.String(), HostVeth: v.HostName, IfName: ifname,
		Netns: ref.Path, Container: ref.Path, Created: now(), Owner: spec.Owner,
	}
	f.Endpoints = append(f.Endpoints[:len(f.Endpoints):len(f.Endpoints)], ep)
	f.PendingDelete = oldPending
	f.Leases = cloneLeases(oldLeases)
	if f.Leases == nil {
		f.Leases = map[string]state.Lease{}
	}
	f.Leases[name] = state.Lease{IPv4: ep.IPv4, IPv6: ep.IPv6}
	if err := m.store.Write(f); err != nil {
		return undo(err)
	}
	if err := m.updateResolver(snap, ref.Path); err != nil {
		return undo(fmt.Errorf("resolver file of %s: %w", ref.Path, err))
	}
	m.emit(epEvent("connect", n, ep, ""))
	return &ep, nil
}

func cloneLeases(m map[string]state.Lease) map[string]state.Lease {
	if m == nil {
		return nil
	}
	c := make(map[string]state.Lease, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// failpoint lets tests make a named step fail, to check rollbacks.
var failpoint = func(step string) error { return nil }

func isPID(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}

// Disconnect detaches a namespace from a network. The endpoint is
// unreachable and gone from the state when it returns; the host veth's
// deletion (an RCU grace period) is left to the reaper.
func (m *Manager) Disconnect(network, nsArg string) error {
	ref, rerr := netns.Resolve(nsArg)
	lk, snap, err := m.begin()
	if err != nil {
		return err
	}
	f, err := lookup(snap, network)
	if err != nil {
		lk.Unlock()
		return err
	}
	idx := -1
	for i, ep := range f.Endpoints {
		if (rerr == nil && ep.Container == ref.Path) || ep.Netns == nsArg || (rerr != nil && ep.Name == nsArg) {
			idx = i
			break
		}
	}
	if idx < 0 {
		lk.Unlock()
		if rerr != nil {
			return rerr
		}
		return fmt.Errorf("namespace %s is not connected to network %q", ref.Path, network)
	}
	ep := f.Endpoints[idx]
	if err := m.detach(snap, f, idx); err != nil {
		lk.Unlock()
		return err
	}
	lk.Unlock()
	m.emit(epEvent("disconnect", f.Network, ep, ""))
	m.afterPending()
	return nil
}

// detach removes endpoint idx of f from the state (its veth recorded as
// pending deletion), then unplugs it and refreshes the container's
// resolver file. The state is written first: if anything after fails, the
// reaper still deletes the veth, so nothing leaks.
func (m *Manager) detach(snap *store.Snapshot, f *state.File, idx int) error {
	ep := f.Endpoints[idx]
	oldEps, oldPending := f.Endpoints, f.PendingDelete
	f.Endpoints = append(f.Endpoints[:idx:idx], f.Endpoints[idx+1:]...)
	f.PendingDelete = append(f.PendingDelete[:len(f.PendingDelete):len(f.PendingDelete)], state.PendingVeth{Name: ep.HostVeth, Since: now()})
	if err := m.store.Write(f); err != nil {
		f.Endpoints, f.PendingDelete = oldEps, oldPending
		return err
	}
	link.Unplug(ep.HostVeth, ep.Netns, ep.IfName, parkName(ep.ID), m.group)
	m.updateResolver(snap, ep.Container)
	m.fixDefaultRoute(snap, ep.Container)
	return nil
}

// containersOf lists the containers with an endpoint on f.
func containersOf(f *state.File) []string {
	var out []string
	for _, ep := range f.Endpoints {
		out = append(out, ep.Container)
	}
	return out
}

// containerEndpoints returns a container's endpoints across networks in
// the order they were connected, with their networks.
func containerEndpoints(snap *store.Snapshot, container string) ([]state.Endpoint, []state.Network) {
	type pair struct {
		ep state.Endpoint
		n  state.Network
	}
	var ps []pair
	for _, f := range snap.Files {
		for _, ep := range f.Endpoints {
			if ep.Container == container {
				ps = append(ps, pair{ep, f.Network})
			}
		}
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].ep.Created.Before(ps[j].ep.Created) })
	eps, ns := make([]state.Endpoint, len(ps)), make([]state.Network, len(ps))
	for i, p := range ps {
		eps[i], ns[i] = p.ep, p.n
	}
	return eps, ns
}

// updateResolver rewrites (or removes) /etc/netns/NAME/resolv.conf of a
// named container from its current networks.
func (m *Manager) updateResolver(snap *store.Snapshot, container string) error {
	if filepath.Dir(container) != netns.RunDir {
		return nil // only named namespaces have an /etc/netns directory
	}
	name := filepath.Base(container)
	_, nets := containerEndpoints(snap, container)
	if len(nets) == 0 {
		return resolvconf.Remove(name)
	}
	var search []string
	for _, n := range nets {
		search = append(search, n.Name)
	}
	return resolvconf.Write(name, nets[0].Gateway.String(), search)
}

// fixDefaultRoute gives a container that just lost the network carrying
// its default route a new one via its next non-internal network.
func (m *Manager) fixDefaultRoute(snap *store.Snapshot, container string) {
	eps, nets := containerEndpoints(snap, container)
	for i, n := range nets {
		if n.Internal {
			continue
		}
		if has, err := link.HasDefaultRoute(eps[i].Netns); err == nil && !has {
			link.AddDefaultRoute(eps[i].Netns, eps[i].IfName, n.Gateway)
		}
		return
	}
}

func epEvent(action string, n state.Network, ep state.Endpoint, reason string) events.Event {
	return events.Event{Time: now(), Type: "endpoint", Action: action, Network: n.Name,
		Endpoint: ep.Name, Aliases: ep.Aliases, IPv4: addrString(ep.IPv4), IPv6: addrString(ep.IPv6), Netns: ep.Netns, Reason: reason}
}

// addrString is a's text, "" for the zero address (events omit it).
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// afterPending hands veths pending deletion to the reaper.
func (m *Manager) afterPending() {
	if m.reap != nil {
		m.reap()
		return
	}
	m.Reap()
}
