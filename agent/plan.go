package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sort"

	"github.com/netalias/netalias/agent/ipam"
	"github.com/netalias/netalias/agent/link"
	"github.com/netalias/netalias/agent/names"
	"github.com/netalias/netalias/agent/netns"
	"github.com/netalias/netalias/state"
)

// Deciding, without touching the kernel or the disk: everything here is
// pure and table-tested (plan_test.go).

// endpointName is the endpoint's name: --name, else the namespace's name
// (pid-N for a PID, the file name for a path).
func endpointName(spec ConnectSpec, ref netns.Ref) (string, error) {
	if spec.Name != "" {
		if err := names.Label("endpoint name", spec.Name); err != nil {
			return "", err
		}
		return spec.Name, nil
	}
	name := ref.Name
	if name == "" {
		name = filepath.Base(ref.Path)
		if isPID(spec.Netns) {
			name = "pid-" + spec.Netns
		}
	}
	if err := names.Label("endpoint name", name); err != nil {
		return "", fmt.Errorf("%v (derived from the namespace; give one with --name)", err)
	}
	return name, nil
}

// connectRequest is a checked ConnectSpec: names valid, --ip/--ip6 parsed.
type connectRequest struct {
	ip4, ip6 netip.Addr
}

func checkConnectSpec(spec ConnectSpec) (connectRequest, error) {
	var r connectRequest
	for _, a := range spec.Aliases {
		if err := names.DNSName("alias", a); err != nil {
			return r, err
		}
	}
	for _, l := range spec.Links {
		if err := names.Label("link target", l.Target); err != nil {
			return r, err
		}
		if err := names.DNSName("link alias", l.Alias); err != nil {
			return r, err
		}
	}
	var err error
	if spec.IP != "" {
		if r.ip4, err = netip.ParseAddr(spec.IP); err != nil || !r.ip4.Is4() {
			return r, fmt.Errorf("invalid --ip %q: not an IPv4 address", spec.IP)
		}
	}
	if spec.IP6 != "" {
		if r.ip6, err = netip.ParseAddr(spec.IP6); err != nil || !r.ip6.Is6() || r.ip6.Is4In6() {
			return r, fmt.Errorf("invalid --ip6 %q: not an IPv6 address", spec.IP6)
		}
	}
	return r, nil
}

// checkFree refuses a namespace already on f, or a name already taken.
func checkFree(f *state.File, container, name string, same func(a, b string) bool) error {
	for _, ep := range f.Endpoints {
		if ep.Container == container || same(ep.Netns, container) {
			return fmt.Errorf("namespace %s is already connected to network %q as %q", container, f.Network.Name, ep.Name)
		}
		if ep.Name == name {
			return fmt.Errorf("endpoint name %q is already in use on network %q (by %s)", name, f.Network.Name, ep.Netns)
		}
	}
	return nil
}

// allocAddrs chooses the endpoint's addresses on f: the requested ones
// (checked: in the subnet, not the gateway, not in use), else the name's
// lease if free (sticky addresses), else the first address neither in use
// nor remembered for another name. ip6 stays invalid on IPv4-only
// networks.
func allocAddrs(f *state.File, name string, req connectRequest) (ip4, ip6 netip.Addr, err error) {
	n := f.Network
	used4 := map[netip.Addr]bool{n.Gateway: true}
	used6 := map[netip.Addr]bool{n.Gateway6: true}
	for _, ep := range f.Endpoints {
		used4[ep.IPv4] = true
		used6[ep.IPv6] = true
	}
	mem4, mem6 := map[netip.Addr]bool{}, map[netip.Addr]bool{}
	for who, l := range f.Leases {
		if who != name {
			mem4[l.IPv4] = true
			mem6[l.IPv6] = true
		}
	}
	lease := f.Leases[name]
	if ip4 = req.ip4; ip4.IsValid() {
		if err := ipam.CheckHost("--ip", n.Subnet, ip4); err != nil {
			return ip4, ip6, err
		}
		if ip4 == n.Gateway {
			return ip4, ip6, fmt.Errorf("--ip %s is the gateway of network %q", ip4, n.Name)
		}
		if used4[ip4] {
			return ip4, ip6, fmt.Errorf("--ip %s is already in use on network %q", ip4, n.Name)
		}
	} else if ip4, err = ipam.AllocAddr(n.Subnet, used4, mem4, lease.IPv4); err != nil {
		return ip4, ip6, fmt.Errorf("network %q: %w", n.Name, err)
	}
	if ip6 = req.ip6; ip6.IsValid() {
		if !n.Subnet6.IsValid() {
			return ip4, ip6, fmt.Errorf("--ip6 given but network %q has no IPv6 subnet", n.Name)
		}
		if err := ipam.CheckHost("--ip6", n.Subnet6, ip6); err != nil {
			return ip4, ip6, err
		}
		if ip6 == n.Gateway6 {
			return ip4, ip6, fmt.Errorf("--ip6 %s is the gateway of network %q", ip6, n.Name)
		}
		if used6[ip6] {
			return ip4, ip6, fmt.Errorf("--ip6 %s is already in use on network %q", ip6, n.Name)
		}
	} else if n.Subnet6.IsValid() {
		if ip6, err = ipam.AllocAddr(n.Subnet6, used6, mem6, lease.IPv6); err != nil {
			return ip4, ip6, fmt.Errorf("network %q: %w", n.Name, err)
		}
	}
	return ip4, ip6, nil
}

