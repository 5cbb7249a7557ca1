package overlay

// A throwaway three-host topology on the real kernel (root only; run under
// flock /tmp/netalias-kernel.lock). Everything lives in namespaces of its
// own, including the underlay switch: the root namespace of this machine
// has Docker's `filter FORWARD` with policy drop and br_netfilter on, which
// would drop the VXLAN packets crossing a root-namespace bridge (and
// opening it would mean editing Docker's chain). Addresses: underlay
// 10.207.0.0/24, overlay networks inside 10.207.16.0/20 (10.201–10.206 are
// taken by other tests).

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/netalias/netalias/internal/nlsafe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

type host struct {
	name string // h1…
	ns   string // namespace name
	vtep netip.Addr
	h    *netlink.Handle
	o    *Overlay
}

type ctr struct {
	name string
	ns   string
	host *host
	net  *tnet
	ip   netip.Addr
	mac  net.HardwareAddr
}

type tnet struct {
	spec     NetworkSpec // Local/Name filled per host
	subnet   netip.Prefix
	gw       map[string]netip.Addr // host name → its gateway on the network
	hosts    []*host
	internal bool
}

type topo struct {
	tb     testing.TB
	prefix string
	sw     string
	swh    *netlink.Handle
	hosts  []*host
	nets   map[string]*tnet
	ctrs   map[string]*ctr
	nsList []string
}

func nsPath(n string) string { return "/run/netns/" + n }

func (tp *topo) must(err error, what string, a ...any) {
	tp.tb.Helper()
	if err != nil {
		tp.tb.Fatalf("%s: %v", fmt.Sprintf(what, a...), err)
	}
}

func (tp *topo) addNS(suffix string) (string, *netlink.Handle) {
	tp.tb.Helper()
	name := tp.prefix + suffix
	out, err := exec.Command("ip", "netns", "add", name).CombinedOutput()
	tp.must(err, "ip netns add %s: %s", name, out)
	tp.nsList = append(tp.nsList, name)
	ns, err := netns.GetFromPath(nsPath(name))
	tp.must(err, "open %s", name)
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	tp.must(err, "handle in %s", name)
	tp.tb.Cleanup(h.Close)
	lo, err := h.LinkByName("lo")
	tp.must(err, "lo in %s", name)
	tp.must(h.LinkSetUp(lo), "lo up in %s", name)
	return name, h
}

func nsFd(tb testing.TB, name string) (netns.NsHandle, func()) {
	ns, err := netns.GetFromPath(nsPath(name))
	if err != nil {
		tb.Fatalf("open %s: %v", name, err)
	}
	return ns, func() { ns.Close() }
}

// exec runs a command inside namespace ns.
func (tp *topo) exec(ns string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	return string(out), err
}

func (tp *topo) mustExec(ns string, args ...string) string {
	tp.tb.Helper()
	out, err := tp.exec(ns, args...)
	tp.must(err, "in %s: %s: %s", ns, strings.Join(args, " "), out)
	return out
}

