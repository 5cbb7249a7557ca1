package overlay

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Kernel is the seam between the reconcile logic and netlink: the calls
// Ensure and Remove make, all bound to one network namespace.
// *netlink.Handle implements it; tests without root use a fake.
type Kernel interface {
	LinkByName(name string) (netlink.Link, error)
	LinkByIndex(index int) (netlink.Link, error)
	LinkList() ([]netlink.Link, error)
	LinkAdd(link netlink.Link) error
	LinkDel(link netlink.Link) error
	LinkSetMaster(link, master netlink.Link) error
	LinkSetMTU(link netlink.Link, mtu int) error
	LinkSetUp(link netlink.Link) error
	LinkSetAlias(link netlink.Link, alias string) error
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
	NeighList(linkIndex, family int) ([]netlink.Neigh, error)
	NeighAppend(neigh *netlink.Neigh) error
	NeighSet(neigh *netlink.Neigh) error
	NeighDel(neigh *netlink.Neigh) error
}

var _ Kernel = (*netlink.Handle)(nil)

// OpenAt returns an Overlay working in the network namespace at nsPath
// ("" for the caller's namespace) through a netlink handle bound to it:
// the calling thread never switches namespace. Close releases the handle.
func OpenAt(nsPath string) (*Overlay, error) {
	if nsPath == "" {
		h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
		if err != nil {
			return nil, fmt.Errorf("overlay: netlink handle: %w", err)
		}
		return &Overlay{k: h, closer: h.Close}, nil
	}
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("overlay: open namespace %s: %w", nsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("overlay: netlink handle in %s: %w", nsPath, err)
	}
	return &Overlay{k: h, closer: h.Close}, nil
}
