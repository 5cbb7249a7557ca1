package test

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/netalias/netalias/internal/testenv"
	"github.com/netalias/netalias/state"
)

// dnsAddr is where the DNS tests' server listens on the host's loopback
// (127.0.2.x is this area's range; port 53 as in production).
const dnsAddr = "127.0.2.1"

func dnRand() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// dnSubnet returns a random /24 of 10.202.0.0/16 (this area's range).
func dnSubnet() (subnet, gateway string, third int) {
	n, _ := rand.Int(rand.Reader, big.NewInt(200))
	third = int(n.Int64()) + 10
	return fmt.Sprintf("10.202.%d.0/24", third), fmt.Sprintf("10.202.%d.1", third), third
}

// dnNetns creates a named namespace and removes exactly it at cleanup.
func dnNetns(t *testing.T, role string) string {
	t.Helper()
	name := "ndn-" + dnRand() + "-" + role
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if _, err := os.Stat("/run/netns/" + name); err == nil {
			exec.Command("ip", "netns", "del", name).Run()
		}
		os.RemoveAll(filepath.Join("/etc/netns", name))
	})
	return name
}

type dnAgent struct {
	t   *testing.T
	bin string
	dir string
}

func (a *dnAgent) run(args ...string) string {
	a.t.Helper()
	cmd := exec.Command(a.bin, append([]string{"--state-dir", a.dir}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		a.t.Fatalf("netalias %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (a *dnAgent) network(name, subnet string) {
	a.t.Helper()
	a.run("network", "create", "--subnet", subnet, name)
	a.t.Cleanup(func() {
		exec.Command(a.bin, "--state-dir", a.dir, "network", "rm", "--force", name).Run()
	})
}

func (a *dnAgent) addr(network, endpoint string) string {
	a.t.Helper()
	f, err := state.Read(state.NetworkPath(a.dir, network))
	if err != nil {
		a.t.Fatal(err)
	}
	for _, e := range f.Endpoints {
		if e.Name == endpoint {
			return e.IPv4.String()
		}
	}
	a.t.Fatalf("no endpoint %s on %s", endpoint, network)
	return ""
}

// dnCorefile turns Corefile.example into this test's: the agent's state
// directory, explicit listen addresses (loopback 127.0.2.1 and the
// gateways; never the wildcard, other tests run DNS servers on this host),
// side ports on 127.0.2.1, and an upstream on loopback where nothing
// listens (tests send nothing off the machine).
func dnCorefile(t *testing.T, stateDir string, bind ...string) string {
	t.Helper()
	b, err := os.ReadFile("../Corefile.example")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, r := range [][2]string{
		{"state /var/lib/netalias", "state " + stateDir},
		{"health :8080", "health " + dnsAddr + ":8080"},
		{"ready :8181", "ready " + dnsAddr + ":8181"},
		{"prometheus :9153", "prometheus " + dnsAddr + ":9153"},
		{"forward . /etc/resolv.conf", "forward . 127.0.2.254"},
		{"    errors\n", "    errors\n    bind " + strings.Join(bind, " ") + "\n"},
	} {
		if !strings.Contains(s, r[0]) {
			t.Fatalf("Corefile.example no longer contains %q", r[0])
		}
		s = strings.Replace(s, r[0], r[1], 1)
	}
	p := filepath.Join(t.TempDir(), "Corefile")
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// dnCoreDNS starts coredns with corefile, waits until ready, stops it at
// cleanup.
func dnCoreDNS(t *testing.T, corefile string) {
	t.Helper()
	cmd := exec.Command(binary(t, "coredns"), "-conf", corefile)
	logf, err := os.Create(filepath.Join(t.TempDir(), "coredns.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("coredns log:\n%s", b)
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + dnsAddr + ":8181/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("coredns not ready after 15s (last: %v)", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dnDig runs dig (in namespace ns, if set) and returns its +short output
// or, with status, the rcode.
func dnDig(t *testing.T, ns string, args ...string) string {
	t.Helper()
	full := append([]string{"+time=2", "+tries=1"}, args...)
	var cmd *exec.Cmd
	if ns == "" {
		cmd = exec.Command("dig", full...)
	} else {
		cmd = exec.Command("ip", append([]string{"netns", "exec", ns, "dig"}, full...)...)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("dig %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func dnStatus(out string) string {
	i := strings.Index(out, "status: ")
	if i < 0 {
		return "?"
	}
	s := out[i+len("status: "):]
	return s[:strings.IndexByte(s, ',')]
}

// dnAsk queries the server from the host (for poll loops: no process start).
func dnAsk(t *testing.T, name string) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	c := &dns.Client{Timeout: time.Second}
	r, _, err := c.Exchange(m, dnsAddr+":53")
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return r
}

// dnWithin polls until cond holds and reports how long it took; it fails
// when that exceeds limit (the whole wait is capped at 5 s).
func dnWithin(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("%s: not after 5s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
	d := time.Since(start)
	t.Logf("%s after %v", what, d.Round(100*time.Microsecond))
	if d > limit {
		t.Errorf("%s took %v, want within %v", what, d, limit)
	}
}

func TestDNSEndToEnd(t *testing.T) {
	testenv.RequireRoot(t)
	for _, c := range []string{"ip", "dig", "ping"} {
		testenv.RequireCommand(t, c)
	}
	ag := &dnAgent{t: t, bin: binary(t, "netalias"), dir: t.TempDir()}
	sub1, gw1, _ := dnSubnet()
	sub2, gw2, third2 := dnSubnet()
	for sub2 == sub1 {
		sub2, gw2, third2 = dnSubnet()
	}
	ag.network("testnet", sub1)
	ag.network("othernet", sub2)

	c1, c2, c3 := dnNetns(t, "c1"), dnNetns(t, "c2"), dnNetns(t, "c3")
	ag.run("connect", "testnet", c1, "--name", "c1", "--alias", "centos-1", "--alias", "web")
	ag.run("connect", "testnet", c2, "--name", "c2", "--alias", "web")
	ag.run("connect", "othernet", c3, "--name", "c3")
	c1IP, c2IP := ag.addr("testnet", "c1"), ag.addr("testnet", "c2")

	// A client outside every managed network: a namespace behind a plain
	// veth pair on its own /30, routed to testnet's gateway.
	far := dnNetns(t, "far")
	hostEnd := "ndnf" + dnRand()
	farNet := 250
	if third2 == farNet {
		farNet = 251
	}
	for _, args := range [][]string{
		{"link", "add", hostEnd, "type", "veth", "peer", "name", "eth0", "netns", far},
		{"addr", "add", fmt.Sprintf("10.202.%d.1/30", farNet), "dev", hostEnd},
		{"link", "set", hostEnd, "up"},
		{"-n", far, "addr", "add", fmt.Sprintf("10.202.%d.2/30", farNet), "dev", "eth0"},
		{"-n", far, "link", "set", "eth0", "up"},
		{"-n", far, "route", "add", gw1 + "/32", "via", fmt.Sprintf("10.202.%d.1", farNet)},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	t.Cleanup(func() { exec.Command("ip", "link", "del", hostEnd).Run() })

	dnCoreDNS(t, dnCorefile(t, ag.dir, dnsAddr, gw1, gw2))

	// From the host.
	if got := dnDig(t, "", "@"+dnsAddr, "+short", "centos-1.testnet"); got != c1IP {
		t.Fatalf("host: centos-1.testnet = %q, want %q", got, c1IP)
	}
	if got := dnDig(t, "", "@"+dnsAddr, "+short", "-x", c1IP); got != "c1.testnet." {
		t.Fatalf("host: -x %s = %q, want c1.testnet.", c1IP, got)
	}
	web := dnDig(t, "", "@"+dnsAddr, "+short", "web.testnet")
	if !strings.Contains(web, c1IP) || !strings.Contains(web, c2IP) || len(strings.Fields(web)) != 2 {
		t.Fatalf("host: web.testnet = %q, want %s and %s", web, c1IP, c2IP)
	}

	// Inside c2, with nothing but its resolv.conf.
	for _, name := range []string{"centos-1", "centos-1.testnet"} {
		out, err := exec.Command("ip", "netns", "exec", c2, "ping", "-c1", "-W2", name).CombinedOutput()
		if err != nil {
			rc, _ := os.ReadFile(filepath.Join("/etc/netns", c2, "resolv.conf"))
			t.Fatalf("c2: ping %s: %v\n%s\nresolv.conf:\n%s", name, err, out, rc)
		}
		if !strings.Contains(string(out), c1IP) {
			t.Fatalf("c2: ping %s did not reach %s:\n%s", name, c1IP, out)
		}
	}

	// A client on another network does not see testnet.
	if st := dnStatus(dnDig(t, c3, "@"+gw2, "centos-1.testnet")); st != "NXDOMAIN" {
		t.Fatalf("c3 (othernet): centos-1.testnet status %s, want NXDOMAIN", st)
	}
	// A source outside clients is refused, whatever the name.
	for _, name := range []string{"centos-1.testnet", "example.org"} {
		if st := dnStatus(dnDig(t, far, "@"+gw1, name)); st != "REFUSED" {
			t.Fatalf("outside client: %s status %s, want REFUSED", name, st)
		}
	}

	// disconnect: NXDOMAIN within 100 ms; the shared alias keeps answering.
	ag.run("disconnect", "testnet", c1)
	dnWithin(t, 100*time.Millisecond, "NXDOMAIN after disconnect", func() bool {
		return dnAsk(t, "centos-1.testnet").Rcode == dns.RcodeNameError
	})
	if r := dnAsk(t, "web.testnet"); len(r.Answer) != 1 || r.Answer[0].(*dns.A).A.String() != c2IP {
		t.Fatalf("web.testnet after c1 left: %v, want only %s", r.Answer, c2IP)
	}

	// c1 back, then its namespace deleted behind the agent's back.
	ag.run("connect", "testnet", c1, "--name", "c1", "--alias", "centos-1")
	dnWithin(t, time.Second, "centos-1.testnet back", func() bool { return len(dnAsk(t, "centos-1.testnet").Answer) == 1 })
	if out, err := exec.Command("ip", "netns", "del", c1).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del %s: %v: %s", c1, err, out)
	}
	dnWithin(t, 100*time.Millisecond, "NXDOMAIN after the namespace was deleted", func() bool {
		return dnAsk(t, "centos-1.testnet").Rcode == dns.RcodeNameError
	})
}
