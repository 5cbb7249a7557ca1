// Package overlay is the VXLAN data plane of a cluster network: one VXLAN
// device per network, enslaved to the network's bridge, with learning off
// and a forwarding table programmed from what the cluster knows (a flood
// entry per remote host, a static entry per remote endpoint), as flannel
// and Docker's overlay driver do. Ensure is a level-triggered reconcile:
// it makes the device and the whole table match its input and deletes
// everything else, so stale entries (moby#52661) never pile up.
//
// The package knows neither etcd nor the agent: it is fed plain values and
// works in one network namespace through a netlink handle.
package overlay

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"

	"github.com/netalias/netalias/internal/nlsafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultPort is the IANA VXLAN port (the kernel's own default is the
// pre-standard 8472, which some hypervisors drop: flannel-io/flannel#2388).
const DefaultPort = 4789

// Encapsulation overhead of VXLAN: outer IP + UDP (8) + VXLAN (8) +
// inner Ethernet (14) headers.
const (
	EncapV4 = 50 // 20-byte IPv4 outer header
	EncapV6 = 70 // 40-byte IPv6 outer header
)

// aliasPrefix marks our devices (IFLA_IFALIAS "netalias-overlay:NETWORK"),
// so Remove and Networks find them after a restart and Ensure never takes
// over a device it did not make.
const aliasPrefix = "netalias-overlay:"

// Peer is a remote host with members on the network.
type Peer struct {
	Host string
	VTEP netip.Addr // its underlay address
}

// Remote is an endpoint of the network on another host.
type Remote struct {
	Host       string
	MAC        net.HardwareAddr
	IPv4, IPv6 netip.Addr // for messages; the data plane is L2
}

// NetworkSpec describes one network's overlay on this host.
type NetworkSpec struct {
	Name     string     // network name (recorded on the device)
	Bridge   string     // the network's bridge; must exist
	VNI      uint32     // 1 … 2^24-1, the same on every host
	Port     int        // UDP port; 0 means DefaultPort
	MTU      int        // 0: underlay MTU minus the encapsulation
	Local    netip.Addr // this host's VTEP address
	Underlay string     // underlay device; "": the device holding Local
}

// Overlay programs the VXLAN devices of one network namespace. Its
// methods may be called from several goroutines; they run one at a time.
type Overlay struct {
	mu     sync.Mutex
	k      Kernel
	closer func()
}

// New returns an Overlay driving k (a *netlink.Handle bound to the
// namespace to program, or a fake in tests).
func New(k Kernel) *Overlay { return &Overlay{k: k} }

// Close releases the handle OpenAt made.
func (o *Overlay) Close() {
	if o.closer != nil {
		o.closer()
	}
}

// DeviceName is the VXLAN device of a VNI: "nvx" + VNI in hex (at most 9
// bytes). A VNI can only be used once per namespace and port anyway.
func DeviceName(vni uint32) string { return fmt.Sprintf("nvx%x", vni) }

// MTUFor is the MTU of an overlay over an underlay of underlayMTU bytes.
func MTUFor(underlayMTU int, v6 bool) int {
	if v6 {
		return underlayMTU - EncapV6
	}
	return underlayMTU - EncapV4
}

func (s NetworkSpec) port() int {
	if s.Port == 0 {
		return DefaultPort
	}
	return s.Port
}

func (s NetworkSpec) validate() error {
	switch {
	case s.Name == "":
		return errors.New("overlay: network name is empty")
	case s.Bridge == "":
		return fmt.Errorf("overlay of network %s: bridge name is empty", s.Name)
	case s.VNI == 0 || s.VNI >= 1<<24:
		return fmt.Errorf("overlay of network %s: VNI %d out of range 1-16777215", s.Name, s.VNI)
	case s.Port < 0 || s.Port > 65535:
		return fmt.Errorf("overlay of network %s: UDP port %d out of range 1-65535", s.Name, s.Port)
	case s.MTU != 0 && (s.MTU < 68 || s.MTU > 65535):
		return fmt.Errorf("overlay of network %s: MTU %d out of range 68-65535", s.Name, s.MTU)
	case !s.Local.IsValid() || s.Local.IsUnspecified():
		return fmt.Errorf("overlay of network %s: no local VTEP address", s.Name)
	}
	return nil
}

func checkPeers(s NetworkSpec, peers []Peer) error {
	seen := map[string]netip.Addr{}
	for _, p := range peers {
		if !p.VTEP.IsValid() || p.VTEP.IsUnspecified() {
			return fmt.Errorf("overlay of network %s: peer %q has no VTEP address", s.Name, p.Host)
		}
		if p.VTEP.Is4() != s.Local.Is4() {
			return fmt.Errorf("overlay of network %s: peer %q VTEP %s is not of the local VTEP's family (%s)", s.Name, p.Host, p.VTEP, s.Local)
		}
		if v, dup := seen[p.Host]; dup && v != p.VTEP {
			return fmt.Errorf("overlay of network %s: peer %q listed with VTEPs %s and %s", s.Name, p.Host, v, p.VTEP)
		}
		seen[p.Host] = p.VTEP
	}
	return nil
}