// wantDefaultRoute: the default route goes via the container's first
// non-internal network, so only when it has none yet.
func wantDefaultRoute(files map[string]*state.File, n state.Network, container string) bool {
	if n.Internal {
		return false
	}
	for _, f := range files {
		if f.Network.Internal {
			continue
		}
		for _, ep := range f.Endpoints {
			if ep.Container == container {
				return false
			}
		}
	}
	return true
}

// macFor is 02:42 + the IPv4 address (as Docker): a sticky address keeps
// its MAC too.
func macFor(ip4 netip.Addr) net.HardwareAddr {
	mac := net.HardwareAddr{0x02, 0x42, 0, 0, 0, 0}
	copy(mac[2:], ip4.AsSlice())
	return mac
}

// planVeth describes the pair of endpoint id on network n.
func planVeth(n state.Network, id, nsPath string, ip4, ip6 netip.Addr, route bool) link.Veth {
	v := link.Veth{
		HostName: vethName(id), Bridge: n.Bridge, Netns: nsPath, MTU: n.MTU, MAC: macFor(ip4),
		Addr: netip.PrefixFrom(ip4, n.Subnet.Bits()),
	}
	if ip6.IsValid() {
		v.Addr6 = netip.PrefixFrom(ip6, n.Subnet6.Bits())
	}
	if route {
		v.Gateway = n.Gateway
		if ip6.IsValid() {
			v.Gateway6 = n.Gateway6
		}
	}
	return v
}

// findEndpoint is the index of the endpoint on f that a disconnect names
// (by container, namespace path, or, when the namespace cannot be
// resolved any more, endpoint name), or -1.
func findEndpoint(f *state.File, ref netns.Ref, resolved bool, arg string) int {
	for i, ep := range f.Endpoints {
		if (resolved && ep.Container == ref.Path) || ep.Netns == arg || (!resolved && ep.Name == arg) {
			return i
		}
	}
	return -1
}

// containerEndpoints returns a container's endpoints across networks in
// the order they were connected, with their networks.
func containerEndpoints(files map[string]*state.File, container string) ([]state.Endpoint, []state.Network) {
	type pair struct {
		ep state.Endpoint
		n  state.Network
	}
	var ps []pair
	for _, f := range files {
		for _, ep := range f.Endpoints {
			if ep.Container == container {
				ps = append(ps, pair{ep, f.Network})
			}
		}
	}
	sort.Slice(ps, func(i, j int) bool {
		if !ps[i].ep.Created.Equal(ps[j].ep.Created) {
			return ps[i].ep.Created.Before(ps[j].ep.Created)
		}
		return ps[i].n.Name < ps[j].n.Name
	})
	eps, ns := make([]state.Endpoint, len(ps)), make([]state.Network, len(ps))
	for i, p := range ps {
		eps[i], ns[i] = p.ep, p.n
	}
	return eps, ns
}

// routeCarrier is the endpoint that should carry a container's default
// routes: the one on its first non-internal network (-1: none).
func routeCarrier(nets []state.Network) int {
	for i, n := range nets {
		if !n.Internal {
			return i
		}
	}
	return -1
}

// missingRoutes lists the gateways to add so that a container whose
// carrier endpoint ep (on n) has default routes has4/has6 gets one per
// family it has an address in.
func missingRoutes(n state.Network, ep state.Endpoint, has4, has6 bool) []netip.Addr {
	var out []netip.Addr
	if !has4 && n.Gateway.IsValid() && ep.IPv4.IsValid() {
		out = append(out, n.Gateway)
	}
	if !has6 && n.Gateway6.IsValid() && ep.IPv6.IsValid() {
		out = append(out, n.Gateway6)
	}
	return out
}

// networkPlan is a checked NetworkSpec; zero subnets are chosen later.
type networkPlan struct {
	sub, sub6 netip.Prefix
	gw, gw6   netip.Addr
	mtu       int
}

