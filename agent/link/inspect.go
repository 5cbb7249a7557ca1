package link

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/netalias/netalias/agent/netns"
	"github.com/netalias/netalias/internal/nlsafe"
)

// ErrExists marks an interface name already taken inside a namespace.
var ErrExists = errors.New("an interface with that name exists")

// HostLink is what CHECK needs to know of a host-side link.
type HostLink struct {
	Master string // bridge it is plugged into, "" for none
	Up     bool
}

// Iface is what CHECK needs to know of an interface inside a namespace.
type Iface struct {
	MAC    net.HardwareAddr
	Addrs  []netip.Prefix
	Routes []netip.Addr // gateways of the default routes through it
}

// HostLinkInfo describes host link name; a missing link is an error for
// which NotFound is true.
func HostLinkInfo(name string) (HostLink, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return HostLink{}, fmt.Errorf("find %s: %w", name, err)
	}
	hl := HostLink{Up: l.Attrs().Flags&net.FlagUp != 0}
	if mi := l.Attrs().MasterIndex; mi != 0 {
		m, err := netlink.LinkByIndex(mi)
		if err != nil {
			return hl, fmt.Errorf("master of %s: %w", name, err)
		}
		hl.Master = m.Attrs().Name
	}
	return hl, nil
}

// IfaceInfo describes ifname inside the namespace at nsPath; a missing
// interface is an error for which NotFound is true.
func IfaceInfo(nsPath, ifname string) (Iface, error) {
	var in Iface
	err := netns.WithHandle(nsPath, func(h *netlink.Handle) error {
		l, err := h.LinkByName(ifname)
		if err != nil {
			return fmt.Errorf("find %s in %s: %w", ifname, nsPath, err)
		}
		in.MAC = l.Attrs().HardwareAddr
		addrs, err := nlsafe.AddrList(h, l, netlink.FAMILY_ALL)
		if err != nil {
			return fmt.Errorf("list addresses of %s in %s: %w", ifname, nsPath, err)
		}
		for _, a := range addrs {
			if p, ok := toPrefix(a.IPNet); ok && !p.Addr().IsLinkLocalUnicast() {
				in.Addrs = append(in.Addrs, p)
			}
		}
		rs, err := nlsafe.RouteList(h, l, netlink.FAMILY_ALL)
		if err != nil {
			return fmt.Errorf("list routes of %s in %s: %w", ifname, nsPath, err)
		}
		for _, r := range rs {
			if (r.Dst == nil || r.Dst.IP.IsUnspecified() && isZeroMask(r.Dst.Mask)) && r.Gw != nil {
				if gw, ok := netip.AddrFromSlice(r.Gw); ok {
					in.Routes = append(in.Routes, gw.Unmap())
				}
			}
		}
		return nil
	})
	return in, err
}