// newTopo builds the underlay: a switch namespace with bridge ul and
// three hosts at 10.207.0.11–13 (v6: fd00:207::11–13) on 1500-byte links, each with IPv4
// forwarding and a `filter FORWARD` chain with policy drop (ip and ip6),
// as Docker leaves it, br_netfilter being on in every namespace here.
func newTopo(tb testing.TB, v6 bool) *topo {
	b := make([]byte, 3)
	rand.Read(b)
	tp := &topo{tb: tb, prefix: "nat-ov" + hex.EncodeToString(b) + "-", nets: map[string]*tnet{}, ctrs: map[string]*ctr{}}
	tb.Cleanup(tp.cleanup)
	var swh *netlink.Handle
	tp.sw, swh = tp.addNS("sw")
	tp.swh = swh
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU = "ul", 1500
	tp.must(swh.LinkAdd(&netlink.Bridge{LinkAttrs: la}), "underlay bridge")
	ul, err := swh.LinkByName("ul")
	tp.must(err, "underlay bridge")
	tp.must(swh.LinkSetUp(ul), "underlay bridge up")
	for i := 1; i <= 3; i++ {
		hn := fmt.Sprintf("h%d", i)
		name, h := tp.addNS(hn)
		hs := &host{name: hn, ns: name, h: h, vtep: netip.AddrFrom4([4]byte{10, 207, 0, byte(10 + i)})}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: hs.vtep.AsSlice(), Mask: net.CIDRMask(24, 32)}}
		if v6 {
			hs.vtep = netip.MustParseAddr(fmt.Sprintf("fd00:207::%d", 10+i))
			addr = &netlink.Addr{IPNet: &net.IPNet{IP: hs.vtep.AsSlice(), Mask: net.CIDRMask(64, 128)}, Flags: unix.IFA_F_NODAD}
		}
		ns, closeNS := nsFd(tb, name)
		pa := netlink.NewLinkAttrs()
		pa.Name, pa.MTU, pa.MasterIndex, pa.Flags = "p"+hn, 1500, ul.Attrs().Index, net.FlagUp
		err := swh.LinkAdd(&netlink.Veth{LinkAttrs: pa, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ns)), PeerMTU: 1500})
		closeNS()
		tp.must(err, "underlay veth of %s", hn)
		eth, err := h.LinkByName("eth0")
		tp.must(err, "eth0 in %s", hn)
		tp.must(h.AddrAdd(eth, addr), "address of %s", hn)
		tp.must(h.LinkSetUp(eth), "eth0 up in %s", hn)
		tp.mustExec(name, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		cmd := exec.Command("ip", "netns", "exec", name, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(dockerForward)
		out, err := cmd.CombinedOutput()
		tp.must(err, "filter FORWARD policy drop in %s: %s", hn, out)
		if v, _ := tp.exec(name, "sysctl", "-n", "net.bridge.bridge-nf-call-iptables"); strings.TrimSpace(v) != "1" {
			tb.Fatalf("%s: br_netfilter is not on (bridge-nf-call-iptables=%q): the FORWARD checks would prove nothing", hn, v)
		}
		hs.o = New(h)
		tp.hosts = append(tp.hosts, hs)
	}
	return tp
}

// dockerForward is what Docker (iptables-nft) leaves on a host: filter
// FORWARD with policy drop.
const dockerForward = `table ip filter {
	chain FORWARD {
		type filter hook forward priority filter; policy drop;
	}
}
table ip6 filter {
	chain FORWARD {
		type filter hook forward priority filter; policy drop;
	}
}
`

func (tp *topo) host(n string) *host {
	for _, h := range tp.hosts {
		if h.name == n {
			return h
		}
	}
	tp.tb.Fatalf("no host %s", n)
	return nil
}

// addNet makes network name's bridge on each host (gateway .N of the
// subnet on host hN, as each host has its own gateway on a cluster
// network).
func (tp *topo) addNet(name, bridge string, vni uint32, subnet string, internal bool, hosts ...string) *tnet {
	tp.tb.Helper()
	n := &tnet{spec: NetworkSpec{Name: name, Bridge: bridge, VNI: vni}, subnet: netip.MustParsePrefix(subnet), gw: map[string]netip.Addr{}, internal: internal}
	for _, hn := range hosts {
		hs := tp.host(hn)
		la := netlink.NewLinkAttrs()
		la.Name = bridge
		tp.must(hs.h.LinkAdd(&netlink.Bridge{LinkAttrs: la}), "bridge %s on %s", bridge, hn)
		br, err := hs.h.LinkByName(bridge)
		tp.must(err, "bridge %s on %s", bridge, hn)
		gw := n.subnet.Addr().As4()
		gw[3] = hn[1] - '0'
		n.gw[hn] = netip.AddrFrom4(gw)
		tp.must(hs.h.AddrAdd(br, &netlink.Addr{IPNet: &net.IPNet{IP: gw[:], Mask: net.CIDRMask(n.subnet.Bits(), 32)}}), "gateway on %s", hn)
		tp.must(hs.h.LinkSetUp(br), "bridge up on %s", hn)
		n.hosts = append(n.hosts, hs)
	}
	tp.nets[name] = n
	return n
}

