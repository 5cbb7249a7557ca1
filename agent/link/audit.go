package link

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/netalias/netalias/agent/netns"
	"github.com/netalias/netalias/internal/nlsafe"
	"github.com/vishvananda/netlink"
)

// Info is what reconcile and `netalias check` read of a link.
type Info struct {
	Name   string
	Kind   string // "bridge", "veth", …
	Master string // host links: the bridge it is plugged into ("" none)
	Group  uint32 // host links: its link group
	// Peer is, for a veth inside a namespace, the name of its host side
	// ("" when it is not paired with a host link).
	Peer  string
	Up    bool
	MAC   net.HardwareAddr // host links only
	Addrs []netip.Prefix   // inside a namespace only (global scope)
}

// HostLinks lists the host's links by name (one dump).
func HostLinks() (map[string]Info, error) {
	links, err := nlsafe.LinkList(nil)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	byIndex := make(map[int]string, len(links))
	for _, l := range links {
		byIndex[l.Attrs().Index] = l.Attrs().Name
	}
	out := make(map[string]Info, len(links))
	for _, l := range links {
		a := l.Attrs()
		out[a.Name] = Info{Name: a.Name, Kind: l.Type(), Master: byIndex[a.MasterIndex], Group: a.Group,
			Up: a.Flags&1 != 0, MAC: a.HardwareAddr}
	}
	return out, nil
}

// NetnsLinks lists the links inside the namespace at nsPath with their
// addresses; a veth's Peer is its host side's name.
func NetnsLinks(nsPath string) ([]Info, error) {
	hostIdx := map[int]string{}
	host, err := nlsafe.LinkList(nil)
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	for _, l := range host {
		hostIdx[l.Attrs().Index] = l.Attrs().Name
	}
	var out []Info
	err = netns.WithHandle(nsPath, func(h *netlink.Handle) error {
		links, err := nlsafe.LinkList(h)
		if err != nil {
			return fmt.Errorf("list links in %s: %w", nsPath, err)
		}
		addrs, err := nlsafe.AddrList(h, nil, netlink.FAMILY_ALL)
		if err != nil {
			return fmt.Errorf("list addresses in %s: %w", nsPath, err)
		}
		for _, l := range links {
			a := l.Attrs()
			in := Info{Name: a.Name, Kind: l.Type(), Up: a.Flags&1 != 0}
			if in.Kind == "veth" && a.NetNsID >= 0 {
				in.Peer = hostIdx[a.ParentIndex]
			}
			for _, ad := range addrs {
				if ad.LinkIndex != a.Index || ad.Scope != int(netlink.SCOPE_UNIVERSE) {
					continue
				}
				if p, ok := toPrefix(ad.IPNet); ok {
					in.Addrs = append(in.Addrs, p)
				}
			}
			out = append(out, in)
		}
		return nil
	})
	return out, err
}

// Plug puts host veth veth (back) on bridge and up: a bridge restored
// after someone deleted it has lost its ports.
func Plug(veth, bridge string) error {
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", bridge, err)
	}
	l, err := netlink.LinkByName(veth)
	if err != nil {
		return fmt.Errorf("veth %s: %w", veth, err)
	}
	if err := netlink.LinkSetMaster(l, br); err != nil {
		return fmt.Errorf("plug %s into %s: %w", veth, bridge, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("bring %s up: %w", veth, err)
	}
	return nil
}
