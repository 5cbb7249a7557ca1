// Package link does the kernel plumbing of a network through netlink:
// bridges on the host, veth pairs whose peer is born inside a container's
// namespace, addresses and routes configured through a handle on that
// namespace (netns.Handle: the calling goroutine's thread never runs in
// the container's namespace). Every dump goes through internal/nlsafe.
package link

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/netalias/netalias/agent/netns"
	"github.com/netalias/netalias/internal/nlsafe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// NotFound reports whether err is netlink's "no such link".
func NotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV)
}

// LinkNames returns the set of link names in the host namespace, as
// netlink sees it (the network namespace, whatever /sys shows).
func LinkNames() (map[string]bool, error) {
	links, err := nlsafe.LinkList(nil)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	m := make(map[string]bool, len(links))
	for _, l := range links {
		m[l.Attrs().Name] = true
	}
	return m, nil
}

// HostPrefixes returns the prefixes the host already uses: its addresses'
// subnets and its routes (default routes excluded), for subnet allocation.
func HostPrefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	routes, err := nlsafe.RouteList(nil, nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		if p, ok := toPrefix(r.Dst); ok && p.Bits() > 0 {
			out = append(out, p)
		}
	}
	addrs, err := nlsafe.AddrList(nil, nil, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if p, ok := toPrefix(a.IPNet); ok {
			out = append(out, p.Masked())
		}
	}
	return out, nil
}

func toPrefix(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
}

func ipnet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Bridge describes a network's bridge.
type Bridge struct {
	Name     string
	MTU      int
	Gateway  netip.Prefix // gateway address with the subnet's prefix length
	Gateway6 netip.Prefix // invalid unless dual-stack
	// MAC, when set, is the bridge's own address. Left to the kernel, a
	// bridge takes the lowest MAC among its ports and changes it when such
	// a port comes or goes (a container leaving, a VXLAN device made):
	// every container's cached neighbour entry for the gateway then
	// points nowhere until it expires and re-resolves, 5-10 s of DNS and
	// routed traffic lost. An address set once keeps (as Docker sets one).
	MAC net.HardwareAddr
}

// CreateBridge makes the bridge, puts the gateway addresses on it and
// brings it up. It fails if a link with that name exists (deterministic
// names mean a leftover would be ours: the caller decides). On error
// nothing is left behind (or the error says what was).
func CreateBridge(b Bridge) (err error) {
	la := netlink.NewLinkAttrs()
	la.Name = b.Name
	la.MTU = b.MTU
	la.HardwareAddr = b.MAC
	br := &netlink.Bridge{LinkAttrs: la}
	if err := netlink.LinkAdd(br); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("bridge %s already exists", b.Name)
		}
		return fmt.Errorf("create bridge %s: %w", b.Name, err)
	}
	defer func() {
		if err != nil {
			if derr := netlink.LinkDel(br); derr != nil && !NotFound(derr) {
				err = errors.Join(err, fmt.Errorf("undo: delete bridge %s: %w (left behind)", b.Name, derr))
			}
		}
	}()
	return ConfigureBridge(b)
}

// ConfigureBridge (re)applies addresses and up state to an existing bridge.
func ConfigureBridge(b Bridge) error {
	l, err := netlink.LinkByName(b.Name)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", b.Name, err)
	}
	if l.Type() != "bridge" {
		return fmt.Errorf("%q exists but is not a bridge", b.Name)
	}
	if b.Gateway6.IsValid() {
		// No router advertisements or DAD games on our bridge: the gateway
		// address must be usable at once.
		if err := writeFile("/proc/sys/net/ipv6/conf/"+b.Name+"/accept_dad", "0"); err != nil {
			return fmt.Errorf("bridge %s: disable DAD: %w", b.Name, err)
		}
	}
	for _, g := range []netip.Prefix{b.Gateway, b.Gateway6} {
		if !g.IsValid() {
			continue
		}
		a := &netlink.Addr{IPNet: ipnet(g)}
		if g.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := netlink.AddrReplace(l, a); err != nil {
			return fmt.Errorf("add gateway %s to bridge %s: %w", g, b.Name, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("bring bridge %s up: %w", b.Name, err)
	}
	return nil
}

// SetBridgeMAC gives the existing bridge name the address mac.
func SetBridgeMAC(name string, mac net.HardwareAddr) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", name, err)
	}
	if err := netlink.LinkSetHardwareAddr(l, mac); err != nil {
		return fmt.Errorf("set MAC %s on bridge %s: %w", mac, name, err)
	}
	return nil
}

