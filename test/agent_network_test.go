package test

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/netalias/netalias/state"
)

// Two namespaces on one network reach each other, get eth0, a default
// route, a resolver file; the network shows in ls/inspect.
func TestAgentTwoNamespacesPing(t *testing.T) {
	e := newAgentEnv(t)
	sub, _, _ := agNextSubnet()
	net := "testnet" + agRand()[:4]
	e.network(net, "--subnet", sub)
	c1, c2 := agNetns(t), agNetns(t)
	e.must("connect", net, c1, "--alias", "centos-1", "--alias", "db.backend")
	e.must("connect", net, "/run/netns/"+c2, "--name", "centos-2", "--link", "centos-1:db")

	ep1, ep2 := e.endpoint(net, c1), e.endpoint(net, "centos-2")
	if err := agPing(c1, ep2.IPv4.String()); err != nil {
		t.Fatalf("%s cannot ping %s (%s): %v", c1, "centos-2", ep2.IPv4.String(), err)
	}
	if err := agPing(c2, ep1.IPv4.String()); err != nil {
		t.Fatalf("%s cannot ping %s: %v", c2, ep1.IPv4.String(), err)
	}
	if ep1.IfName != "eth0" || !slices.Equal(ep1.Aliases, []string{"centos-1", "db.backend"}) {
		t.Errorf("endpoint 1: ifname %q aliases %v", ep1.IfName, ep1.Aliases)
	}
	if len(ep2.Links) != 1 || ep2.Links[0] != (state.Link{Target: "centos-1", Alias: "db"}) {
		t.Errorf("links not recorded: %+v", ep2.Links)
	}
	gw := e.file(net).Network.Gateway.String()
	if out, _ := agExec(c1, "ip", "route", "show", "default"); !strings.Contains(out, "via "+gw+" dev eth0") {
		t.Errorf("default route in %s: %q, want via %s", c1, out, gw)
	}
	rc, err := os.ReadFile("/etc/netns/" + c1 + "/resolv.conf")
	if err != nil || !strings.Contains(string(rc), "nameserver "+gw+"\n") || !strings.Contains(string(rc), "search "+net+"\n") {
		t.Errorf("resolv.conf of %s: %q, %v", c1, rc, err)
	}
	// The host reaches the containers too.
	if out, err := exec.Command("ping", "-c1", "-W1", ep1.IPv4.String()).CombinedOutput(); err != nil {
		t.Errorf("host cannot ping %s: %v %s", ep1.IPv4.String(), err, out)
	}
	// Our rules in the host's FORWARD chain stay readable by iptables (and
	// so by Docker, which edits that chain with iptables-nft).
	if _, err := exec.LookPath("iptables"); err == nil {
		out, err := exec.Command("iptables", "-S", "FORWARD").CombinedOutput()
		if err != nil {
			t.Errorf("iptables -S FORWARD fails with our rules present: %v: %s", err, out)
		} else if strings.Contains(string(out), "-P FORWARD DROP") && !strings.Contains(string(out), e.file(net).Network.Bridge) {
			t.Errorf("FORWARD policy is DROP but has no accept rule for our bridge:\n%s", out)
		}
	}
	ls := agJSON[[]map[string]any](t, e.must("network", "ls", "--format", "json"))
	if len(ls) != 1 || ls[0]["name"] != net || ls[0]["subnet"] != sub || ls[0]["endpoints"] != float64(2) {
		t.Errorf("ls --format json: %v", ls)
	}
	insp := agJSON[[]state.File](t, e.must("network", "inspect", net))
	if len(insp) != 1 || len(insp[0].Endpoints) != 2 {
		t.Errorf("inspect: %+v", insp)
	}
	if !strings.Contains(e.must("network", "ls"), net) {
		t.Error("ls does not list the network")
	}
}

