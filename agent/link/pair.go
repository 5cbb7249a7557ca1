package link

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Pair describes a veth pair whose two ends are born in the host
// namespace: the host end up on Bridge, the peer down and unconfigured,
// for a runtime (Docker) to move into a namespace that may not exist yet,
// rename and address itself.
type Pair struct {
	HostName string
	PeerName string
	Bridge   string
	MTU      int
	MAC      net.HardwareAddr // of the peer
}

// CreatePair makes the pair. On error nothing is left behind (or the
// error says what was).
func CreatePair(p Pair) (err error) {
	br, err := netlink.LinkByName(p.Bridge)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", p.Bridge, err)
	}
	la := netlink.NewLinkAttrs()
	la.Name = p.HostName
	la.MTU = p.MTU
	la.MasterIndex = br.Attrs().Index
	veth := &netlink.Veth{LinkAttrs: la, PeerName: p.PeerName, PeerHardwareAddr: p.MAC, PeerMTU: uint32(p.MTU)}
	if err := netlink.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create veth %s/%s: an interface with that name exists", p.HostName, p.PeerName)
		}
		return fmt.Errorf("create veth %s (peer %s): %w", p.HostName, p.PeerName, err)
	}
	// Up after the add: a link created up before its master is set would
	// briefly forward nothing anyway, but the host end must be up for the
	// peer to get carrier once Docker brings it up inside.
	if err := netlink.LinkSetUp(veth); err != nil {
		if derr := netlink.LinkDel(veth); derr != nil && !NotFound(derr) {
			err = errors.Join(err, fmt.Errorf("undo: delete veth %s: %w (left behind)", p.HostName, derr))
		}
		return fmt.Errorf("bring %s up: %w", p.HostName, err)
	}
	return nil
}

// UnplugHost makes a pair whose peer is out of reach (moved into a
// namespace by a runtime, renamed, maybe moved back) unreachable at once
// from the host side alone: the host end goes down, leaves its bridge and
// joins link group group for the reaper (see Unplug). Deleting the host
// end later deletes the peer wherever it is. A missing link is fine.
func UnplugHost(hostName string, group uint32) error {
	hl, err := netlink.LinkByName(hostName)
	if err != nil {
		if NotFound(err) {
			return nil
		}
		return fmt.Errorf("find %s: %w", hostName, err)
	}
	if err := netlink.LinkSetDown(hl); err != nil && !NotFound(err) {
		return fmt.Errorf("bring %s down: %w", hostName, err)
	}
	if err := netlink.LinkSetNoMaster(hl); err != nil && !NotFound(err) {
		return fmt.Errorf("unplug %s from its bridge: %w", hostName, err)
	}
	if group != 0 {
		if err := netlink.LinkSetGroup(hl, int(group)); err != nil && !NotFound(err) {
			return fmt.Errorf("move %s to link group %d: %w", hostName, group, err)
		}
	}
	return nil
}

// PeerOf returns the name of hostName's veth peer when the peer is in the
// host namespace too ("" when it was moved into another namespace or the
// link is not a veth), so that a runtime's pair can be found again after
// the runtime renamed or moved its end.
func PeerOf(hostName string) (string, error) {
	hl, err := netlink.LinkByName(hostName)
	if err != nil {
		return "", fmt.Errorf("find %s: %w", hostName, err)
	}
	if _, ok := hl.(*netlink.Veth); !ok {
		return "", nil
	}
	if hl.Attrs().NetNsID >= 0 {
		return "", nil // the peer lives in another namespace
	}
	idx, err := netlink.VethPeerIndex(hl.(*netlink.Veth))
	if err != nil {
		return "", fmt.Errorf("peer of %s: %w", hostName, err)
	}
	pl, err := netlink.LinkByIndex(idx)
	if err != nil {
		if NotFound(err) {
			return "", nil
		}
		return "", fmt.Errorf("peer of %s: %w", hostName, err)
	}
	return pl.Attrs().Name, nil
}