// DeleteLink deletes a host link by name; a missing link is not an error.
func DeleteLink(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		if NotFound(err) {
			return nil
		}
		return fmt.Errorf("delete %s: %w", name, err)
	}
	if err := netlink.LinkDel(l); err != nil && !NotFound(err) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

// Veth describes an endpoint's veth pair.
type Veth struct {
	HostName string // host side, plugged into Bridge
	Bridge   string
	Netns    string // path of the container's namespace
	IfName   string // "" picks the first free ethN inside
	MTU      int
	Group    uint32 // link group of the host side (0: the default group)
	MAC      net.HardwareAddr
	Addr     netip.Prefix // address with the subnet's prefix length
	Addr6    netip.Prefix
	Gateway  netip.Addr // default route via; invalid for none
	Gateway6 netip.Addr
}

// Attach creates the pair with its peer born inside the namespace, plugs
// the host side into the bridge and configures the inside. It returns the
// interface name used inside. On error the pair is deleted (an undo that
// fails is part of the error).
func Attach(v Veth) (ifname string, err error) {
	err = netns.WithHandle(v.Netns, func(h *netlink.Handle) (err error) {
		var lo netlink.Link
		if ifname, lo, err = freeEth(h, v.IfName); err != nil {
			return fmt.Errorf("namespace %s: %w", v.Netns, err)
		}
		veth, err := createPair(v, ifname)
		if err != nil {
			return err
		}
		defer func() {
			if err != nil {
				if derr := netlink.LinkDel(veth); derr != nil && !NotFound(derr) {
					err = errors.Join(err, fmt.Errorf("undo: delete veth %s: %w (left behind)", v.HostName, derr))
				}
			}
		}()
		peer, err := configurePeer(h, v, ifname, lo)
		if err != nil {
			return err
		}
		return addRoutes(h, v, peer)
	})
	return ifname, err
}

// createPair makes the veth with its host side up on the bridge and its
// peer born inside the namespace as ifname (no move, no rename).
func createPair(v Veth, ifname string) (*netlink.Veth, error) {
	br, err := netlink.LinkByName(v.Bridge)
	if err != nil {
		return nil, fmt.Errorf("bridge %s: %w", v.Bridge, err)
	}
	ns, err := netlinkNsFd(v.Netns)
	if err != nil {
		return nil, err
	}
	defer unix.Close(ns)
	la := netlink.NewLinkAttrs()
	la.Name = v.HostName
	la.MTU = v.MTU
	la.MasterIndex = br.Attrs().Index
	la.Flags = net.FlagUp
	la.Group = v.Group // set at creation: no extra request
	veth := &netlink.Veth{
		LinkAttrs:        la,
		PeerName:         ifname,
		PeerNamespace:    netlink.NsFd(ns),
		PeerHardwareAddr: v.MAC,
		PeerMTU:          uint32(v.MTU),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create veth %s/%s (host or inside %s): %w", v.HostName, ifname, v.Netns, ErrExists)
		}
		return nil, fmt.Errorf("create veth %s (peer %s in %s): %w", v.HostName, ifname, v.Netns, err)
	}
	return veth, nil
}

func netlinkNsFd(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open namespace %s: %w", path, err)
	}
	return fd, nil
}

