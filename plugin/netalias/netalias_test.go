package netalias

import (
	"context"
	"net/netip"
	"testing"

	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/pkg/fall"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"

	"github.com/netalias/netalias/netwatch"
)

// nextRcode marks "handed to the next plugin" (the next handler returns it).
const nextRcode = dns.RcodeNotZone

var (
	hostIP  = "127.0.0.1"
	c1IP    = "10.202.1.2" // testnet: c1, alias centos-1 and web
	c2IP    = "10.202.1.3" // testnet: c2, alias web (v4 only)
	c3IP    = "10.202.1.4" // testnet: c3, --link c1:db
	o1IP    = "10.202.2.2" // othernet only
	m1IPo   = "10.202.2.5" // container m1: on testnet and othernet (this is its othernet address)
	dualIPt = "10.202.1.6" // container dual on both networks
	dualIPo = "10.202.2.6"
	strayIP = "10.202.2.77" // inside othernet's subnet, no endpoint
	farIP   = "192.0.2.7"   // outside every managed network
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func testStore() *netwatch.Store {
	st := netwatch.NewStore("state")
	st.Replace("state", []*netwatch.Network{
		{
			Name: "testnet", Subnet: netip.MustParsePrefix("10.202.1.0/24"), Gateway: addr("10.202.1.1"),
			Subnet6: netip.MustParsePrefix("fd00:202:1::/64"), Gateway6: addr("fd00:202:1::1"),
			Endpoints: []netwatch.Endpoint{
				{Name: "c1", Aliases: []string{"centos-1", "web"}, IPv4: addr(c1IP), IPv6: addr("fd00:202:1::2"), Container: "c1"},
				{Name: "c2", Aliases: []string{"web"}, IPv4: addr(c2IP), Container: "c2"},
				{Name: "c3", IPv4: addr(c3IP), Container: "c3", Links: []netwatch.Link{{Target: "c1", Alias: "db"}}},
				{Name: "m1", IPv4: addr("10.202.1.5"), Container: "m1"},
				{Name: "dual", IPv4: addr(dualIPt), Container: "dual"},
			},
		},
		{
			Name: "othernet", Subnet: netip.MustParsePrefix("10.202.2.0/24"), Gateway: addr("10.202.2.1"),
			Endpoints: []netwatch.Endpoint{
				{Name: "o1", IPv4: addr(o1IP), Container: "o1"},
				{Name: "m1", IPv4: addr(m1IPo), Container: "m1"},
				{Name: "dual", IPv4: addr(dualIPo), Container: "dual"},
			},
		},
	})
	// Docker knows another container on testnet: merged, never lost.
	st.Replace("docker", []*netwatch.Network{{
		Name: "TestNet",
		Endpoints: []netwatch.Endpoint{
			{Name: "d1", Aliases: []string{"web"}, IPv4: addr("10.202.1.9"), Container: "d1"},
		},
	}})
	return st
}

func newHandler(st *netwatch.Store) *Netalias {
	return &Netalias{
		Next:    test.NextHandler(nextRcode, nil),
		Zones:   []string{"."},
		TTL:     5,
		Store:   st,
		Clients: Clients{Managed: true},
		m:       &answerCounters{},
	}
}

type tcase struct {
	test.Case
	from string
	next bool
}

func soa(apex string) dns.RR {
	return test.SOA(apex + " 5 IN SOA ns.dns." + apex + " hostmaster." + apex + " 1 7200 1800 86400 5")
}

var cases = []tcase{
	// NAME.NETWORK and ALIAS.NETWORK from the host, case-insensitive.
	{from: hostIP, Case: test.Case{Qname: "c1.testnet.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("c1.testnet. 5 IN A " + c1IP)}}},
	{from: hostIP, Case: test.Case{Qname: "Centos-1.TestNet.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("Centos-1.TestNet. 5 IN A " + c1IP)}}},
	{from: hostIP, Case: test.Case{Qname: "centos-1.testnet.", Qtype: dns.TypeAAAA, Answer: []dns.RR{test.AAAA("centos-1.testnet. 5 IN AAAA fd00:202:1::2")}}},
	// The gateway address is the host too.
	{from: "10.202.1.1", Case: test.Case{Qname: "o1.othernet.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("o1.othernet. 5 IN A " + o1IP)}}},
	// Shared alias: every member, from every source, no duplicates.
	{from: hostIP, Case: test.Case{Qname: "web.testnet.", Qtype: dns.TypeA, Answer: []dns.RR{
		test.A("web.testnet. 5 IN A " + c1IP), test.A("web.testnet. 5 IN A " + c2IP), test.A("web.testnet. 5 IN A 10.202.1.9")}}},
	// NODATA: AAAA of a v4-only name, MX, TXT.
	{from: hostIP, Case: test.Case{Qname: "c2.testnet.", Qtype: dns.TypeAAAA, Ns: []dns.RR{soa("testnet.")}}},
	{from: hostIP, Case: test.Case{Qname: "c1.testnet.", Qtype: dns.TypeMX, Ns: []dns.RR{soa("testnet.")}}},
	{from: hostIP, Case: test.Case{Qname: "c1.testnet.", Qtype: dns.TypeTXT, Ns: []dns.RR{soa("testnet.")}}},
	{from: hostIP, Case: test.Case{Qname: "c1.testnet.", Qtype: dns.TypePTR, Ns: []dns.RR{soa("testnet.")}}},
	// NXDOMAIN with SOA: known network, unknown name; deeper names.
	{from: hostIP, Case: test.Case{Qname: "nope.testnet.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa("testnet.")}}},
	{from: hostIP, Case: test.Case{Qname: "x.c1.testnet.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa("testnet.")}}},
	// Unknown network: the next plugin (forward keeps the internet reachable).
	{from: hostIP, next: true, Case: test.Case{Qname: "www.example.org.", Qtype: dns.TypeA}},
	{from: hostIP, next: true, Case: test.Case{Qname: "c1.nonet.", Qtype: dns.TypeA}},
	// Bare names from the host go on (the host has no network of its own).
	{from: hostIP, next: true, Case: test.Case{Qname: "c1.", Qtype: dns.TypeA}},

	// Scoping: a container sees its networks only.
	{from: c2IP, Case: test.Case{Qname: "centos-1.testnet.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("centos-1.testnet. 5 IN A " + c1IP)}}},
	{from: o1IP, Case: test.Case{Qname: "centos-1.testnet.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa("testnet.")}}},
	{from: o1IP, Case: test.Case{Qname: "o1.othernet.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("o1.othernet. 5 IN A " + o1IP)}}},
	// An unknown address inside a subnet sees that network only.
	{from: strayIP, Case: test.Case{Qname: "c1.testnet.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa("testnet.")}}},
	{from: strayIP, Case: test.Case{Qname: "o1.othernet.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("o1.othernet. 5 IN A " + o1IP)}}},

	// Bare names from the client's networks.
	{from: c2IP, Case: test.Case{Qname: "centos-1.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("centos-1. 5 IN A " + c1IP)}}},
	{from: c2IP, Case: test.Case{Qname: "c2.", Qtype: dns.TypeAAAA, Ns: []dns.RR{soa("testnet.")}}},
	// ... all networks of the container, not only the one the packet came from.
	{from: m1IPo, Case: test.Case{Qname: "centos-1.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("centos-1. 5 IN A " + c1IP)}}},
	// ... with the address on the shared network, never another (moby#46162).
	{from: o1IP, Case: test.Case{Qname: "dual.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("dual. 5 IN A " + dualIPo)}}},
	{from: c2IP, Case: test.Case{Qname: "dual.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("dual. 5 IN A " + dualIPt)}}},
	// ... and only from them: not on the client's networks → next plugin.
	{from: o1IP, next: true, Case: test.Case{Qname: "centos-1.", Qtype: dns.TypeA}},
	{from: c2IP, next: true, Case: test.Case{Qname: "nosuch.", Qtype: dns.TypeA}},
	// Links: for the linking container only.
	{from: c3IP, Case: test.Case{Qname: "db.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("db. 5 IN A " + c1IP)}}},
	{from: c2IP, next: true, Case: test.Case{Qname: "db.", Qtype: dns.TypeA}},

	// PTR, v4 and v6, scoped like names.
	{from: hostIP, Case: test.Case{Qname: "2.1.202.10.in-addr.arpa.", Qtype: dns.TypePTR, Answer: []dns.RR{test.PTR("2.1.202.10.in-addr.arpa. 5 IN PTR c1.testnet.")}}},
	{from: hostIP, Case: test.Case{Qname: "2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.2.0.2.0.0.0.d.f.ip6.arpa.", Qtype: dns.TypePTR,
		Answer: []dns.RR{test.PTR("2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.2.0.2.0.0.0.d.f.ip6.arpa. 5 IN PTR c1.testnet.")}}},
	{from: c2IP, Case: test.Case{Qname: "2.1.202.10.in-addr.arpa.", Qtype: dns.TypePTR, Answer: []dns.RR{test.PTR("2.1.202.10.in-addr.arpa. 5 IN PTR c1.testnet.")}}},
	{from: o1IP, next: true, Case: test.Case{Qname: "2.1.202.10.in-addr.arpa.", Qtype: dns.TypePTR}},
	{from: hostIP, next: true, Case: test.Case{Qname: "1.2.0.192.in-addr.arpa.", Qtype: dns.TypePTR}},

	// Outside clients: REFUSED whatever the name.
	{from: farIP, Case: test.Case{Qname: "c1.testnet.", Qtype: dns.TypeA, Rcode: dns.RcodeRefused}},
	{from: farIP, Case: test.Case{Qname: "www.example.org.", Qtype: dns.TypeA, Rcode: dns.RcodeRefused}},
}

// run asks h through the clients gate, as the server does.
func run(t *testing.T, h *Netalias, tc tcase) *dns.Msg {
	t.Helper()
	rec := dnstest.NewRecorder(&test.ResponseWriter{RemoteIP: tc.from})
	code, err := newGate(h, h).ServeDNS(context.Background(), rec, tc.Msg())
	if err != nil {
		t.Fatalf("%s %s from %s: %v", tc.Qname, dns.TypeToString[tc.Qtype], tc.from, err)
	}
	if tc.next {
		if code != nextRcode || rec.Msg != nil {
			t.Fatalf("%s %s from %s: want next plugin, got rcode %d msg %v", tc.Qname, dns.TypeToString[tc.Qtype], tc.from, code, rec.Msg)
		}
		return nil
	}
	if code == dns.RcodeRefused && rec.Msg == nil {
		// The server writes REFUSED for us; check what it would write.
		if tc.Rcode != dns.RcodeRefused {
			t.Fatalf("%s from %s: refused, want rcode %d", tc.Qname, tc.from, tc.Rcode)
		}
		return nil
	}
	if rec.Msg == nil {
		t.Fatalf("%s %s from %s: nothing written (rcode %d)", tc.Qname, dns.TypeToString[tc.Qtype], tc.from, code)
	}
	if err := test.SortAndCheck(rec.Msg, tc.Case); err != nil {
		t.Fatalf("%s %s from %s: %v", tc.Qname, dns.TypeToString[tc.Qtype], tc.from, err)
	}
	return rec.Msg
}

func TestServeDNS(t *testing.T) {
	h := newHandler(testStore())
	for _, tc := range cases {
		m := run(t, h, tc)
		if m != nil && tc.Rcode != dns.RcodeRefused && !m.Authoritative {
			t.Errorf("%s: answer not authoritative", tc.Qname)
		}
	}
}

func TestZones(t *testing.T) {
	h := newHandler(testStore())
	h.Zones = []string{"netalias.test."}
	for _, tc := range []tcase{
		{from: hostIP, Case: test.Case{Qname: "c1.testnet.netalias.test.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("c1.testnet.netalias.test. 5 IN A " + c1IP)}}},
		{from: hostIP, Case: test.Case{Qname: "nope.testnet.netalias.test.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa("testnet.netalias.test.")}}},
		{from: hostIP, Case: test.Case{Qname: "testnet.netalias.test.", Qtype: dns.TypeA, Ns: []dns.RR{soa("testnet.netalias.test.")}}},
		{from: hostIP, next: true, Case: test.Case{Qname: "c1.testnet.", Qtype: dns.TypeA}},
		{from: hostIP, Case: test.Case{Qname: "2.1.202.10.in-addr.arpa.", Qtype: dns.TypePTR, Answer: []dns.RR{test.PTR("2.1.202.10.in-addr.arpa. 5 IN PTR c1.testnet.netalias.test.")}}},
		{from: c2IP, Case: test.Case{Qname: "centos-1.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("centos-1. 5 IN A " + c1IP)}}},
	} {
		run(t, h, tc)
	}
}

func TestFallthrough(t *testing.T) {
	h := newHandler(testStore())
	h.Fall = fall.Root
	run(t, h, tcase{from: hostIP, next: true, Case: test.Case{Qname: "nope.testnet.", Qtype: dns.TypeA}})
	run(t, h, tcase{from: o1IP, next: true, Case: test.Case{Qname: "c1.testnet.", Qtype: dns.TypeA}})
	h.Fall = fall.F{}
	h.Fall.SetZonesFromArgs([]string{"othernet."})
	run(t, h, tcase{from: hostIP, Case: test.Case{Qname: "nope.testnet.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa("testnet.")}}})
	run(t, h, tcase{from: hostIP, next: true, Case: test.Case{Qname: "nope.othernet.", Qtype: dns.TypeA}})
}

func TestClients(t *testing.T) {
	st := testStore()
	st.SetHostAddrs(map[netip.Addr]struct{}{addr("198.51.100.4"): {}})
	h := newHandler(st)
	q := test.Case{Qname: "c1.testnet.", Qtype: dns.TypeA}
	ans := test.Case{Qname: "c1.testnet.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("c1.testnet. 5 IN A " + c1IP)}}
	// A host address is managed, and sees everything.
	run(t, h, tcase{from: "198.51.100.4", Case: ans})
	run(t, h, tcase{from: "::1", Case: ans})
	refused := q
	refused.Rcode = dns.RcodeRefused
	run(t, h, tcase{from: farIP, Case: refused})
	// An explicit CIDR admits the far client (and it sees everything).
	h.Clients = Clients{Managed: true, Prefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
	run(t, h, tcase{from: farIP, Case: ans})
	// Only the CIDR: loopback is refused now.
	h.Clients = Clients{Prefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}
	run(t, h, tcase{from: hostIP, Case: refused})
	h.Clients = Clients{Any: true}
	run(t, h, tcase{from: "203.0.113.1", Case: ans})
}

func TestRotation(t *testing.T) {
	h := newHandler(testStore())
	firsts := map[string]bool{}
	for i := 0; i < 6; i++ {
		m := run(t, h, tcase{from: hostIP, Case: test.Case{Qname: "web.testnet.", Qtype: dns.TypeA, Answer: []dns.RR{
			test.A("web.testnet. 5 IN A " + c1IP), test.A("web.testnet. 5 IN A " + c2IP), test.A("web.testnet. 5 IN A 10.202.1.9")}}})
		_ = m
	}
	// run sorts; query again without sorting to see the order.
	for i := 0; i < 6; i++ {
		rec := dnstest.NewRecorder(&test.ResponseWriter{RemoteIP: hostIP})
		newGate(h, h).ServeDNS(context.Background(), rec, test.Case{Qname: "web.testnet.", Qtype: dns.TypeA}.Msg())
		firsts[rec.Msg.Answer[0].(*dns.A).A.String()] = true
	}
	if len(firsts) != 3 {
		t.Fatalf("first answer over 6 queries took %d distinct values, want 3 (rotation)", len(firsts))
	}
}

func TestUpdatesApplyAtOnce(t *testing.T) {
	st := testStore()
	h := newHandler(st)
	// A shared alias keeps answering when one member leaves.
	st.Update("state", &netwatch.Network{Name: "testnet", Subnet: netip.MustParsePrefix("10.202.1.0/24"), Endpoints: []netwatch.Endpoint{
		{Name: "c2", Aliases: []string{"web"}, IPv4: addr(c2IP), Container: "c2"},
	}})
	run(t, h, tcase{from: hostIP, Case: test.Case{Qname: "web.testnet.", Qtype: dns.TypeA, Answer: []dns.RR{
		test.A("web.testnet. 5 IN A " + c2IP), test.A("web.testnet. 5 IN A 10.202.1.9")}}})
	run(t, h, tcase{from: hostIP, Case: test.Case{Qname: "c1.testnet.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa("testnet.")}}})
	// m1 left testnet: from its othernet address it no longer sees testnet.
	st.Update("state", &netwatch.Network{Name: "testnet", Subnet: netip.MustParsePrefix("10.202.1.0/24"), Endpoints: []netwatch.Endpoint{
		{Name: "c2", Aliases: []string{"web"}, IPv4: addr(c2IP), Container: "c2"},
	}})
	run(t, h, tcase{from: m1IPo, Case: test.Case{Qname: "c2.testnet.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa("testnet.")}}})
	// The docker source's part of testnet survives the state source removing it.
	st.Remove("state", "testnet")
	run(t, h, tcase{from: hostIP, Case: test.Case{Qname: "d1.testnet.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("d1.testnet. 5 IN A 10.202.1.9")}}})
	st.Remove("docker", "testnet")
	run(t, h, tcase{from: hostIP, next: true, Case: test.Case{Qname: "d1.testnet.", Qtype: dns.TypeA}})
}

func TestVethGone(t *testing.T) {
	st := netwatch.NewStore("state")
	st.SyncLinks(map[string]struct{}{"veth-a": {}, "veth-b": {}})
	st.Replace("state", []*netwatch.Network{{Name: "n", Subnet: netip.MustParsePrefix("10.202.3.0/24"), Endpoints: []netwatch.Endpoint{
		{Name: "a", Aliases: []string{"svc"}, IPv4: addr("10.202.3.2"), HostVeth: "veth-a", Container: "a"},
		{Name: "b", Aliases: []string{"svc"}, IPv4: addr("10.202.3.3"), HostVeth: "veth-b", Container: "b"},
	}}})
	h := newHandler(st)
	run(t, h, tcase{from: hostIP, Case: test.Case{Qname: "a.n.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("a.n. 5 IN A 10.202.3.2")}}})
	st.LinkRemoved("veth-a")
	run(t, h, tcase{from: hostIP, Case: test.Case{Qname: "a.n.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa("n.")}}})
	run(t, h, tcase{from: hostIP, Case: test.Case{Qname: "svc.n.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("svc.n. 5 IN A 10.202.3.3")}}})
	st.LinkAdded("veth-a")
	run(t, h, tcase{from: hostIP, Case: test.Case{Qname: "a.n.", Qtype: dns.TypeA, Answer: []dns.RR{test.A("a.n. 5 IN A 10.202.3.2")}}})
}

func TestReady(t *testing.T) {
	st := netwatch.NewStore("state", "docker:x")
	h := newHandler(st)
	if h.Ready() {
		t.Fatal("ready before any load")
	}
	st.Replace("state", nil)
	if h.Ready() {
		t.Fatal("ready before the docker source loaded")
	}
	st.Replace("docker:x", nil)
	if !h.Ready() {
		t.Fatal("not ready after every source loaded")
	}
}
