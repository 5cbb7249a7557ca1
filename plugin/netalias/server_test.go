package netalias

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coredns/caddy"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/rewrite"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"

	"github.com/netalias/netalias/state"
)

func init() {
	// The directive order the coredns build uses.
	if err := InsertDirective(); err != nil {
		panic(err)
	}
}

// startServer runs a real CoreDNS server in-process on a random loopback
// port, with cache and netalias (extra inside its block), fed by a state
// directory holding files.
func startServer(t *testing.T, extra string, files ...*state.File) (addr string, dir string) {
	t.Helper()
	return startChain(t, extra, "", files...)
}

// startChain is startServer with more plugins (tail) after netalias's block.
func startChain(t *testing.T, extra, tail string, files ...*state.File) (addr string, dir string) {
	t.Helper()
	dir = t.TempDir()
	for _, f := range files {
		if err := state.Write(dir, f); err != nil {
			t.Fatal(err)
		}
	}
	port := freePort(t)
	corefile := fmt.Sprintf(".:%d {\n bind 127.0.0.1\n cache 30\n netalias {\n  state %s\n  netlink off\n %s\n }\n %s\n}\n", port, dir, extra, tail)
	inst, err := caddy.Start(caddy.CaddyfileInput{Contents: []byte(corefile), ServerTypeName: "dns"})
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	// As CoreDNS stops: the shutdown callbacks (they stop the sources,
	// which would otherwise outlive the test and recreate its removed
	// state directory), then the servers.
	t.Cleanup(func() { inst.ShutdownCallbacks(); inst.Stop() })
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

// The server keeps answering after malformed packets over UDP and TCP.
func TestServerMalformed(t *testing.T) {
	addr, _ := startServer(t, "", bigNetwork(1))
	waitAnswer(t, addr, "e0.big.", 1)

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

// upstream is a DNS server on loopback for forward: ext.example. has an A
// record that changes with every query it gets; every other name is
// NXDOMAIN with a SOA (which cache keeps).
type upstream struct {
	addr    string
	queries atomic.Int32
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{addr: pc.LocalAddr().String()}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		n := u.queries.Add(1)
		m := new(dns.Msg)
		m.SetReply(r)
		q := r.Question[0]
		switch {
		case q.Name == "ext.example." && q.Qtype == dns.TypeA:
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, byte(n))}}
		case q.Name == "ext.example.":
		default:
			m.Rcode = dns.RcodeNameError
			m.Ns = []dns.RR{test.SOA(". 60 IN SOA a.root. hostmaster.root. 1 7200 1800 86400 60")}
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return u
}

// With cache in the block, netalias runs before it: its answers change the
// moment the store does (a cached copy would last the 30 s TTL), names that
// were forwarded and cached before a network of theirs existed are answered
// by netalias at once, and forwarded answers are still cached.
func TestServerBeforeCache(t *testing.T) {
	up := startUpstream(t)
	f := bigNetwork(1)
	addr, dir := startChain(t, "ttl 30", "forward . "+up.addr, f)
	waitAnswer(t, addr, "e0.big.", 1)

	ext := func() string {
		t.Helper()
		r := exchange(t, "udp", addr, "ext.example.", dns.TypeA)
		if len(r.Answer) != 1 {
			t.Fatalf("ext.example.: %v", r)
		}
		return r.Answer[0].(*dns.A).A.String()
	}
	// startChain's probes before the first load went upstream too.
	probes := up.queries.Load()
	first := ext()
	if again := ext(); again != first || up.queries.Load() != probes+1 {
		t.Fatalf("forwarded answer not cached: %s then %s, upstream asked %d times", first, again, up.queries.Load()-probes)
	}
	// Forwarded before its network exists: upstream's NXDOMAIN, cached.
	if r := exchange(t, "udp", addr, "x.newnet.", dns.TypeA); r.Rcode != dns.RcodeNameError {
		t.Fatalf("x.newnet. before its network: %v", r)
	}
	asked := up.queries.Load()

	f.Endpoints[0].IPv4 = netip.MustParseAddr("10.202.4.99")
	if err := state.Write(dir, f); err != nil {
		t.Fatal(err)
	}
	nf := &state.File{Network: state.Network{ID: state.NewID(), Name: "newnet", Subnet: netip.MustParsePrefix("10.202.5.0/24"), Gateway: netip.MustParseAddr("10.202.5.1")},
		Endpoints: []state.Endpoint{{ID: state.NewID(), Name: "x", IPv4: netip.MustParseAddr("10.202.5.2"), Container: "x"}}}
	if err := state.Write(dir, nf); err != nil {
		t.Fatal(err)
	}
	answers := func(name, want string) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for {
			r := exchange(t, "udp", addr, name, dns.TypeA)
			if len(r.Answer) == 1 && r.Answer[0].(*dns.A).A.String() == want {
				if r.Answer[0].Header().Ttl != 30 {
					t.Fatalf("%s: TTL %d, want 30 (a cached copy counts down)", name, r.Answer[0].Header().Ttl)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not follow the state file within 2 s (cached?): %v", name, r)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	answers("e0.big.", "10.202.4.99")
	answers("x.newnet.", "10.202.5.2")
	if got := ext(); got != first || up.queries.Load() != asked {
		t.Fatalf("forwarded answer after the change: %s (was %s), upstream asked %d times (was %d)", got, first, up.queries.Load(), asked)
	}
}

// rewrite still runs before netalias (the README's chain): a name it
// renames into a netalias name is answered, under the name asked.
func TestServerRewriteBeforeNetalias(t *testing.T) {
	addr, _ := startChain(t, "", "rewrite name exact db.example. e0.big.", bigNetwork(1))
	waitAnswer(t, addr, "e0.big.", 1)
	r := exchange(t, "udp", addr, "db.example.", dns.TypeA)
	if len(r.Answer) != 1 || r.Answer[0].Header().Name != "db.example." || r.Answer[0].(*dns.A).A.String() != "10.202.4.2" {
		t.Fatalf("db.example. rewritten to e0.big.: %v", r)
	}
}