// A second network is eth1; leaving it leaves eth0 alone; the resolver
// file follows.
func TestAgentTwoNetworksOneNamespace(t *testing.T) {
	e := newAgentEnv(t)
	s1, _, _ := agNextSubnet()
	s2, _, _ := agNextSubnet()
	n1, n2 := "front"+agRand()[:4], "back"+agRand()[:4]
	e.network(n1, "--subnet", s1)
	e.network(n2, "--subnet", s2)
	c, peer := agNetns(t), agNetns(t)
	e.must("connect", n1, c)
	e.must("connect", n2, c)
	e.must("connect", n2, peer)
	if ep := e.endpoint(n2, c); ep.IfName != "eth1" {
		t.Errorf("second network ifname %q, want eth1", ep.IfName)
	}
	rc, _ := os.ReadFile("/etc/netns/" + c + "/resolv.conf")
	if !strings.Contains(string(rc), "search "+n1+" "+n2+"\n") {
		t.Errorf("resolv.conf: %q", rc)
	}
	if err := agPing(c, e.endpoint(n2, peer).IPv4.String()); err != nil {
		t.Fatal(err)
	}
	e.must("disconnect", n2, c)
	if err := agPing(peer, e.endpoint(n1, c).IPv4.String()); err == nil {
		t.Error("peer on the other network still reaches the namespace")
	}
	out, _ := agExec(c, "ip", "-o", "addr", "show", "dev", "eth0")
	if !strings.Contains(out, e.endpoint(n1, c).IPv4.String()+"/") {
		t.Errorf("eth0 lost its address after leaving the other network: %q", out)
	}
	rc, _ = os.ReadFile("/etc/netns/" + c + "/resolv.conf")
	if strings.Contains(string(rc), n2) {
		t.Errorf("resolv.conf still names the network left: %q", rc)
	}
	// Leaving the first network moves the default route and the
	// nameserver to the one that remains.
	e.must("connect", n2, c)
	e.must("disconnect", n1, c)
	gw2 := e.file(n2).Network.Gateway.String()
	if r, _ := agExec(c, "ip", "route", "show", "default"); !strings.Contains(r, "via "+gw2) {
		t.Errorf("default route after leaving %s: %q, want via %s", n1, r, gw2)
	}
	rc, _ = os.ReadFile("/etc/netns/" + c + "/resolv.conf")
	if !strings.Contains(string(rc), "nameserver "+gw2+"\n") || strings.Contains(string(rc), n1) {
		t.Errorf("resolv.conf after leaving %s: %q", n1, rc)
	}
	if err := agPing(c, e.endpoint(n2, peer).IPv4.String()); err != nil {
		t.Errorf("remaining network broken: %v", err)
	}
}

// Connect then disconnect (then rm) leaves no trace: interfaces, nftables,
// state files and the resolver file are as before.
func TestAgentConnectDisconnectLeavesNoTrace(t *testing.T) {
	e := newAgentEnv(t)
	sub, _, _ := agNextSubnet()
	c := agNetns(t)
	linksBefore, nftBefore := agOurLinks(t), e.ourNft()
	nsLinksBefore, _ := agExec(c, "ip", "-br", "link")

	net := "trace" + agRand()[:4]
	e.must("network", "create", "--subnet", sub, net)
	e.must("connect", net, c)
	ep := e.endpoint(net, c)
	if !agHasLink(t, ep.HostVeth) {
		t.Fatalf("veth %s missing after connect", ep.HostVeth)
	}
	e.must("disconnect", net, c)
	// The endpoint is gone from the state and unreachable when disconnect
	// returns; the veth's deletion (an RCU grace period) finishes in the
	// background reaper within a bounded time.
	if f := e.file(net); len(f.Endpoints) != 0 {
		t.Fatalf("endpoint still in state after disconnect: %+v", f.Endpoints)
	}
	agEventually(t, 5*time.Second, "veth deletion and pending list drained", func() bool {
		return !agHasLink(t, ep.HostVeth) && len(e.file(net).PendingDelete) == 0
	})
	// lo stays up (as connect left it); no other interface remains.
	if out, _ := agExec(c, "ip", "-br", "link"); brNames(out) != brNames(nsLinksBefore) {
		t.Errorf("namespace links after disconnect:\n%s\nbefore:\n%s", out, nsLinksBefore)
	}
	if _, err := os.Stat("/etc/netns/" + c); !os.IsNotExist(err) {
		t.Errorf("/etc/netns/%s left behind: %v", c, err)
	}
	e.must("network", "rm", net)
	if got := agOurLinks(t); !slices.Equal(got, linksBefore) {
		t.Errorf("links after:\n%v\nbefore:\n%v", got, linksBefore)
	}
	if got := e.ourNft(); got != nftBefore {
		t.Errorf("nft ruleset changed:\n%s\nbefore:\n%s", got, nftBefore)
	}
	if d := agDigest(t, e.dir); len(d) != 0 {
		t.Errorf("state files left: %v", d)
	}
}