// configurePeer puts the addresses on the peer and brings it (and lo, if
// down) up.
func configurePeer(h *netlink.Handle, v Veth, ifname string, lo netlink.Link) (netlink.Link, error) {
	peer, err := h.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("find %s in %s: %w", ifname, v.Netns, err)
	}
	for _, a := range []netip.Prefix{v.Addr, v.Addr6} {
		if !a.IsValid() {
			continue
		}
		na := &netlink.Addr{IPNet: ipnet(a)}
		if a.Addr().Is6() {
			na.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(peer, na); err != nil {
			return nil, fmt.Errorf("add address %s to %s in %s: %w", a, ifname, v.Netns, err)
		}
	}
	if err := h.LinkSetUp(peer); err != nil {
		return nil, fmt.Errorf("bring %s up in %s: %w", ifname, v.Netns, err)
	}
	if lo != nil && lo.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(lo); err != nil {
			return nil, fmt.Errorf("bring lo up in %s: %w", v.Netns, err)
		}
	}
	return peer, nil
}

// addRoutes adds the default routes via the gateways, if any.
func addRoutes(h *netlink.Handle, v Veth, peer netlink.Link) error {
	for _, gw := range []netip.Addr{v.Gateway, v.Gateway6} {
		if !gw.IsValid() {
			continue
		}
		if err := routeAdd(h, peer, gw); err != nil {
			return fmt.Errorf("add default route via %s in %s: %w", gw, v.Netns, err)
		}
	}
	return nil
}

func routeAdd(h *netlink.Handle, l netlink.Link, gw netip.Addr) error {
	r := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw.AsSlice(), Scope: netlink.SCOPE_UNIVERSE, Family: nl.FAMILY_V4}
	if gw.Is6() {
		r.Family = nl.FAMILY_V6
	}
	if err := h.RouteAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}

// DefaultRoutes reports whether the namespace has an IPv4 and an IPv6
// default route (one with a gateway).
func DefaultRoutes(nsPath string) (v4, v6 bool, err error) {
	err = netns.WithHandle(nsPath, func(h *netlink.Handle) error {
		rs, err := nlsafe.RouteList(h, nil, netlink.FAMILY_ALL)
		if err != nil {
			return fmt.Errorf("list routes in %s: %w", nsPath, err)
		}
		for _, r := range rs {
			if (r.Dst == nil || r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst.Mask)) && r.Gw != nil {
				if r.Gw.To4() != nil {
					v4 = true
				} else {
					v6 = true
				}
			}
		}
		return nil
	})
	return v4, v6, err
}

func isZeroMask(m net.IPMask) bool {
	ones, _ := m.Size()
	return ones == 0
}

// freeEth lists the namespace's links (one dump) and returns want, or
// the first free ethN when want is "", and lo (to bring up without
// another request).
func freeEth(h *netlink.Handle, want string) (ifname string, lo netlink.Link, err error) {
	links, err := nlsafe.LinkList(h)
	if err != nil {
		return "", nil, err
	}
	used := map[string]bool{}
	for _, l := range links {
		used[l.Attrs().Name] = true
		if l.Attrs().Name == "lo" {
			lo = l
		}
	}
	if want != "" {
		if used[want] {
			return "", nil, fmt.Errorf("interface %s: %w", want, ErrExists)
		}
		return want, lo, nil
	}
	for i := 0; ; i++ {
		if n := fmt.Sprintf("eth%d", i); !used[n] {
			return n, lo, nil
		}
	}
}

// Unplug makes an endpoint unreachable at once without paying for the
// veth deletion: inside the namespace the peer goes down, loses its
// addresses and is renamed out of the way (so ethN is free for the next
// connect); on the host the veth leaves the bridge and joins link group
// group, so that the reaper can delete every pending veth in one request
// (one RCU grace period for all, see DeleteGroup). A namespace that is
// already gone is fine.
func Unplug(hostName, nsPath, ifname, parkName string, group uint32) error {
	hl, err := netlink.LinkByName(hostName)
	if err != nil {
		if NotFound(err) {
			return nil
		}
		return fmt.Errorf("find %s: %w", hostName, err)
	}
	if err := netlink.LinkSetNoMaster(hl); err != nil && !NotFound(err) {
		return fmt.Errorf("unplug %s from its bridge: %w", hostName, err)
	}
	if err := unplugPeer(hl, nsPath, ifname, parkName); err != nil {
		return err
	}
	// Last: membership of the reap group says the unplug is complete. A
	// pending veth outside it is an interrupted disconnect (its peer may
	// still hold the address) that a reconcile deletes at once.
	if group != 0 {
		if err := netlink.LinkSetGroup(hl, int(group)); err != nil && !NotFound(err) {
			return fmt.Errorf("move %s to link group %d: %w", hostName, group, err)
		}
	}
	return nil
}

