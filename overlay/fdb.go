package overlay

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"sort"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// floodMAC is the all-zero address: in a VXLAN device's table its entries
// are the head-end replication list (broadcast, multicast, unknown
// unicast go to every remote VTEP listed under it).
const floodMAC = "00:00:00:00:00:00"

// entry is one forwarding entry of a VXLAN device: frames for MAC are sent
// to VTEP. MAC floodMAC is a flood entry; a MAC may have several VTEPs
// only in the flood list.
type entry struct {
	MAC  string // net.HardwareAddr.String() form
	VTEP netip.Addr
}

func (e entry) String() string { return e.MAC + " dst " + e.VTEP.String() }

func (e entry) flood() bool { return e.MAC == floodMAC }

// current is an entry as the kernel holds it, with the message to delete
// exactly that one (the remote's VNI must match for the kernel to find it).
type current struct {
	entry
	del netlink.Neigh
	ok  bool // a form Ensure would have written (permanent, default VNI)
}

// plan is what brings the table to the desired state: deletions are
// applied first, so a MAC that moved hosts never has two destinations.
type plan struct {
	Del []current
	Add []entry
}

// desired computes the table a network's VXLAN device must hold: a flood
// entry for every peer VTEP but our own, and a unicast entry for every
// remote endpoint on such a peer. Endpoints of hosts that are not peers
// (departed, dead: their records may outlive them in the watch) and of
// this host are left out. A MAC claimed from two VTEPs is left out and
// reported: the two records are in conflict and neither can be trusted.
func desired(local netip.Addr, peers []Peer, remotes []Remote) (map[entry]bool, []error) {
	want := map[entry]bool{}
	vtep := map[string]netip.Addr{}
	for _, p := range peers {
		vtep[p.Host] = p.VTEP
		if p.VTEP != local {
			want[entry{floodMAC, p.VTEP}] = true
		}
	}
	var errs []error
	owner := map[string]Remote{}
	bad := map[string]bool{}
	// Sorted for deterministic error messages.
	rs := append([]Remote(nil), remotes...)
	sort.SliceStable(rs, func(i, j int) bool { return rs[i].Host < rs[j].Host })
	for _, r := range rs {
		v, ok := vtep[r.Host]
		if !ok || v == local {
			continue
		}
		if !unicastMAC(r.MAC) {
			errs = append(errs, fmt.Errorf("remote endpoint %s on host %s: MAC %q is not a unicast Ethernet address", remoteIP(r), r.Host, r.MAC))
			continue
		}
		mac := r.MAC.String()
		if prev, dup := owner[mac]; dup {
			if vtep[prev.Host] != v && !bad[mac] {
				bad[mac] = true
				errs = append(errs, fmt.Errorf("MAC %s is claimed by endpoint %s on host %s and by endpoint %s on host %s: left out until one goes", mac, remoteIP(prev), prev.Host, remoteIP(r), r.Host))
			}
			continue
		}
		owner[mac] = r
		want[entry{mac, v}] = true
	}
	for mac := range bad {
		delete(want, entry{mac, vtep[owner[mac].Host]})
	}
	return want, errs
}

func remoteIP(r Remote) string {
	switch {
	case r.IPv4.IsValid():
		return r.IPv4.String()
	case r.IPv6.IsValid():
		return r.IPv6.String()
	}
	return "(no address)"
}

func unicastMAC(m net.HardwareAddr) bool {
	return len(m) == 6 && m[0]&1 == 0 && !bytes.Equal(m, make([]byte, 6))
}

// actual extracts the VXLAN device's own entries (NTF_SELF) from an
// AF_BRIDGE dump; the bridge's entries for the same port (NTF_MASTER:
// learnt MACs, the port's own address) are the bridge's business.
func actual(neighs []netlink.Neigh, dev int) []current {
	var out []current
	for _, n := range neighs {
		if n.LinkIndex != dev || n.Family != unix.AF_BRIDGE || n.Flags&netlink.NTF_MASTER != 0 || n.MasterIndex != 0 {
			continue
		}
		ip, _ := netip.AddrFromSlice(n.IP)
		c := current{
			entry: entry{MAC: n.HardwareAddr.String(), VTEP: ip.Unmap()},
			del: netlink.Neigh{LinkIndex: dev, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
				IP: n.IP, HardwareAddr: n.HardwareAddr, VNI: n.VNI},
			ok: n.State&netlink.NUD_PERMANENT != 0 && n.VNI == 0,
		}
		out = append(out, c)
	}
	return out
}

// diff compares the desired table with the kernel's. An entry present in
// a form Ensure would not write (not permanent, another VNI) is replaced.
func diff(want map[entry]bool, have []current) plan {
	var p plan
	seen := map[entry]bool{}
	for _, c := range have {
		if want[c.entry] && c.ok && !seen[c.entry] {
			seen[c.entry] = true
			continue
		}
		p.Del = append(p.Del, c)
	}
	for e := range want {
		if !seen[e] {
			p.Add = append(p.Add, e)
		}
	}
	sort.Slice(p.Add, func(i, j int) bool {
		if p.Add[i].MAC != p.Add[j].MAC {
			return p.Add[i].MAC < p.Add[j].MAC
		}
		return p.Add[i].VTEP.Less(p.Add[j].VTEP)
	})
	return p
}

// neigh is the netlink message that writes e on device dev.
func neigh(dev int, e entry) *netlink.Neigh {
	mac, _ := net.ParseMAC(e.MAC)
	return &netlink.Neigh{
		LinkIndex:    dev,
		Family:       unix.AF_BRIDGE,
		Flags:        netlink.NTF_SELF,
		State:        netlink.NUD_PERMANENT,
		HardwareAddr: mac,
		IP:           e.VTEP.AsSlice(),
	}
}
