package test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestPodmanDNS runs the scenario, as far as Podman supports it, through
// Podman's Docker-compatible service and our coredns binary; the service
// is stopped and started for real mid-test.
func TestPodmanDNS(t *testing.T) {
	p := newPodman(t)
	e := p.eng
	img := busyboxImage(t, "podman")
	// No aardvark-dns: it would hold GATEWAY:53, which is ours here.
	net, third := e.networkIn(t, "10.204", func(int) []string { return []string{"--disable-dns"} })
	gw := fmt.Sprintf("10.204.%d.1", third)

	// Running before the DNS server starts: found by the initial listing.
	// (It also brings the network's bridge and gateway address up.)
	c1 := natestName("centos-1")
	id1 := e.run(t, c1, "--network", net, "--network-alias", "c1", img, "sleep", "600")
	ip1 := e.ip(t, c1, net)

	source := "docker:" + p.endpoint()
	startCoreDNS(t, "        state off\n        docker "+p.endpoint(), []string{gw}, true)
	resolvesTo(t, time.Second, c1+"."+net, ip1)
	resolvesTo(t, time.Second, "c1."+net, ip1)
	resolvesTo(t, time.Second, id1[:12]+"."+net, ip1)
	if got := ptrOf(t, ip1); !slices.Contains(got, c1+"."+net+".") {
		t.Errorf("PTR %v = %v, want %s.%s.", ip1, got, c1, net)
	}

	// From a container whose only resolver is us.
	if out, err := e.cmd("run", "--rm", "--cap-add", "NET_RAW", "--network", net, "--dns", gw, img, "ping", "-c1", "-W2", c1+"."+net).CombinedOutput(); err != nil {
		t.Errorf("ping %s.%s from a container: %v\n%s", c1, net, err, out)
	}

	// Started while we watch; then a restart onto another address.
	c2 := natestName("centos-2")
	e.run(t, c2, "--network", net, "--label", "com.docker.compose.service=web", img, "sleep", "600")
	ip2 := e.ip(t, c2, net)
	resolvesTo(t, 2*time.Second, c2+"."+net, ip2)
	resolvesTo(t, time.Second, "web."+net, ip2)
	e.must(t, "stop", "-t", "0", c1)
	thief := natestName("thief")
	e.run(t, thief, "--network", net, "--ip", ip1.String(), img, "sleep", "600")
	e.must(t, "start", c1)
	ip1b := e.ip(t, c1, net)
	resolvesTo(t, 2*time.Second, c1+"."+net, ip1b)
	if out, ok := e.inContainer(t, c2, "nslookup", c1+"."+net, gw); !ok || !strings.Contains(out, ip1b.String()) {
		t.Errorf("nslookup %s.%s from %s: want %v\n%s", c1, net, c2, ip1b, out)
	}

	// Podman's default network: NAME.podman.
	c3 := natestName("ondefault")
	e.run(t, c3, img, "sleep", "600")
	ip3 := e.ip(t, c3, "podman")
	resolvesTo(t, 2*time.Second, c3+".podman", ip3)

	e.must(t, "rm", "-f", "-t", "0", thief)
	eventually(t, time.Second, thief+"."+net+" NXDOMAIN within 1 s of rm -f", func() bool {
		return rcodeOf(t, thief+"."+net) == dns.RcodeNameError
	})

	// The service stops for real: records stay, flagged stale; a container
	// removed meanwhile goes on resync, the running ones stay.
	p.stop()
	eventually(t, 5*time.Second, "stale metric 1 while the service is down", func() bool { return staleMetric(t, source) == 1 })
	resolvesTo(t, time.Second, c2+"."+net, ip2)
	e.must(t, "rm", "-f", "-t", "0", c2)
	p.start()
	eventually(t, 8*time.Second, "stale metric back to 0", func() bool { return staleMetric(t, source) == 0 })
	if rc := rcodeOf(t, c2+"."+net); rc != dns.RcodeNameError {
		t.Errorf("%s.%s removed while the service was down: rcode %s, want NXDOMAIN", c2, net, dns.RcodeToString[rc])
	}
	resolvesTo(t, time.Second, c1+"."+net, ip1b)
	resolvesTo(t, time.Second, c3+".podman", ip3)
}