// unplugPeer takes the peer of host veth hl down inside nsPath, removes
// its addresses and renames it parkName.
func unplugPeer(hl netlink.Link, nsPath, ifname, parkName string) error {
	h, err := netns.Handle(nsPath)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil // namespace gone: the peer went with it
		}
		return err
	}
	defer h.Close()
	peer, err := h.LinkByName(ifname)
	if err != nil {
		if NotFound(err) {
			return nil // the peer went with its pair
		}
		return fmt.Errorf("find %s in %s: %w", ifname, nsPath, err)
	}
	// The peer index in the namespace must still be our pair: check the
	// peer's link-netns partner index against the host side.
	if peer.Attrs().ParentIndex != 0 && peer.Attrs().ParentIndex != hl.Attrs().Index {
		return nil
	}
	if err := h.LinkSetDown(peer); err != nil && !NotFound(err) {
		return fmt.Errorf("bring %s down in %s: %w", ifname, nsPath, err)
	}
	addrs, err := nlsafe.AddrList(h, peer, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("list addresses of %s in %s: %w", ifname, nsPath, err)
	}
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() {
			continue
		}
		if err := h.AddrDel(peer, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			return fmt.Errorf("remove %s from %s in %s: %w", a.IPNet, ifname, nsPath, err)
		}
	}
	if parkName != "" && !strings.EqualFold(parkName, ifname) {
		if err := h.LinkSetName(peer, parkName); err != nil {
			return fmt.Errorf("rename %s in %s: %w", ifname, nsPath, err)
		}
	}
	return nil
}

// AddDefaultRoute adds a default route via gw on ifname inside nsPath.
func AddDefaultRoute(nsPath, ifname string, gw netip.Addr) error {
	return netns.WithHandle(nsPath, func(h *netlink.Handle) error {
		l, err := h.LinkByName(ifname)
		if err != nil {
			return fmt.Errorf("find %s in %s: %w", ifname, nsPath, err)
		}
		if err := routeAdd(h, l, gw); err != nil {
			return fmt.Errorf("add default route via %s in %s: %w", gw, nsPath, err)
		}
		return nil
	})
}

// UplinkMTU returns the MTU of the interface carrying the host's IPv4
// default route, capped at max; max when there is none.
func UplinkMTU(max int) (int, error) {
	routes, err := nlsafe.RouteList(nil, nil, netlink.FAMILY_V4)
	if err != nil {
		return max, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.LinkIndex > 0 {
			l, err := netlink.LinkByIndex(r.LinkIndex)
			if err != nil {
				return max, fmt.Errorf("uplink %d: %w", r.LinkIndex, err)
			}
			if m := l.Attrs().MTU; m > 0 && m < max {
				return m, nil
			}
			return max, nil
		}
	}
	return max, nil
}

// GroupMembers returns the names of the host links in link group group.
func GroupMembers(group uint32) ([]string, error) {
	links, err := nlsafe.LinkList(nil)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var out []string
	for _, l := range links {
		if l.Attrs().Group == group {
			out = append(out, l.Attrs().Name)
		}
	}
	return out, nil
}

// DeleteGroup deletes every host link in link group group with one
// RTM_DELLINK: the kernel unregisters them together, paying one RCU grace
// period instead of one per link. Callers must know every member is
// theirs (GroupMembers).
func DeleteGroup(group uint32) error {
	if group == 0 {
		return errors.New("refusing to delete link group 0 (the default group)")
	}
	req := nl.NewNetlinkRequest(unix.RTM_DELLINK, unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(group)))
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete link group %d: %w", group, err)
	}
	return nil
}