func (tp *topo) specFor(n *tnet, hs *host) NetworkSpec {
	s := n.spec
	s.Local = hs.vtep
	return s
}

// view is what the cluster watch would know about network n: every host
// with members, every endpoint.
func (tp *topo) view(n *tnet) ([]Peer, []Remote) {
	var peers []Peer
	for _, hs := range n.hosts {
		peers = append(peers, Peer{Host: hs.name, VTEP: hs.vtep})
	}
	var remotes []Remote
	for _, c := range tp.ctrs {
		if c.net == n {
			remotes = append(remotes, Remote{Host: c.host.name, MAC: c.mac, IPv4: c.ip})
		}
	}
	return peers, remotes
}

func (tp *topo) ensure(n *tnet, hs *host, peers []Peer, remotes []Remote) {
	tp.tb.Helper()
	tp.must(hs.o.Ensure(tp.specFor(n, hs), peers, remotes), "Ensure %s on %s", n.spec.Name, hs.name)
}

func (tp *topo) ensureAll() {
	tp.tb.Helper()
	for _, n := range tp.nets {
		peers, remotes := tp.view(n)
		for _, hs := range n.hosts {
			tp.ensure(n, hs, peers, remotes)
		}
	}
}

// attach makes a container namespace on host hn, joined to network n by a
// veth at the overlay MTU (what the agent must do), MAC 02:42:+IPv4 as the
// agent makes them, default route via its host's gateway.
func (tp *topo) attach(name string, n *tnet, hn string, ip string) *ctr {
	tp.tb.Helper()
	hs := tp.host(hn)
	c := &ctr{name: name, host: hs, net: n, ip: netip.MustParseAddr(ip)}
	a := c.ip.As4()
	c.mac = net.HardwareAddr{0x02, 0x42, a[0], a[1], a[2], a[3]}
	var h *netlink.Handle
	c.ns, h = tp.addNS(name)
	mtu, err := hs.o.MTU(tp.specFor(n, hs))
	tp.must(err, "MTU of %s on %s", n.spec.Name, hn)
	br, err := hs.h.LinkByName(n.spec.Bridge)
	tp.must(err, "bridge of %s on %s", n.spec.Name, hn)
	ns, closeNS := nsFd(tp.tb, c.ns)
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU, la.MasterIndex, la.Flags = "v"+name, mtu, br.Attrs().Index, net.FlagUp
	err = hs.h.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ns)), PeerMTU: uint32(mtu), PeerHardwareAddr: c.mac})
	closeNS()
	tp.must(err, "veth of %s", name)
	eth, err := h.LinkByName("eth0")
	tp.must(err, "eth0 in %s", name)
	tp.must(h.AddrAdd(eth, &netlink.Addr{IPNet: &net.IPNet{IP: c.ip.AsSlice(), Mask: net.CIDRMask(n.subnet.Bits(), 32)}}), "address of %s", name)
	tp.must(h.LinkSetUp(eth), "eth0 up in %s", name)
	tp.must(h.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Gw: n.gw[hn].AsSlice()}), "default route of %s", name)
	tp.ctrs[name] = c
	return c
}

// ping runs ping in c's namespace; ok reports exit status 0.
func (tp *topo) ping(c *ctr, dst netip.Addr, args ...string) (string, bool) {
	out, err := tp.exec(c.ns, append(append([]string{"ping", "-n"}, args...), dst.String())...)
	return out, err == nil
}

// fdb returns the VXLAN device's own entries on host hs as "MAC dst VTEP".
func (tp *topo) fdb(hs *host, vni uint32) []string {
	tp.tb.Helper()
	l, err := hs.h.LinkByName(DeviceName(vni))
	tp.must(err, "%s on %s", DeviceName(vni), hs.name)
	ns, err := nlsafe.Retry(func() ([]netlink.Neigh, error) { return hs.h.NeighList(l.Attrs().Index, unix.AF_BRIDGE) })
	tp.must(err, "fdb of %s on %s", DeviceName(vni), hs.name)
	var out []string
	for _, c := range actual(ns, l.Attrs().Index) {
		out = append(out, c.String())
	}
	return out
}

