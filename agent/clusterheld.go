package agent

import (
	"fmt"
	"maps"
	"net/netip"

	"github.com/netalias/netalias/agent/ipam"
	"github.com/netalias/netalias/overlay"
	"github.com/netalias/netalias/state"
)

// What cluster networks need in both builds: a host cut off from etcd, or
// running the light build (cluster_lite.go), still attaches containers to
// a cluster network from the address blocks it holds.

// allocFromHeld chooses an endpoint's IPv4 address on cluster network f
// from the blocks this host holds: the requested one, else the name's
// lease when it is in a held block and free, else the first free address
// (addresses leased to other names last). No address and no error: every
// held block is full; used is then what a new block must avoid.
func allocFromHeld(f *state.File, name string, req connectRequest) (a netip.Addr, used map[netip.Addr]bool, err error) {
	n := f.Network
	used = map[netip.Addr]bool{n.Gateway: true}
	for _, ep := range f.Endpoints {
		used[ep.IPv4] = true
	}
	inHeld := func(a netip.Addr) bool {
		for _, b := range n.Cluster.Blocks {
			if b.Contains(a) {
				return true
			}
		}
		return false
	}
	if a := req.ip4; a.IsValid() {
		if !n.Subnet.Contains(a) {
			return a, used, fmt.Errorf("--ip %s is outside network %q's subnet %s", a, n.Name, n.Subnet)
		}
		if !inHeld(a) {
			return a, used, fmt.Errorf("--ip %s is not in an address block this host holds on cluster network %q (%v)", a, n.Name, n.Cluster.Blocks)
		}
		if used[a] {
			return a, used, fmt.Errorf("--ip %s is already in use on network %q", a, n.Name)
		}
		return a, used, nil
	}
	if l := f.Leases[name].IPv4; l.IsValid() && inHeld(l) && !used[l] {
		return l, used, nil
	}
	// Addresses remembered for other names are kept for them while a
	// block still has room.
	withLeases := maps.Clone(used)
	for who, l := range f.Leases {
		if who != name {
			withLeases[l.IPv4] = true
		}
	}
	if a, ok := ipam.AllocFromBlocks(n.Subnet, n.Cluster.Blocks, withLeases); ok {
		return a, used, nil
	}
	if a, ok := ipam.AllocFromBlocks(n.Subnet, n.Cluster.Blocks, used); ok {
		return a, used, nil
	}
	return netip.Addr{}, used, nil
}

// errBlocksFull is allocFromHeld's "full" without etcd to claim from.
func errBlocksFull(network string) error {
	return fmt.Errorf("network %q: every address block this host holds is full, and claiming another needs cluster mode (--etcd)", network)
}

// overlayPort is a network's VXLAN port (0 in the state: the default).
func overlayPort(p int) int {
	if p == 0 {
		return overlay.DefaultPort
	}
	return p
}
