package cni

import (
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
)

// buildResult is the Result of an ADD: the host veth (no sandbox, for
// bandwidth and portmap), the container interface (sandbox = netns), its
// addresses, the default routes when set, and dns with the gateway as
// nameserver and the network as search domain.
//
// Chained after another plugin (netalias is meant to come first), prev's
// interfaces, ips and routes are kept and ours appended (indices shifted);
// prev's dns comes first, ours is appended without duplicates.
func buildResult(a *Attachment, netns string, prev *types100.Result) *types100.Result {
	r := &types100.Result{CNIVersion: types100.ImplementedSpecVersion}
	if prev != nil {
		r.Interfaces = append(r.Interfaces, prev.Interfaces...)
		r.IPs = append(r.IPs, prev.IPs...)
		r.Routes = append(r.Routes, prev.Routes...)
		r.DNS = *prev.DNS.Copy()
	}
	r.Interfaces = append(r.Interfaces,
		&types100.Interface{Name: a.HostVeth, Mac: macString(a.HostMAC)},
		&types100.Interface{Name: a.IfName, Mac: macString(a.MAC), Mtu: a.MTU, Sandbox: netns},
	)
	idx := len(r.Interfaces) - 1
	for _, p := range []struct {
		addr netip.Prefix
		gw   netip.Addr
		any  string
	}{{a.IPv4, a.Gateway4, "0.0.0.0/0"}, {a.IPv6, a.Gateway6, "::/0"}} {
		if !p.addr.IsValid() {
			continue
		}
		ipc := &types100.IPConfig{Interface: types100.Int(idx), Address: ipNet(p.addr)}
		if p.gw.IsValid() {
			ipc.Gateway = net.IP(p.gw.AsSlice())
		}
		r.IPs = append(r.IPs, ipc)
		if a.DefaultRoute && p.gw.IsValid() {
			r.Routes = append(r.Routes, &types.Route{Dst: ipNet(netip.MustParsePrefix(p.any)), GW: net.IP(p.gw.AsSlice())})
		}
	}
	if a.Gateway4.IsValid() && !slices.Contains(r.DNS.Nameservers, a.Gateway4.String()) {
		r.DNS.Nameservers = append(r.DNS.Nameservers, a.Gateway4.String())
	}
	if a.Network != "" && !slices.Contains(r.DNS.Search, a.Network) {
		r.DNS.Search = append(r.DNS.Search, a.Network)
	}
	return r
}

func ipNet(p netip.Prefix) net.IPNet {
	return net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func macString(m net.HardwareAddr) string {
	if m == nil {
		return ""
	}
	return m.String()
}

// compareWithPrev checks, for CHECK, that prevResult still describes the
// attachment: the container interface (name and sandbox), its MAC and its
// addresses. It returns an error wrapping ErrDamaged naming the mismatch.
func compareWithPrev(prev *types100.Result, a *Attachment, netns string) error {
	idx := -1
	for i, itf := range prev.Interfaces {
		if itf.Name == a.IfName && itf.Sandbox == netns {
			idx = i
			break
		}
	}
	if idx < 0 {
		return fmt.Errorf("network %q: prevResult lists no interface %s in %s: %w", a.Network, a.IfName, netns, ErrDamaged)
	}
	if m := prev.Interfaces[idx].Mac; m != "" && a.MAC != nil && m != a.MAC.String() {
		return fmt.Errorf("network %q: interface %s in %s has MAC %s, prevResult says %s: %w", a.Network, a.IfName, netns, a.MAC, m, ErrDamaged)
	}
	var want []string
	for _, ipc := range prev.IPs {
		if ipc.Interface != nil && *ipc.Interface == idx {
			want = append(want, ipc.Address.String())
		}
	}
	var have []string
	for _, p := range []netip.Prefix{a.IPv4, a.IPv6} {
		if p.IsValid() {
			n := ipNet(p)
			have = append(have, n.String())
		}
	}
	slices.Sort(want)
	slices.Sort(have)
	if !slices.Equal(want, have) {
		return fmt.Errorf("network %q: interface %s in %s has addresses %v, prevResult says %v: %w", a.Network, a.IfName, netns, have, want, ErrDamaged)
	}
	return nil
}