// inNS runs f on a thread switched into namespace name; the thread goes
// home before it is unlocked (or dies locked if it cannot).
func inNS(name string, f func() error) error {
	target, err := netns.GetFromPath(nsPath(name))
	if err != nil {
		return err
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		ferr := f()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("return to the original namespace: %w", err) // thread stays locked and dies
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// cleanup deletes every namespace (their links go with them) and checks
// that nothing is left.
func (tp *topo) cleanup() {
	for i := len(tp.nsList) - 1; i >= 0; i-- {
		if out, err := exec.Command("ip", "netns", "del", tp.nsList[i]).CombinedOutput(); err != nil {
			tp.tb.Errorf("ip netns del %s: %v: %s", tp.nsList[i], err, out)
		}
	}
	ents, _ := os.ReadDir("/run/netns")
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), tp.prefix) {
			tp.tb.Errorf("namespace %s left behind", e.Name())
		}
	}
	// Nothing was made in this namespace; make sure of it.
	links, _ := nlsafe.LinkList(nil)
	for _, l := range links {
		if strings.Contains(l.Attrs().Alias, tp.prefix) {
			tp.tb.Errorf("link %s (%s) left in the test's own namespace", l.Attrs().Name, l.Attrs().Alias)
		}
	}
}

// vxlanFrame builds a VXLAN packet (the UDP payload) carrying an IPv4/UDP
// datagram from src to dst:port inside an Ethernet frame to dstMAC.
func vxlanFrame(vni uint32, dstMAC net.HardwareAddr, src, dst netip.Addr, port uint16, payload []byte) []byte {
	b := make([]byte, 0, 8+14+20+8+len(payload))
	b = append(b, 0x08, 0, 0, 0)
	b = binary.BigEndian.AppendUint32(b, vni<<8)
	b = append(b, dstMAC...)
	b = append(b, 0x02, 0x42, 0xee, 0xee, 0xee, 0xee)
	b = append(b, 0x08, 0x00)
	ip := make([]byte, 20)
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	s4, d4 := src.As4(), dst.As4()
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	b = append(b, ip...)
	b = binary.BigEndian.AppendUint16(b, 40000)
	b = binary.BigEndian.AppendUint16(b, port)
	b = binary.BigEndian.AppendUint16(b, uint16(8+len(payload)))
	b = append(b, 0, 0) // no UDP checksum (allowed over IPv4)
	return append(b, payload...)
}

// inject sends, from container from, a hand-made VXLAN packet to vtep
// whose inner datagram targets victim (on network vni) at UDP port 9999,
// and reports whether victim received it.
func (tp *topo) inject(from *ctr, vtep netip.Addr, vni uint32, victim *ctr) bool {
	tp.tb.Helper()
	var conn *net.UDPConn
	tp.must(inNS(victim.ns, func() (err error) {
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: victim.ip.AsSlice(), Port: 9999})
		return err
	}), "listen in %s", victim.name)
	defer conn.Close()
	var snd *net.UDPConn
	tp.must(inNS(from.ns, func() (err error) {
		snd, err = net.DialUDP("udp4", nil, &net.UDPAddr{IP: vtep.AsSlice(), Port: DefaultPort})
		return err
	}), "socket in %s", from.name)
	defer snd.Close()
	spoof := victim.ip.As4()
	spoof[3] = 99
	pkt := vxlanFrame(vni, victim.mac, netip.AddrFrom4(spoof), victim.ip, 9999, []byte("injected"))
	buf := make([]byte, 64)
	for range 3 {
		if _, err := snd.Write(pkt); err != nil {
			tp.tb.Logf("send from %s: %v", from.name, err)
		}
		conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if n, _, err := conn.ReadFromUDP(buf); err == nil && string(buf[:n]) == "injected" {
			return true
		}
	}
	return false
}