// MTU is the MTU of spec's overlay: spec.MTU if set, else the underlay
// device's MTU minus the encapsulation (1450 on a 1500-byte IPv4
// underlay). The agent gives the bridge's veths the same MTU: a bigger
// frame is dropped silently by the bridge at the VXLAN port.
func (o *Overlay) MTU(spec NetworkSpec) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if spec.MTU != 0 {
		return spec.MTU, nil
	}
	u, err := o.underlay(spec)
	if err != nil {
		return 0, err
	}
	return MTUFor(u.Attrs().MTU, spec.Local.Is6()), nil
}

// underlay is spec.Underlay, or the device holding the local VTEP address.
func (o *Overlay) underlay(spec NetworkSpec) (netlink.Link, error) {
	if spec.Underlay != "" {
		l, err := o.k.LinkByName(spec.Underlay)
		if err != nil {
			return nil, fmt.Errorf("overlay of network %s: underlay device %s: %w", spec.Name, spec.Underlay, err)
		}
		return l, nil
	}
	fam := netlink.FAMILY_V4
	if spec.Local.Is6() {
		fam = netlink.FAMILY_V6
	}
	addrs, err := nlsafe.Retry(func() ([]netlink.Addr, error) { return o.k.AddrList(nil, fam) })
	if err != nil {
		return nil, fmt.Errorf("overlay of network %s: list addresses: %w", spec.Name, err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == spec.Local {
			l, err := o.k.LinkByIndex(a.LinkIndex)
			if err != nil {
				return nil, fmt.Errorf("overlay of network %s: device of local VTEP %s: %w", spec.Name, spec.Local, err)
			}
			return l, nil
		}
	}
	return nil, fmt.Errorf("overlay of network %s: local VTEP %s is not an address of this host", spec.Name, spec.Local)
}

// Ensure makes this host's overlay of spec.Name match the input, from
// scratch or from any earlier state: the VXLAN device (created, or
// re-created when its VNI, port, source, underlay or learning differ),
// enslaved to the bridge and up; bridge and device at the overlay MTU; a
// flood entry per peer and a static entry per remote endpoint of a peer,
// every other entry deleted. peers and remotes are the whole truth (they
// may include this host: it is skipped by its VTEP). It is idempotent;
// call it on every change of the cluster view and periodically.
//
// A bad spec or peer list is an error and changes nothing. Endpoint
// records in conflict (one MAC on two hosts, a bad MAC) are left out and
// reported in the error after everything else is applied.
func (o *Overlay) Ensure(spec NetworkSpec, peers []Peer, remotes []Remote) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if err := spec.validate(); err != nil {
		return err
	}
	if err := checkPeers(spec, peers); err != nil {
		return err
	}
	br, err := o.k.LinkByName(spec.Bridge)
	if err != nil {
		return fmt.Errorf("overlay of network %s: bridge %s: %w", spec.Name, spec.Bridge, err)
	}
	if br.Type() != "bridge" {
		return fmt.Errorf("overlay of network %s: %s is a %s, not a bridge", spec.Name, spec.Bridge, br.Type())
	}
	u, err := o.underlay(spec)
	if err != nil {
		return err
	}
	mtu := spec.MTU
	if mtu == 0 {
		mtu = MTUFor(u.Attrs().MTU, spec.Local.Is6())
	}
	want, conflicts := desired(spec.Local, peers, remotes)

	dev, err := o.device(spec, br, u, mtu)
	if err != nil {
		return err
	}
	// The bridge must not take frames the VXLAN port cannot carry.
	if br.Attrs().MTU != mtu {
		if err := o.k.LinkSetMTU(br, mtu); err != nil {
			return fmt.Errorf("overlay of network %s: set MTU %d on bridge %s: %w", spec.Name, mtu, spec.Bridge, err)
		}
	}
	if err := o.syncFDB(spec, dev.Attrs().Index, want); err != nil {
		return err
	}
	if len(conflicts) > 0 {
		return fmt.Errorf("overlay of network %s: %w", spec.Name, errors.Join(conflicts...))
	}
	return nil
}