// Two networks are isolated from each other, as Docker's bridges are.
func TestAgentNetworksIsolated(t *testing.T) {
	e := newAgentEnv(t)
	s1, _, _ := agNextSubnet()
	s2, _, _ := agNextSubnet()
	n1, n2 := "isoa"+agRand()[:4], "isob"+agRand()[:4]
	e.network(n1, "--subnet", s1)
	e.network(n2, "--subnet", s2)
	a, a2, b := agNetns(t), agNetns(t), agNetns(t)
	e.must("connect", n1, a)
	e.must("connect", n1, a2)
	e.must("connect", n2, b)
	if err := agPing(a, e.endpoint(n1, a2).IPv4.String()); err != nil {
		t.Fatalf("same network: %v", err)
	}
	if err := agPing(a, e.endpoint(n2, b).IPv4.String()); err == nil {
		t.Errorf("%s (network %s) reached %s on network %s", a, n1, b, n2)
	}
	if err := agPing(b, e.endpoint(n1, a).IPv4.String()); err == nil {
		t.Errorf("%s (network %s) reached %s on network %s", b, n2, a, n1)
	}
}

// An internal network has no default route and no way off its bridge,
// even with a route added by hand.
func TestAgentInternalNoWayOut(t *testing.T) {
	e := newAgentEnv(t)
	s1, _, _ := agNextSubnet()
	s2, _, _ := agNextSubnet()
	in, out := "inner"+agRand()[:4], "outer"+agRand()[:4]
	e.network(in, "--subnet", s1, "--internal")
	e.network(out, "--subnet", s2)
	i1, i2, o := agNetns(t), agNetns(t), agNetns(t)
	e.must("connect", in, i1)
	e.must("connect", in, i2)
	e.must("connect", out, o)
	if r, _ := agExec(i1, "ip", "route", "show", "default"); strings.TrimSpace(r) != "" {
		t.Errorf("internal namespace has a default route: %q", r)
	}
	if err := agPing(i1, e.endpoint(in, i2).IPv4.String()); err != nil {
		t.Fatalf("inside the internal network: %v", err)
	}
	gw := e.file(in).Network.Gateway.String()
	if r, err := agExec(i1, "ip", "route", "add", "default", "via", gw); err != nil {
		t.Fatalf("add route by hand: %v %s", err, r)
	}
	if err := agPing(i1, e.endpoint(out, o).IPv4.String()); err == nil {
		t.Error("internal namespace reached a namespace on another network")
	}
	// Nor can anything outside come in.
	ro, _ := agExec(o, "ip", "route", "show", "default")
	if strings.Contains(ro, "via") {
		if err := agPing(o, e.endpoint(in, i1).IPv4.String()); err == nil {
			t.Error("outside namespace reached the internal network")
		}
	}
}

// Dual stack: IPv6 addresses from --subnet6, reachable inside the network.
func TestAgentDualStack(t *testing.T) {
	e := newAgentEnv(t)
	s4, s6, _ := agNextSubnet()
	net := "dual" + agRand()[:4]
	e.network(net, "--subnet", s4, "--ipv6", "--subnet6", s6)
	a, b := agNetns(t), agNetns(t)
	e.must("connect", net, a)
	e.must("connect", net, b)
	epb := e.endpoint(net, b)
	if !epb.IPv6.IsValid() {
		t.Fatal("no IPv6 address")
	}
	if err := agPing(a, epb.IPv6.String()); err != nil {
		t.Fatalf("ping6: %v", err)
	}
	if err := agPing(a, e.file(net).Network.Gateway6.String()); err != nil {
		t.Fatalf("ping6 gateway: %v", err)
	}
}

func brNames(out string) string {
	var ns []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			ns = append(ns, f[0])
		}
	}
	return strings.Join(ns, " ")
}

