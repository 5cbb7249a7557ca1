package overlay

import (
	"bytes"
	"fmt"
	"net"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// fakeKernel is an in-memory namespace with the netlink semantics Ensure
// relies on: NeighSet replaces a MAC's first destination, NeighAppend adds
// one, NeighDel removes the one matching destination and VNI; a dump
// returns the VXLAN's own entries (NTF_SELF) and the bridge's (NTF_MASTER).
type fakeKernel struct {
	mu     sync.Mutex
	links  map[int]netlink.Link
	next   int
	neighs []netlink.Neigh
	writes []string // mutating calls, in order
}

func newFake() *fakeKernel { return &fakeKernel{links: map[int]netlink.Link{}, next: 1} }

func (f *fakeKernel) add(l netlink.Link) netlink.Link {
	f.mu.Lock()
	defer f.mu.Unlock()
	l.Attrs().Index = f.next
	f.next++
	f.links[l.Attrs().Index] = l
	return l
}

func (f *fakeKernel) log(format string, a ...any) {
	f.writes = append(f.writes, fmt.Sprintf(format, a...))
}

func (f *fakeKernel) byName(name string) netlink.Link {
	for _, l := range f.links {
		if l.Attrs().Name == name {
			return l
		}
	}
	return nil
}

func (f *fakeKernel) LinkByName(name string) (netlink.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l := f.byName(name); l != nil {
		return l, nil
	}
	return nil, netlink.LinkNotFoundError{}
}

func (f *fakeKernel) LinkByIndex(i int) (netlink.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l, ok := f.links[i]; ok {
		return l, nil
	}
	return nil, netlink.LinkNotFoundError{}
}

func (f *fakeKernel) LinkList() ([]netlink.Link, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netlink.Link
	for _, l := range f.links {
		out = append(out, l)
	}
	return out, nil
}

func (f *fakeKernel) LinkAdd(l netlink.Link) error {
	f.mu.Lock()
	if f.byName(l.Attrs().Name) != nil {
		f.mu.Unlock()
		return unix.EEXIST
	}
	f.log("add %s", l.Attrs().Name)
	f.mu.Unlock()
	f.add(l)
	return nil
}

func (f *fakeKernel) LinkDel(l netlink.Link) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := l.Attrs().Index
	if _, ok := f.links[i]; !ok {
		return netlink.LinkNotFoundError{}
	}
	f.log("del %s", l.Attrs().Name)
	delete(f.links, i)
	keep := f.neighs[:0]
	for _, n := range f.neighs {
		if n.LinkIndex != i {
			keep = append(keep, n)
		}
	}
	f.neighs = keep
	return nil
}

func (f *fakeKernel) LinkSetMaster(l, m netlink.Link) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("master %s %s", l.Attrs().Name, m.Attrs().Name)
	l.Attrs().MasterIndex = m.Attrs().Index
	return nil
}

func (f *fakeKernel) LinkSetMTU(l netlink.Link, mtu int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("mtu %s %d", l.Attrs().Name, mtu)
	l.Attrs().MTU = mtu
	return nil
}

func (f *fakeKernel) LinkSetUp(l netlink.Link) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("up %s", l.Attrs().Name)
	l.Attrs().Flags |= net.FlagUp
	return nil
}

func (f *fakeKernel) LinkSetAlias(l netlink.Link, a string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log("alias %s %s", l.Attrs().Name, a)
	l.Attrs().Alias = a
	return nil
}

func (f *fakeKernel) AddrList(l netlink.Link, family int) ([]netlink.Addr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	// The underlay "eth0" holds 10.0.0.1 (see newHost).
	if u := f.byName("eth0"); u != nil && family != netlink.FAMILY_V6 {
		return []netlink.Addr{{IPNet: &net.IPNet{IP: net.IPv4(10, 0, 0, 1).To4(), Mask: net.CIDRMask(24, 32)}, LinkIndex: u.Attrs().Index}}, nil
	}
	return nil, nil
}

func (f *fakeKernel) NeighList(dev, family int) ([]netlink.Neigh, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netlink.Neigh
	for _, n := range f.neighs {
		if (dev == 0 || n.LinkIndex == dev) && n.Family == family {
			out = append(out, n)
		}
	}
	return out, nil
}

func (f *fakeKernel) checkNeigh(n *netlink.Neigh) error {
	if n.Family != unix.AF_BRIDGE || n.Flags != netlink.NTF_SELF {
		return fmt.Errorf("fake: neighbour %s: want AF_BRIDGE + NTF_SELF, got family %d flags %#x", n, n.Family, n.Flags)
	}
	if _, ok := f.links[n.LinkIndex].(*netlink.Vxlan); !ok {
		return unix.ENODEV
	}
	return nil
}

func (f *fakeKernel) NeighSet(n *netlink.Neigh) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.checkNeigh(n); err != nil {
		return err
	}
	f.log("set %s %s", n.HardwareAddr, n.IP)
	for i, e := range f.neighs {
		if e.LinkIndex == n.LinkIndex && bytes.Equal(e.HardwareAddr, n.HardwareAddr) && e.Flags&netlink.NTF_MASTER == 0 {
			f.neighs[i] = *n
			return nil
		}
	}
	f.neighs = append(f.neighs, *n)
	return nil
}

func (f *fakeKernel) NeighAppend(n *netlink.Neigh) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.checkNeigh(n); err != nil {
		return err
	}
	f.log("append %s %s", n.HardwareAddr, n.IP)
	for _, e := range f.neighs {
		if e.LinkIndex == n.LinkIndex && bytes.Equal(e.HardwareAddr, n.HardwareAddr) && e.IP.Equal(n.IP) && e.Flags&netlink.NTF_MASTER == 0 {
			return unix.EEXIST
		}
	}
	f.neighs = append(f.neighs, *n)
	return nil
}

func (f *fakeKernel) NeighDel(n *netlink.Neigh) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.checkNeigh(n); err != nil {
		return err
	}
	f.log("delneigh %s %s", n.HardwareAddr, n.IP)
	for i, e := range f.neighs {
		if e.LinkIndex == n.LinkIndex && bytes.Equal(e.HardwareAddr, n.HardwareAddr) && e.IP.Equal(n.IP) && e.VNI == n.VNI && e.Flags&netlink.NTF_MASTER == 0 {
			f.neighs = append(f.neighs[:i], f.neighs[i+1:]...)
			return nil
		}
	}
	return unix.ENOENT
}

// newHost is a fake namespace with an underlay eth0 (MTU 1500, 10.0.0.1)
// and a bridge na-test.
func newHost() *fakeKernel {
	f := newFake()
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU = "eth0", 1500
	f.add(&netlink.Device{LinkAttrs: la})
	lb := netlink.NewLinkAttrs()
	lb.Name, lb.MTU = "na-test", 1500
	f.add(&netlink.Bridge{LinkAttrs: lb})
	return f
}
