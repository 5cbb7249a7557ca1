package netalias

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	"github.com/miekg/dns"

	"github.com/netalias/netalias/state"
)

func init() {
	d := slices.Clone(dnsserver.Directives)
	if !slices.Contains(d, "netalias") {
		i := slices.Index(d, "hosts")
		if err := dnsserver.SetDirectives(slices.Insert(d, i, "netalias")); err != nil {
			panic(err)
		}
	}
}

// startServer runs a real CoreDNS server in-process on a random loopback
// port, fed by a state directory holding files.
func startServer(t *testing.T, extra string, files ...*state.File) (addr string, dir string) {
	t.Helper()
	dir = t.TempDir()
	for _, f := range files {
		if err := state.Write(dir, f); err != nil {
			t.Fatal(err)
		}
	}
	port := freePort(t)
	corefile := fmt.Sprintf(".:%d {\n bind 127.0.0.1\n cache 30\n netalias {\n  state %s\n  netlink off\n %s\n }\n}\n", port, dir, extra)
	inst, err := caddy.Start(caddy.CaddyfileInput{Contents: []byte(corefile), ServerTypeName: "dns"})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { inst.Stop() })
	udp := fmt.Sprintf("127.0.0.1:%d", port)
	// Wait for the first load with names never asked before: an answer the
	// cache kept from before the load (SERVFAIL: no next plugin) would
	// otherwise linger.
	for i := 0; ; i++ {
		r := exchange(t, "tcp", udp, fmt.Sprintf("probe%d.%s.", i, files[0].Network.Name), dns.TypeA)
		if r.Rcode == dns.RcodeNameError || r.Rcode == dns.RcodeRefused {
			break
		}
		if i > 500 {
			t.Fatal("state never loaded")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return udp, dir
}

func bigNetwork(n int) *state.File {
	f := &state.File{Network: state.Network{ID: state.NewID(), Name: "big", Subnet: netip.MustParsePrefix("10.202.4.0/24"), Gateway: netip.MustParseAddr("10.202.4.1")}}
	for i := 0; i < n; i++ {
		f.Endpoints = append(f.Endpoints, state.Endpoint{ID: state.NewID(), Name: fmt.Sprintf("e%d", i), Aliases: []string{"all"}, IPv4: netip.MustParseAddr(fmt.Sprintf("10.202.4.%d", i+2)), Container: fmt.Sprintf("e%d", i)})
	}
	return f
}

func exchange(t *testing.T, netw, addr, name string, qt uint16) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: netw, Timeout: 2 * time.Second}
	m := new(dns.Msg)
	m.SetQuestion(name, qt)
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s %s: %v", netw, name, err)
	}
	return r
}

func waitAnswer(t *testing.T, addr, name string, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		r := exchange(t, "tcp", addr, name, dns.TypeA)
		if len(r.Answer) == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	r := exchange(t, "tcp", addr, name, dns.TypeA)
	t.Fatalf("%s: never got %d answers: %v", name, want, r)
}

// Large answer sets: truncated over UDP, whole over TCP.
func TestServerTruncation(t *testing.T) {
	addr, _ := startServer(t, "", bigNetwork(100))
	waitAnswer(t, addr, "all.big.", 100)
	r := exchange(t, "udp", addr, "all.big.", dns.TypeA)
	if !r.Truncated || len(r.Answer) >= 100 {
		t.Fatalf("udp: truncated=%v with %d answers, want TC and fewer than 100", r.Truncated, len(r.Answer))
	}
}

// Answers follow changes at once even with cache before netalias, and the
// server keeps answering after malformed packets over UDP and TCP.
func TestServerCacheBypassAndMalformed(t *testing.T) {
	f := bigNetwork(1)
	addr, dir := startServer(t, "", f)
	waitAnswer(t, addr, "e0.big.", 1)
	f.Endpoints[0].IPv4 = netip.MustParseAddr("10.202.4.99")
	if err := state.Write(dir, f); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		r := exchange(t, "udp", addr, "e0.big.", dns.TypeA)
		if len(r.Answer) == 1 && r.Answer[0].(*dns.A).A.String() == "10.202.4.99" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("answer did not follow the state file (cached?)")
		}
		time.Sleep(5 * time.Millisecond)
	}

	junk := [][]byte{{}, {0}, {0xff, 0xff}, make([]byte, 12), []byte("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01"),
		[]byte("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3fabc"), []byte("\x00\x00\x80\x00\xff\xff\xff\xff\xff\xff\xff\xff")}
	for _, b := range junk {
		u, err := net.Dial("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		u.Write(b)
		u.Close()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.Write(append([]byte{byte(len(b) >> 8), byte(len(b))}, b...))
		c.Write([]byte{0x00, 0x40, 1, 2, 3}) // a length promising more than sent
		c.Close()
	}
	for _, netw := range []string{"udp", "tcp"} {
		r := exchange(t, netw, addr, "e0.big.", dns.TypeA)
		if len(r.Answer) != 1 {
			t.Fatalf("%s after malformed packets: %v", netw, r)
		}
	}
}

// clients is enforced before cache: a refused client gets REFUSED even for
// a name another client just put in the cache.
func TestServerRefusedBeforeCache(t *testing.T) {
	addr, _ := startServer(t, "clients 10.202.0.0/16", bigNetwork(1))
	r := exchange(t, "udp", addr, "e0.big.", dns.TypeA)
	if r.Rcode != dns.RcodeRefused {
		t.Fatalf("loopback not in clients: rcode %s, want REFUSED", dns.RcodeToString[r.Rcode])
	}
}

func TestMain(m *testing.M) {
	// caddy.Start wants a writable place for its own state.
	os.Setenv("HOME", filepath.Join(os.TempDir()))
	os.Exit(m.Run())
}

// freePort finds a loopback port free for both UDP and TCP.
func freePort(t *testing.T) int {
	for i := 0; i < 50; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port
		}
	}
	t.Fatal("no free port")
	return 0
}
