package fakekernel

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"

	"github.com/netalias/netalias/agent/link"
)

// The inspection the CNI CHECK needs (agent.Inspector).

// SetIface replaces interface ifname of namespace nsPath (a test breaking
// an attachment: dropping an address or a route).
func (k *Kernel) SetIface(nsPath, ifname string, in Iface) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.s.Netns[nsPath][ifname] = in
}

// SetLink replaces host link name.
func (k *Kernel) SetLink(name string, l Link) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.s.Links[name] = l
}

func (k *Kernel) HostLinkInfo(name string) (link.HostLink, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	l, ok := k.s.Links[name]
	if !ok {
		return link.HostLink{}, fmt.Errorf("find %s: %w", name, netlink.LinkNotFoundError{})
	}
	return link.HostLink{Master: l.Master, Up: l.Up}, nil
}

func (k *Kernel) IfaceInfo(nsPath, ifname string) (link.Iface, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	in, ok := k.s.Netns[nsPath][ifname]
	if !ok {
		return link.Iface{}, fmt.Errorf("find %s in %s: %w", ifname, nsPath, netlink.LinkNotFoundError{})
	}
	mac, _ := net.ParseMAC(in.MAC)
	return link.Iface{MAC: mac, Addrs: append(in.Addrs[:0:0], in.Addrs...), Routes: append(in.Routes[:0:0], in.Routes...)}, nil
}
