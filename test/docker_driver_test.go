package test

// Issue 11's scenario through `netalias docker-plugin` and a private
// dockerd (docker_driver_helpers_test.go): Docker containers on a netalias
// network next to a `netalias connect` namespace, one set of names
// through our CoreDNS, Docker's embedded DNS still answering, internal and
// dual-stack networks, adoption, and restarts of the plugin and of
// dockerd. Run under the kernel lock:
//
//	flock /tmp/netalias-kernel.lock go test ./test -run DockerDriver -v

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/netalias/netalias/agent"
	"github.com/netalias/netalias/state"
)

// netalias runs the CLI on the plugin's state directory.
func (p *driverPlugin) netalias(args ...string) string {
	p.t.Helper()
	out, err := exec.Command(p.bin, append([]string{"--state-dir", p.stateDir}, args...)...).CombinedOutput()
	if err != nil {
		p.t.Fatalf("netalias %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// dockerRecords splits the Docker records of a network file into
// endpoints (with a veth) and address reservations.
func dockerRecords(f state.File) (eps, reservations []state.Endpoint) {
	for _, ep := range f.Endpoints {
		if ep.Attachment == nil || ep.Attachment.Runtime != state.RuntimeDocker {
			continue
		}
		if ep.HostVeth == "" {
			reservations = append(reservations, ep)
		} else {
			eps = append(eps, ep)
		}
	}
	return eps, reservations
}

// vethOf is the host veth of the Docker endpoint holding ip.
func (p *driverPlugin) vethOf(network string, ip netip.Addr) string {
	p.t.Helper()
	f, _ := p.netaliasNetwork(network)
	eps, _ := dockerRecords(f)
	for _, ep := range eps {
		if ep.IPv4 == ip {
			return ep.HostVeth
		}
	}
	p.t.Fatalf("no Docker endpoint with %s on netalias network %s: %+v", ip, network, f.Endpoints)
	return ""
}

func linkExists(name string) bool { return exec.Command("ip", "link", "show", name).Run() == nil }

// driverSubnet is a random /24 of 10.208.0.0/16 (this area's range).
func driverSubnet() netip.Prefix {
	return netip.MustParsePrefix(fmt.Sprintf("10.208.%d.0/24", 1+rand.IntN(250)))
}

// TestDockerDriverNetwork is issue 11's scenario.
func TestDockerDriverNetwork(t *testing.T) {
	bin := requireDockerPlugin(t)
	d := startPrivateDockerd(t)
	img := d.importBusybox()
	stateDir := t.TempDir()
	// The collector asks the private dockerd, and collects records older
	// than 2 s that it does not know.
	p := startDriverPlugin(t, bin, natestName("natest-drv"), stateDir, "--docker-host", "unix://"+d.sock, "--collect-after", "2s")
	var veths []string // every host veth seen: none may survive

	netName := natestName("natest")
	sub := driverSubnet()
	d.engine.must(t, "network", "create", "-d", p.name, "--ipam-driver", p.name,
		"--subnet", sub.String(), "-o", "netalias.network="+netName, netName)
	t.Cleanup(func() { d.removeNetwork(netName) })
	f, ok := p.netaliasNetwork(netName)
	if !ok || f.Network.Subnet != sub {
		t.Fatalf("netalias network %s after docker network create: %+v (exists %v)", netName, f.Network, ok)
	}
	gw := f.Network.Gateway

	// Our CoreDNS reads the state directory and the private dockerd.
	startCoreDNS(t, fmt.Sprintf("        state %s\n        docker unix://%s", stateDir, d.sock), []string{gw.String()}, true)

	// Two containers: addresses from our IPAM, veths on our bridge.
	c1, c2 := "c1-"+netName, "c2-"+netName
	d.engine.run(t, c1, "--restart", "always", "--stop-timeout", "1", "--network", netName, "--network-alias", "centos-1", img, "sleep", "3600")
	d.engine.run(t, c2, "--restart", "always", "--stop-timeout", "1", "--network", netName, "--dns", gw.String(), img, "sleep", "3600")
	ip1, ip2 := d.engine.ip(t, c1, netName), d.engine.ip(t, c2, netName)
	if !sub.Contains(ip1) || !sub.Contains(ip2) || ip1 == ip2 {
		t.Fatalf("addresses %s and %s, want two in %s", ip1, ip2, sub)
	}
	if n := len(bridgePorts(t, f.Network.Bridge)); n != 2 {
		t.Errorf("%d ports on %s, want 2", n, f.Network.Bridge)
	}
	veths = append(veths, p.vethOf(netName, ip1), p.vethOf(netName, ip2))
	// Docker's embedded DNS still answers inside the containers.
	for _, name := range []string{c1, "centos-1"} {
		if out := d.engine.must(t, "exec", c2, "nslookup", name); !strings.Contains(out, ip1.String()) {
			t.Errorf("Docker's embedded DNS: nslookup %s in %s:\n%s", name, c2, out)
		}
	}
	d.engine.must(t, "exec", c2, "ping", "-c1", "-W2", c1)

	// A namespace attached with netalias connect to the same network.
	ns := agNetns(t)
	p.netalias("connect", netName, ns)
	t.Cleanup(func() { exec.Command(bin, "--state-dir", stateDir, "disconnect", netName, ns).Run() })
	f, _ = p.netaliasNetwork(netName)
	var nsIP netip.Addr
	for _, ep := range f.Endpoints {
		if ep.Name == ns {
			nsIP = ep.IPv4
		}
	}
	if !sub.Contains(nsIP) || nsIP == ip1 || nsIP == ip2 {
		t.Fatalf("connect's address %s collides or is outside %s (Docker's: %s %s)", nsIP, sub, ip1, ip2)
	}
	// It resolves the Docker container as name.NETWORK through our CoreDNS
	// (names from the Docker source) and pings it.
	resolvesTo(t, 5*time.Second, c1+"."+netName, ip1)
	resolvesTo(t, time.Second, "centos-1."+netName, ip1)
	if out, err := agExec(ns, "dig", "+short", "+time=2", "+tries=1", "@"+gw.String(), "centos-1."+netName); err != nil || strings.TrimSpace(out) != ip1.String() {
		t.Errorf("dig centos-1.%s @%s in %s = %q (%v), want %s", netName, gw, ns, out, err, ip1)
	}
	if err := agPing(ns, ip1.String()); err != nil {
		t.Errorf("ping %s from %s: %v", ip1, ns, err)
	}
	// A restart of the host's dockerd rewrites the FORWARD chain: the
	// plugin puts our rules back within seconds.
	rules := forwardRules(t, f.Network.Bridge)
	if len(rules) == 0 {
		t.Errorf("no FORWARD rules for %s", f.Network.Bridge)
	}
	for _, r := range rules {
		if out, err := exec.Command("sh", "-c", "iptables "+strings.Replace(r, "-A ", "-D ", 1)).CombinedOutput(); err != nil {
			t.Fatalf("iptables -D %s: %v\n%s", r, err, out)
		}
	}
	within(t, 8*time.Second, "FORWARD rules for "+f.Network.Bridge+" restored", func() bool {
		return len(forwardRules(t, f.Network.Bridge)) == len(rules)
	})
	if err := agPing(ns, ip1.String()); err != nil {
		t.Errorf("ping %s from %s after the rules came back: %v", ip1, ns, err)
	}
	// And the other way round: the container (through --dns, Docker's
	// embedded DNS forwarding to us) resolves and pings the namespace.
	if out, err := d.engine.cmd("exec", c2, "ping", "-c1", "-W2", ns+"."+netName).CombinedOutput(); err != nil || !strings.Contains(string(out), nsIP.String()) {
		t.Errorf("ping %s.%s from %s: %v\n%s", ns, netName, c2, err, out)
	}

	// docker rm -f: no veth left within 5 s, the name is gone.
	d.engine.must(t, "rm", "-f", c1)
	within(t, 5*time.Second, "c1's veth "+veths[0]+" deleted", func() bool { return !linkExists(veths[0]) })
	resolvesTo(t, 2*time.Second, "centos-1."+netName)

	// The plugin restarts without losing its map.
	p.stop()
	p.start()
	c3 := "c3-" + netName
	d.engine.run(t, c3, "--stop-timeout", "1", "--network", netName, img, "sleep", "3600")
	d.engine.must(t, "exec", c3, "ping", "-c1", "-W2", c2)
	veths = append(veths, p.vethOf(netName, d.engine.ip(t, c3, netName)))

	// dockerd restarts with a --restart always container on the network:
	// no deadlock, it comes back on its address, and no record is left
	// of the endpoints the restart replaced.
	start := time.Now()
	d.restart()
	within(t, 30*time.Second, c2+" running again after the daemon restart", func() bool { return d.running(c2) })
	t.Logf("dockerd restart until %s runs again: %v", c2, time.Since(start).Round(time.Millisecond))
	// Docker 20.10 asks the IPAM driver for a preferred address only for
	// --ip, and a driver is never told which container an endpoint is
	// for: a dynamic address is not sticky across a daemon restart (nor
	// is it with Docker's own IPAM). It comes from our pool, collision-free.
	again := d.engine.ip(t, c2, netName)
	if !sub.Contains(again) || again == nsIP {
		t.Errorf("%s came back on %s: want a free address of %s (the namespace has %s)", c2, again, sub, nsIP)
	}
	if again != ip2 {
		t.Logf("%s came back on %s (was %s)", c2, again, ip2)
		ip2 = again
	}
	d.engine.must(t, "start", c3)
	d.engine.must(t, "exec", c3, "ping", "-c1", "-W2", c2)
	if err := agPing(ns, ip2.String()); err != nil {
		t.Errorf("ping %s from %s after the daemon restart: %v", ip2, ns, err)
	}
	veths = append(veths, p.vethOf(netName, ip2), p.vethOf(netName, d.engine.ip(t, c3, netName)))
	within(t, 5*time.Second, "only the running containers' records after the daemon restart", func() bool {
		f, _ := p.netaliasNetwork(netName)
		eps, res := dockerRecords(f)
		return len(eps) == 2 && len(res) == 0 && len(bridgePorts(t, f.Network.Bridge)) == 3
	})

	// Records dockerd does not know (it lost its state, say) are collected
	// with their veth; the records it knows stay.
	m, err := agent.New(agent.Options{StateDir: stateDir})
	if err != nil {
		t.Fatal(err)
	}
	lostIP, err := m.DockerReserve(netName, false, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	lost, err := m.DockerCreateEndpoint(agent.DockerEndpointSpec{Network: netName, EndpointID: state.NewID(), IPv4: lostIP})
	if err != nil {
		t.Fatal(err)
	}
	stray, err := m.DockerReserve(netName, false, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	within(t, 10*time.Second, "the leaked endpoint and reservation collected", func() bool {
		f, _ := p.netaliasNetwork(netName)
		eps, res := dockerRecords(f)
		return len(eps) == 2 && len(res) == 0 && !linkExists(lost.HostVeth)
	})
	if a, err := m.DockerReserve(netName, false, stray); err != nil {
		t.Errorf("collected reservation %s not free again: %v", stray, err)
	} else if err := m.DockerRelease(netName, a); err != nil {
		t.Fatal(err)
	}

	// With the plugin down, Docker's commands fail with a clear error and
	// nothing half-made remains.
	before, _ := p.netaliasNetwork(netName)
	p.stop()
	c9 := "c9-" + netName
	start = time.Now()
	out, err := d.engine.cmd("run", "-d", "--name", c9, "--network", netName, img, "sleep", "3600").CombinedOutput()
	t.Logf("docker run with the plugin down failed after %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(string(out)))
	if err == nil || !strings.Contains(string(out), p.name) {
		t.Errorf("docker run with the plugin down: %v\n%s", err, out)
	}
	d.quiet("rm", "-f", c9)
	dn := natestName("natest")
	if out, err := d.engine.cmd("network", "create", "-d", p.name, "--ipam-driver", p.name, "--subnet", driverSubnet().String(), dn).CombinedOutput(); err == nil || !strings.Contains(string(out), p.name) {
		t.Errorf("docker network create with the plugin down: %v\n%s", err, out)
	}
	if out := d.quiet("network", "ls", "-q", "--filter", "name="+dn); strings.TrimSpace(out) != "" {
		t.Errorf("a failed network create left Docker network %s", dn)
	}
	p.start()
	if after, _ := p.netaliasNetwork(netName); !slices.EqualFunc(after.Endpoints, before.Endpoints, func(a, b state.Endpoint) bool { return a.ID == b.ID }) {
		t.Errorf("records changed while the plugin was down:\nbefore %+v\nafter %+v", before.Endpoints, after.Endpoints)
	}
	if n := len(bridgePorts(t, f.Network.Bridge)); n != 3 {
		t.Errorf("%d ports on %s after the failed run, want 3", n, f.Network.Bridge)
	}

	// An internal network: no docker_gwbridge, no way out.
	inner := natestName("natest")
	d.engine.must(t, "network", "create", "-d", p.name, "--ipam-driver", p.name, "--internal",
		"--subnet", driverSubnet().String(), "-o", "netalias.network="+inner, inner)
	t.Cleanup(func() { d.removeNetwork(inner) })
	c4 := "c4-" + netName
	d.engine.run(t, c4, "--stop-timeout", "1", "--network", inner, img, "sleep", "3600")
	if out := d.quiet("network", "ls", "-q", "--filter", "name=docker_gwbridge"); strings.TrimSpace(out) != "" {
		t.Errorf("an internal netalias network made Docker attach docker_gwbridge")
	}
	if fi, _ := p.netaliasNetwork(inner); !fi.Network.Internal {
		t.Errorf("netalias network %s is not internal", inner)
	}
	if out := d.engine.must(t, "exec", c4, "ip", "route"); strings.Contains(out, "default") {
		t.Errorf("a container on an internal network has a default route:\n%s", out)
	}
	if out, err := d.engine.cmd("exec", c4, "ping", "-c1", "-W1", ip2.String()).CombinedOutput(); err == nil {
		t.Errorf("a container on an internal network reached %s on another network:\n%s", ip2, out)
	}

	// --subnet, --gateway and --ipv6 honoured.
	dual := natestName("natest")
	dsub := driverSubnet()
	dgw := dsub.Addr().Next().Next().Next().Next().Next() // .5, not the first host
	dsub6 := netip.MustParsePrefix(fmt.Sprintf("fd00:208:%x::/64", rand.IntN(0xffff)))
	d.engine.must(t, "network", "create", "-d", p.name, "--ipam-driver", p.name, "--ipv6",
		"--subnet", dsub.String(), "--gateway", dgw.String(), "--subnet", dsub6.String(), "-o", "netalias.network="+dual, dual)
	t.Cleanup(func() { d.removeNetwork(dual) })
	fd, _ := p.netaliasNetwork(dual)
	if fd.Network.Subnet != dsub || fd.Network.Gateway != dgw || fd.Network.Subnet6 != dsub6 {
		t.Errorf("netalias network %s: %s gw %s, %s; want %s gw %s, %s", dual, fd.Network.Subnet, fd.Network.Gateway, fd.Network.Subnet6, dsub, dgw, dsub6)
	}
	c5 := "c5-" + netName
	d.engine.run(t, c5, "--stop-timeout", "1", "--network", dual, img, "sleep", "3600")
	if out := d.engine.must(t, "exec", c5, "ip", "route"); !strings.Contains(out, "default via "+dgw.String()) {
		t.Errorf("%s's routes, want the default via %s:\n%s", c5, dgw, out)
	}
	ip6 := d.engine.must(t, "inspect", "-f", `{{(index .NetworkSettings.Networks "`+dual+`").GlobalIPv6Address}}`, c5)
	if a, err := netip.ParseAddr(ip6); err != nil || !dsub6.Contains(a) {
		t.Errorf("%s's IPv6 address %q, want one in %s", c5, ip6, dsub6)
	}
	d.engine.must(t, "exec", c5, "ping", "-c1", "-W2", fd.Network.Gateway6.String())

	// Adoption: docker network rm leaves a network the plugin did not make.
	adopted := natestName("natest")
	asub := driverSubnet()
	p.netalias("network", "create", "--subnet", asub.String(), adopted)
	t.Cleanup(func() { exec.Command(bin, "--state-dir", stateDir, "network", "rm", "--force", adopted).Run() })
	d.engine.must(t, "network", "create", "-d", p.name, "--ipam-driver", p.name,
		"--subnet", asub.String(), "-o", "netalias.network="+adopted, adopted)
	t.Cleanup(func() { d.removeNetwork(adopted) })
	c6 := "c6-" + netName
	d.engine.run(t, c6, "--stop-timeout", "1", "--network", adopted, img, "sleep", "3600")
	veths = append(veths, p.vethOf(adopted, d.engine.ip(t, c6, adopted)))
	d.engine.must(t, "rm", "-f", c6)
	d.engine.must(t, "network", "rm", adopted)
	if fa, ok := p.netaliasNetwork(adopted); !ok {
		t.Errorf("docker network rm removed netalias network %s, which the plugin did not make", adopted)
	} else if len(fa.Endpoints) != 0 {
		t.Errorf("records left on %s after docker rm and network rm: %+v", adopted, fa.Endpoints)
	}

	// docker network rm removes what the plugin made.
	for _, c := range []string{c2, c3, c4, c5} {
		d.engine.must(t, "rm", "-f", c)
	}
	p.netalias("disconnect", netName, ns)
	d.engine.must(t, "network", "rm", netName, inner, dual)
	for _, n := range []string{netName, inner, dual} {
		if _, ok := p.netaliasNetwork(n); ok {
			t.Errorf("netalias network %s survives docker network rm", n)
		}
	}
	for _, v := range veths {
		if linkExists(v) {
			t.Errorf("veth %s left behind", v)
		}
	}
}

// forwardRules lists our rules for bridge in the host's iptables FORWARD
// chain (iptables -S lines).
func forwardRules(t testing.TB, bridge string) []string {
	t.Helper()
	out, err := exec.Command("iptables", "-S", "FORWARD").Output()
	if err != nil {
		t.Fatalf("iptables -S FORWARD: %v", err)
	}
	var rules []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "netalias:") && strings.Contains(l, ":"+bridge+"\"") {
			rules = append(rules, l)
		}
	}
	return rules
}