// device returns spec's VXLAN device, created or corrected.
func (o *Overlay) device(spec NetworkSpec, br, u netlink.Link, mtu int) (netlink.Link, error) {
	name := DeviceName(spec.VNI)
	l, err := o.k.LinkByName(name)
	switch {
	case err == nil:
		vx, ok := l.(*netlink.Vxlan)
		if !ok || !strings.HasPrefix(l.Attrs().Alias, aliasPrefix) {
			return nil, fmt.Errorf("overlay of network %s: a link %s (%s) exists that netalias did not make", spec.Name, name, l.Type())
		}
		if matches(vx, spec, u) && l.Attrs().Alias == aliasPrefix+spec.Name {
			return l, o.fix(spec, l, br, mtu)
		}
		// Wrong parameters, or left by an older network with this VNI: the
		// kernel cannot change a VXLAN's identity in place.
		if err := o.k.LinkDel(l); err != nil && !notFound(err) {
			return nil, fmt.Errorf("overlay of network %s: delete outdated %s: %w", spec.Name, name, err)
		}
	case !notFound(err):
		return nil, fmt.Errorf("overlay of network %s: %s: %w", spec.Name, name, err)
	}
	la := netlink.NewLinkAttrs()
	la.Name = name
	la.MTU = mtu
	vx := &netlink.Vxlan{
		LinkAttrs:    la,
		VxlanId:      int(spec.VNI),
		VtepDevIndex: u.Attrs().Index,
		SrcAddr:      spec.Local.AsSlice(),
		Port:         spec.port(),
		Learning:     false,
	}
	if err := o.k.LinkAdd(vx); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("overlay of network %s: create %s: VNI %d on port %d is taken by another device: %w", spec.Name, name, spec.VNI, spec.port(), err)
		}
		return nil, fmt.Errorf("overlay of network %s: create %s: %w", spec.Name, name, err)
	}
	l, err = o.k.LinkByName(name)
	if err == nil {
		err = o.k.LinkSetAlias(l, aliasPrefix+spec.Name)
	}
	if err == nil {
		err = o.fix(spec, l, br, mtu)
	}
	if err != nil {
		if l != nil {
			_ = o.k.LinkDel(l)
		}
		return nil, fmt.Errorf("overlay of network %s: set up %s: %w", spec.Name, name, err)
	}
	return l, nil
}

// matches reports whether an existing device has the identity spec asks.
func matches(vx *netlink.Vxlan, spec NetworkSpec, u netlink.Link) bool {
	src, _ := netip.AddrFromSlice(vx.SrcAddr)
	return vx.VxlanId == int(spec.VNI) && vx.Port == spec.port() && src.Unmap() == spec.Local &&
		!vx.Learning && vx.VtepDevIndex == u.Attrs().Index
}

// fix applies the mutable settings: MTU, master, up.
func (o *Overlay) fix(spec NetworkSpec, l, br netlink.Link, mtu int) error {
	a := l.Attrs()
	if a.MTU != mtu {
		if err := o.k.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("overlay of network %s: set MTU %d on %s: %w", spec.Name, mtu, a.Name, err)
		}
	}
	if a.MasterIndex != br.Attrs().Index {
		if err := o.k.LinkSetMaster(l, br); err != nil {
			return fmt.Errorf("overlay of network %s: enslave %s to %s: %w", spec.Name, a.Name, spec.Bridge, err)
		}
	}
	if a.Flags&net.FlagUp == 0 {
		if err := o.k.LinkSetUp(l); err != nil {
			return fmt.Errorf("overlay of network %s: bring %s up: %w", spec.Name, a.Name, err)
		}
	}
	return nil
}

func (o *Overlay) syncFDB(spec NetworkSpec, dev int, want map[entry]bool) error {
	neighs, err := nlsafe.Retry(func() ([]netlink.Neigh, error) { return o.k.NeighList(dev, unix.AF_BRIDGE) })
	if err != nil {
		return fmt.Errorf("overlay of network %s: list forwarding entries of %s: %w", spec.Name, DeviceName(spec.VNI), err)
	}
	p := diff(want, actual(neighs, dev))
	for _, c := range p.Del {
		if err := o.k.NeighDel(&c.del); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("overlay of network %s: delete forwarding entry %s on %s: %w", spec.Name, c.entry, DeviceName(spec.VNI), err)
		}
	}
	for _, e := range p.Add {
		add := o.k.NeighSet
		if e.flood() {
			add = o.k.NeighAppend // several VTEPs under one MAC
		}
		if err := add(neigh(dev, e)); err != nil {
			return fmt.Errorf("overlay of network %s: add forwarding entry %s on %s: %w", spec.Name, e, DeviceName(spec.VNI), err)
		}
	}
	return nil
}

// Remove deletes network's VXLAN device (found by the mark Ensure leaves
// on it, so it works after a restart); its forwarding table goes with it.
// No device is not an error. The bridge is the agent's.
func (o *Overlay) Remove(network string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	links, err := nlsafe.Retry(o.k.LinkList)
	if err != nil {
		return fmt.Errorf("overlay of network %s: list links: %w", network, err)
	}
	for _, l := range links {
		if l.Type() == "vxlan" && l.Attrs().Alias == aliasPrefix+network {
			if err := o.k.LinkDel(l); err != nil && !notFound(err) {
				return fmt.Errorf("overlay of network %s: delete %s: %w", network, l.Attrs().Name, err)
			}
		}
	}
	return nil
}

// Networks lists the networks that have an overlay device here, so that a
// resync can Remove those the cluster no longer has.
func (o *Overlay) Networks() ([]string, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	links, err := nlsafe.Retry(o.k.LinkList)
	if err != nil {
		return nil, fmt.Errorf("overlay: list links: %w", err)
	}
	var out []string
	for _, l := range links {
		if n, ok := strings.CutPrefix(l.Attrs().Alias, aliasPrefix); ok && l.Type() == "vxlan" {
			out = append(out, n)
		}
	}
	return out, nil
}

func notFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, unix.ENODEV)
}
