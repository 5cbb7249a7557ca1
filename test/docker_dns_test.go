package test

import (
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/netalias/netalias/internal/testenv"
	"github.com/netalias/netalias/state"
)

// Our CoreDNS instances listen on this loopback address (port 53), plus
// the gateways of the engine networks the test makes, for --dns.
const (
	dnsHost   = "127.0.3.1"
	readyAddr = "127.0.3.1:8181"
	metricsAt = "127.0.3.1:9153"
)

// startCoreDNS runs our coredns binary with a netalias block holding
// sources, bound to 127.0.3.1 and the extra addresses; it is stopped at
// cleanup. With waitReady it returns once /ready says so.
func startCoreDNS(t testing.TB, sources string, bind []string, waitReady bool) {
	t.Helper()
	bin := binary(t, "coredns")
	dir := t.TempDir()
	corefile := fmt.Sprintf(`.:53 {
    bind %s %s
    netalias {
        netlink off
%s
    }
    ready %s
    prometheus %s
    errors
}
`, dnsHost, strings.Join(bind, " "), sources, readyAddr, metricsAt)
	conf := filepath.Join(dir, "Corefile")
	if err := os.WriteFile(conf, []byte(corefile), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "coredns.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-conf", conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("coredns log:\n%s", b)
		}
		logf.Close()
	})
	// Up once /ready answers at all; ready once it says 200.
	deadline := time.Now().Add(15 * time.Second)
	for {
		code := readyCode()
		if code == http.StatusOK || (code != 0 && !waitReady) {
			return
		}
		select {
		case err := <-done:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("coredns exited: %v\n%s\nCorefile:\n%s", err, b, corefile)
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("coredns not ready after 15s (last /ready status %d)\n%s", code, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readyCode is the status of the ready plugin's endpoint, 0 if none.
func readyCode() int {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + readyAddr + "/ready")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// staleMetric reads coredns_netalias_stale for source (-1 if absent).
func staleMetric(t testing.TB, source string) int {
	t.Helper()
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + metricsAt + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	re := regexp.MustCompile(`(?m)^coredns_netalias_stale\{source="` + regexp.QuoteMeta(source) + `"\} (\d+)`)
	m := re.FindSubmatch(b)
	if m == nil {
		return -1
	}
	if string(m[1]) == "1" {
		return 1
	}
	return 0
}

// ask sends one query to our server on the host.
func ask(t testing.TB, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := dns.Client{Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, dnsHost+":53")
	if err != nil {
		t.Fatalf("query %s: %v", name, err)
	}
	return r
}

// aOf is the sorted A answers for name, nil on NXDOMAIN or none.
func aOf(t testing.TB, name string) []netip.Addr {
	t.Helper()
	var out []netip.Addr
	for _, rr := range ask(t, name, dns.TypeA).Answer {
		if a, ok := rr.(*dns.A); ok {
			ip, _ := netip.AddrFromSlice(a.A)
			out = append(out, ip.Unmap())
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func rcodeOf(t testing.TB, name string) int { return ask(t, name, dns.TypeA).Rcode }

func ptrOf(t testing.TB, ip netip.Addr) []string {
	t.Helper()
	rev, _ := dns.ReverseAddr(ip.String())
	var out []string
	for _, rr := range ask(t, rev, dns.TypePTR).Answer {
		if p, ok := rr.(*dns.PTR); ok {
			out = append(out, p.Ptr)
		}
	}
	return out
}

// resolvesTo waits (polling every 10 ms) until name answers exactly want.
func resolvesTo(t testing.TB, timeout time.Duration, name string, want ...netip.Addr) {
	t.Helper()
	want = addrs(want...)
	var got []netip.Addr
	eventually(t, timeout, fmt.Sprintf("%s resolves to %v (last answer %v)", name, want, &got), func() bool {
		got = aOf(t, name)
		return slices.Equal(got, want)
	})
}

// inContainer runs cmd in a running container; returns output and whether
// it exited 0.
func (e engine) inContainer(t testing.TB, ctr string, cmd ...string) (string, bool) {
	t.Helper()
	out, err := e.cmd(append([]string{"exec", ctr}, cmd...)...).CombinedOutput()
	return string(out), err == nil
}

// writeAgentNetwork puts one agent endpoint into a state directory, on a
// network of the same name as an engine's: the two sources must merge.
func writeAgentNetwork(t testing.TB, dir, network, subnet, gateway, name string, ip netip.Addr) {
	t.Helper()
	f := &state.File{
		Network: state.Network{ID: state.NewID(), Name: network, Bridge: "natest-none",
			Subnet: netip.MustParsePrefix(subnet), Gateway: netip.MustParseAddr(gateway), MTU: 1500, Created: time.Now()},
		Endpoints: []state.Endpoint{{ID: state.NewID(), Name: name, IPv4: ip, MAC: "02:00:00:00:00:01",
			Container: "/run/netns/natest-none", Created: time.Now()}},
	}
	if err := state.Write(dir, f); err != nil {
		t.Fatal(err)
	}
}

// TestDockerDNS is the scenario end to end: the real Docker
// Engine, our coredns binary with `netalias { docker … }`, queries from the
// host and from containers, and an engine outage (a socket proxy the test
// cuts: the host's dockerd is shared and must not be stopped).
func TestDockerDNS(t *testing.T) {
	testenv.RequireDocker(t)
	e := engine{bin: "docker"}
	img := busyboxImage(t, "docker")
	net, third := e.networkIn(t, "10.203", func(third int) []string {
		return []string{"--ipv6", "--subnet", fmt.Sprintf("fd00:203:%d::/64", third)}
	})
	subnet := fmt.Sprintf("10.203.%d.0/24", third)
	gw := fmt.Sprintf("10.203.%d.1", third)
	bridgeGW := e.must(t, "network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", "bridge")
	if bridgeGW == "" {
		bridgeGW = "172.17.0.1"
	}

	proxy := newSockProxy(t, "/var/run/docker.sock")
	stateDir := t.TempDir()
	agentIP := netip.MustParseAddr(fmt.Sprintf("10.203.%d.200", third))
	writeAgentNetwork(t, stateDir, net, subnet, gw, "agent-ep", agentIP)
	source := "docker:" + proxy.endpoint()
	startCoreDNS(t, fmt.Sprintf("        state %s\n        docker %s", stateDir, proxy.endpoint()), []string{gw, bridgeGW}, true)

	// An existing network without containers: its names are ours to deny.
	eventually(t, time.Second, "nobody."+net+" NXDOMAIN on an empty network", func() bool {
		return rcodeOf(t, "nobody."+net) == dns.RcodeNameError
	})

	c1 := natestName("centos-1")
	start := time.Now()
	id1 := e.run(t, c1, "--network", net, "--network-alias", "c1", img, "sleep", "600")
	ip1 := e.ip(t, c1, net)
	resolvesTo(t, 2*time.Second, c1+"."+net, ip1)
	t.Logf("%s.%s answered %v after `docker run -d` began", c1, net, time.Since(start))
	resolvesTo(t, time.Second, "c1."+net, ip1)
	resolvesTo(t, time.Second, id1[:12]+"."+net, ip1)
	ip6 := e.must(t, "inspect", "-f", `{{(index .NetworkSettings.Networks "`+net+`").GlobalIPv6Address}}`, c1)
	var aaaa []string
	for _, rr := range ask(t, c1+"."+net, dns.TypeAAAA).Answer {
		if a, ok := rr.(*dns.AAAA); ok {
			aaaa = append(aaaa, a.AAAA.String())
		}
	}
	if ip6 == "" || !slices.Equal(aaaa, []string{ip6}) {
		t.Errorf("AAAA %s.%s = %v, want [%s]", c1, net, aaaa, ip6)
	}
	if got := ptrOf(t, ip1); !slices.Contains(got, c1+"."+net+".") {
		t.Errorf("PTR %v = %v, want %s.%s.", ip1, got, c1, net)
	}
	// The agent's endpoint on the same network name is not lost.
	resolvesTo(t, time.Second, "agent-ep."+net, agentIP)

	// From a container, through --dns: Docker's embedded DNS forwards what
	// it does not know to us; nslookup against the gateway asks us directly.
	if out, err := e.cmd("run", "--rm", "--network", net, "--dns", gw, img, "ping", "-c1", "-W2", c1+"."+net).CombinedOutput(); err != nil {
		t.Errorf("ping %s.%s from a container: %v\n%s", c1, net, err, out)
	}
	if out, err := e.cmd("run", "--rm", "--network", net, img, "nslookup", "agent-ep."+net, gw).CombinedOutput(); err != nil || !strings.Contains(string(out), agentIP.String()) {
		t.Errorf("nslookup agent-ep.%s %s from a container: %v\n%s", net, gw, err, out)
	}

	// docker restart, and a restart onto another address.
	e.must(t, "restart", "-t", "0", c1)
	resolvesTo(t, 2*time.Second, c1+"."+net, e.ip(t, c1, net))
	e.must(t, "stop", "-t", "0", c1)
	thief := natestName("thief")
	e.run(t, thief, "--network", net, "--ip", ip1.String(), img, "sleep", "600")
	e.must(t, "start", c1)
	ip1b := e.ip(t, c1, net)
	resolvesTo(t, 2*time.Second, c1+"."+net, ip1b)
	resolvesTo(t, time.Second, thief+"."+net, ip1)

	// --link: db resolves for the linking container only.
	c2 := natestName("centos-2")
	e.run(t, c2, "--network", net, "--link", c1+":db", img, "sleep", "600")
	resolvesTo(t, 2*time.Second, c2+"."+net, e.ip(t, c2, net))
	if out, ok := e.inContainer(t, c2, "nslookup", "db.", gw); !ok || !strings.Contains(out, ip1b.String()) {
		t.Errorf("db from the linking container: want %v\n%s", ip1b, out)
	}
	if out, _ := e.inContainer(t, thief, "nslookup", "db.", gw); strings.Contains(out, ip1b.String()) {
		t.Errorf("db resolves for a container without the link:\n%s", out)
	}

	// The default bridge, which Docker gives no DNS: NAME.bridge, from the
	// host and from a container that uses us as its only resolver.
	c3 := natestName("onbridge")
	e.run(t, c3, img, "sleep", "600")
	ip3 := e.ip(t, c3, "bridge")
	resolvesTo(t, 2*time.Second, c3+".bridge", ip3)
	if out, err := e.cmd("run", "--rm", "--dns", bridgeGW, img, "ping", "-c1", "-W2", c3+".bridge").CombinedOutput(); err != nil {
		t.Errorf("ping %s.bridge from the default bridge: %v\n%s", c3, err, out)
	}
	// A legacy link on the default bridge (HostConfig.Links), asked of us
	// directly: /etc/hosts would answer a plain lookup.
	c4 := natestName("linker")
	e.run(t, c4, "--link", c3+":bdb", img, "sleep", "600")
	resolvesTo(t, 2*time.Second, c4+".bridge", e.ip(t, c4, "bridge"))
	if out, ok := e.inContainer(t, c4, "nslookup", "bdb.", bridgeGW); !ok || !strings.Contains(out, ip3.String()) {
		t.Errorf("bdb from the linking container on the default bridge: want %v\n%s", ip3, out)
	}

	// rm -f: NXDOMAIN within a second.
	e.must(t, "rm", "-f", c1)
	removed := time.Now()
	eventually(t, time.Second, c1+"."+net+" NXDOMAIN within 1 s of rm -f", func() bool {
		return rcodeOf(t, c1+"."+net) == dns.RcodeNameError
	})
	t.Logf("NXDOMAIN %v after `docker rm -f` returned", time.Since(removed))

	// Engine outage: last known records served and flagged stale; what
	// was removed meanwhile goes on resync, what runs stays.
	if v := staleMetric(t, source); v != 0 {
		t.Errorf("stale metric %d before the outage, want 0", v)
	}
	proxy.cut()
	eventually(t, 5*time.Second, "stale metric 1 while the engine is unreachable", func() bool { return staleMetric(t, source) == 1 })
	resolvesTo(t, time.Second, c2+"."+net, e.ip(t, c2, net))
	ip2 := e.ip(t, c2, net)
	e.must(t, "rm", "-f", c2)
	resolvesTo(t, time.Second, c2+"."+net, ip2) // still the last known record
	proxy.restore(t)
	eventually(t, 6*time.Second, "stale metric back to 0", func() bool { return staleMetric(t, source) == 0 })
	if rc := rcodeOf(t, c2+"."+net); rc != dns.RcodeNameError {
		t.Errorf("%s.%s removed during the outage: rcode %s, want NXDOMAIN", c2, net, dns.RcodeToString[rc])
	}
	resolvesTo(t, time.Second, thief+"."+net, ip1)
	resolvesTo(t, time.Second, c3+".bridge", ip3)
	resolvesTo(t, time.Second, "agent-ep."+net, agentIP)
}

// With the engine's socket absent at start, coredns starts anyway, is not
// ready, and becomes ready once the engine appears.
func TestDockerDNSSocketAbsentAtStart(t *testing.T) {
	testenv.RequireDocker(t)
	proxy := newSockProxyDown(t, "/var/run/docker.sock")
	startCoreDNS(t, "        state off\n        docker "+proxy.endpoint(), nil, false)
	time.Sleep(500 * time.Millisecond)
	if code := readyCode(); code == http.StatusOK {
		t.Fatalf("/ready = %d without an engine, want not ready", code)
	}
	proxy.restore(t)
	eventually(t, 5*time.Second, "ready once the engine appears", func() bool { return readyCode() == http.StatusOK })
}