// Automatic subnets come from the pool, skip what is taken, and --mtu
// reaches the namespace.
func TestAgentAutoSubnetAndMTU(t *testing.T) {
	e := newAgentEnv(t) // pool: one /24 of ours in /26 subnets
	base := strings.TrimSuffix(strings.Split(e.pool, ":")[0], ".0/24")
	a, b, c := "auta"+agRand()[:4], "autb"+agRand()[:4], "autc"+agRand()[:4]
	e.network(a, "--mtu", "1400")
	e.network(b, "--subnet", base+".64/26")
	e.network(c)
	if got := e.file(a).Network.Subnet.String(); got != base+".0/26" {
		t.Errorf("first automatic subnet %s, want %s.0/26", got, base)
	}
	if got := e.file(c).Network.Subnet.String(); got != base+".128/26" {
		t.Errorf("second automatic subnet %s, want %s.128/26 (skipping %s.64/26)", got, base, base)
	}
	ns := agNetns(t)
	e.must("connect", a, ns)
	if out, _ := agExec(ns, "ip", "-o", "link", "show", "eth0"); !strings.Contains(out, "mtu 1400") {
		t.Errorf("eth0: %q, want mtu 1400", out)
	}
}

// The gateway keeps its MAC while containers come and go: a bridge left
// to the kernel takes its lowest port's MAC and changes it with its ports,
// and every container's cached neighbour entry for the gateway then goes
// unanswered until it expires (5-10 s of lost DNS and routed traffic; seen
// as a slow partition heal in the cluster test).
func TestAgentGatewayKeepsItsMAC(t *testing.T) {
	e := newAgentEnv(t)
	sub, _, _ := agNextSubnet()
	net := "testnet" + agRand()[:4]
	e.network(net, "--subnet", sub)
	n := e.file(net).Network
	want := fmt.Sprintf("02:42:%02x:%02x:%02x:%02x", n.Gateway.As4()[0], n.Gateway.As4()[1], n.Gateway.As4()[2], n.Gateway.As4()[3])
	gwMAC := func(ns string) string {
		if err := agPing(ns, n.Gateway.String()); err != nil {
			t.Fatalf("%s cannot ping its gateway %s: %v", ns, n.Gateway, err)
		}
		out, _ := agExec(ns, "ip", "neigh", "show", n.Gateway.String())
		f := strings.Fields(out)
		for i := range f {
			if f[i] == "lladdr" && i+1 < len(f) {
				return f[i+1]
			}
		}
		t.Fatalf("%s has no neighbour entry for its gateway: %q", ns, out)
		return ""
	}
	var nss []string
	for i := 0; i < 4; i++ {
		ns := agNetns(t)
		e.must("connect", net, ns)
		nss = append(nss, ns)
	}
	if got := gwMAC(nss[0]); got != want {
		t.Errorf("gateway MAC seen from %s: %s, want %s (from the gateway address)", nss[0], got, want)
	}
	for _, ns := range nss[1:] {
		e.must("disconnect", net, ns)
	}
	late := agNetns(t)
	e.must("connect", net, late)
	b, err := os.ReadFile("/sys/class/net/" + n.Bridge + "/address")
	if got := strings.TrimSpace(string(b)); err != nil || got != want {
		t.Errorf("bridge %s MAC after containers left and came: %q %v, want %s", n.Bridge, got, err, want)
	}
	if got := gwMAC(late); got != want {
		t.Errorf("gateway MAC seen from %s: %s, want %s", late, got, want)
	}
	// A bridge made by an earlier version has the kernel's MAC: the next
	// command gives it its own.
	if out, err := exec.Command("ip", "link", "set", n.Bridge, "address", "5a:a9:d5:5d:e7:6b").CombinedOutput(); err != nil {
		t.Fatalf("set an old MAC on %s: %v %s", n.Bridge, err, out)
	}
	e.must("connect", net, agNetns(t))
	if b, err := os.ReadFile("/sys/class/net/" + n.Bridge + "/address"); strings.TrimSpace(string(b)) != want {
		t.Errorf("bridge %s MAC after the next command: %q %v, want %s", n.Bridge, b, err, want)
	}
}