// parseNetworkSpec checks spec. uplinkMTU is asked only when no --mtu
// was given.
func parseNetworkSpec(spec NetworkSpec, uplinkMTU func() (int, error)) (networkPlan, error) {
	var p networkPlan
	if err := names.Label("network name", spec.Name); err != nil {
		return p, err
	}
	if p.mtu = spec.MTU; p.mtu == 0 {
		// Like the uplink: a bridge MTU above the host's default-route
		// interface breaks large outbound packets (cloud VMs run 1400-1460).
		m, err := uplinkMTU()
		if err != nil {
			return p, fmt.Errorf("default MTU: %w (give one with --mtu)", err)
		}
		p.mtu = m
	}
	if p.mtu < 68 || p.mtu > 65535 {
		return p, fmt.Errorf("invalid --mtu %d: must be between 68 and 65535", p.mtu)
	}
	if spec.Gateway != "" && spec.Subnet == "" {
		return p, errors.New("--gateway needs --subnet")
	}
	if spec.Gateway6 != "" && spec.Subnet6 == "" {
		return p, errors.New("--gateway6 needs --subnet6")
	}
	var err error
	if p.sub, p.gw, err = parseSubnet("--subnet", "--gateway", spec.Subnet, spec.Gateway, true, "10.77.0.0/24"); err != nil {
		return p, err
	}
	if p.sub6, p.gw6, err = parseSubnet("--subnet6", "--gateway6", spec.Subnet6, spec.Gateway6, false, "fd00:1::/64"); err != nil {
		return p, err
	}
	if !p.sub6.IsValid() && spec.IPv6 {
		p.sub6 = ipam.RandomULA64()
		p.gw6 = ipam.FirstHost(p.sub6)
	}
	return p, nil
}

// parseSubnet parses a --subnet/--gateway pair ("" subnet: zero values).
func parseSubnet(flag, gwFlag, subnet, gateway string, want4 bool, example string) (netip.Prefix, netip.Addr, error) {
	if subnet == "" {
		return netip.Prefix{}, netip.Addr{}, nil
	}
	sub, err := netip.ParsePrefix(subnet)
	if err != nil {
		return sub, netip.Addr{}, fmt.Errorf("invalid %s %q: not a CIDR like %s", flag, subnet, example)
	}
	gw := ipam.FirstHost(sub)
	if gateway != "" {
		if gw, err = netip.ParseAddr(gateway); err != nil {
			return sub, gw, fmt.Errorf("invalid %s %q: not an IP address", gwFlag, gateway)
		}
	}
	if err := ipam.CheckSubnet(flag, sub, gw, want4); err != nil {
		return sub, gw, err
	}
	return sub, gw, nil
}

// chooseSubnets checks requested subnets against the other networks and
// the host's prefixes, and allocates the IPv4 subnet from pools when none
// was requested.
func chooseSubnets(p networkPlan, files map[string]*state.File, host []netip.Prefix, pools []ipam.Pool) (networkPlan, error) {
	if p.sub.IsValid() {
		if err := overlapError("--subnet", p.sub, files, host); err != nil {
			return p, err
		}
	} else {
		taken := append([]netip.Prefix(nil), host...)
		for _, f := range files {
			for _, q := range []netip.Prefix{f.Network.Subnet, f.Network.Subnet6} {
				if q.IsValid() {
					taken = append(taken, q)
				}
			}
		}
		sub, err := ipam.AllocSubnet(pools, taken)
		if err != nil {
			return p, err
		}
		p.sub, p.gw = sub, ipam.FirstHost(sub)
	}
	if p.sub6.IsValid() {
		if err := overlapError("--subnet6", p.sub6, files, host); err != nil {
			return p, err
		}
	}
	return p, nil
}

// overlapError names what a requested subnet collides with.
func overlapError(flag string, p netip.Prefix, files map[string]*state.File, host []netip.Prefix) error {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		n := files[name].Network
		for _, q := range []netip.Prefix{n.Subnet, n.Subnet6} {
			if q.IsValid() && q.Overlaps(p) {
				return fmt.Errorf("%s %s overlaps network %q (%s)", flag, p, name, q)
			}
		}
	}
	for _, q := range host {
		if q.Overlaps(p) {
			return fmt.Errorf("%s %s overlaps %s, already in use on this host (address or route)", flag, p, q)
		}
	}
	return nil
}

// newNetwork is the record of a network made from plan p.
func newNetwork(id, name string, p networkPlan, internal bool) state.Network {
	n := state.Network{
		ID: id, Name: name, Bridge: bridgeName(id),
		Subnet: p.sub, Gateway: p.gw, Internal: internal, MTU: p.mtu, Created: now(),
	}
	if p.sub6.IsValid() {
		n.Subnet6, n.Gateway6 = p.sub6, p.gw6
	}
	return n
}

// bridgeOf describes network n's bridge: its gateways carry the subnets'
// prefix lengths.
func bridgeOf(n state.Network) link.Bridge {
	br := link.Bridge{Name: n.Bridge, MTU: n.MTU}
	if n.Subnet.IsValid() && n.Gateway.IsValid() {
		br.Gateway = netip.PrefixFrom(n.Gateway, n.Subnet.Bits())
		// Derived like an endpoint's, from an address no endpoint holds:
		// the same after the bridge is made again (reboot, reconcile).
		br.MAC = macFor(n.Gateway)
	}
	if n.Subnet6.IsValid() && n.Gateway6.IsValid() {
		br.Gateway6 = netip.PrefixFrom(n.Gateway6, n.Subnet6.Bits())
	}
	return br
}

func isPID(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}
