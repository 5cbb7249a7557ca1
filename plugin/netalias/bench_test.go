package netalias

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"

	"github.com/netalias/netalias/netwatch"
)

// discard is a ResponseWriter that packs the reply (as the server would)
// and throws it away.
type discard struct{ test.ResponseWriter }

func (d *discard) WriteMsg(m *dns.Msg) error { _, err := m.Pack(); return err }

func benchServe(b *testing.B, h *Netalias, from, name string, qt uint16) {
	w := &discard{test.ResponseWriter{RemoteIP: from}}
	m := new(dns.Msg)
	m.SetQuestion(name, qt)
	ctx := context.Background()
	g := newGate(h, h) // the clients check runs on every query too
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := g.ServeDNS(ctx, w, m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkServeDNSHost(b *testing.B) {
	benchServe(b, newHandler(testStore()), hostIP, "centos-1.testnet.", dns.TypeA)
}

func BenchmarkServeDNSBare(b *testing.B) {
	benchServe(b, newHandler(testStore()), c2IP, "centos-1.", dns.TypeA)
}

func BenchmarkServeDNSNXDomain(b *testing.B) {
	benchServe(b, newHandler(testStore()), hostIP, "nope.testnet.", dns.TypeA)
}

// 10,000 endpoints over 100 networks: lookups cost the same as with 10.
func BenchmarkServeDNSLarge(b *testing.B) {
	st := netwatch.NewStore("state")
	var nets []*netwatch.Network
	for n := 0; n < 100; n++ {
		nw := &netwatch.Network{Name: fmt.Sprintf("net%d", n), Subnet: netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", 100+n/100, n%100))}
		for e := 0; e < 100; e++ {
			nw.Endpoints = append(nw.Endpoints, netwatch.Endpoint{Name: fmt.Sprintf("c%d", e), IPv4: netip.MustParseAddr(fmt.Sprintf("10.%d.%d.%d", 100+n/100, n%100, e+2)), Container: fmt.Sprintf("n%d-c%d", n, e)})
		}
		nets = append(nets, nw)
	}
	st.Replace("state", nets)
	benchServe(b, newHandler(st), "10.100.42.7", "c77.", dns.TypeA)
}

// One network changes among 100 (10,000 endpoints): the cost of an update.
func BenchmarkStoreUpdateLarge(b *testing.B) {
	st := netwatch.NewStore("state")
	var nets []*netwatch.Network
	for n := 0; n < 100; n++ {
		nw := &netwatch.Network{Name: fmt.Sprintf("net%d", n), Subnet: netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", 100+n/100, n%100))}
		for e := 0; e < 100; e++ {
			nw.Endpoints = append(nw.Endpoints, netwatch.Endpoint{Name: fmt.Sprintf("c%d", e), IPv4: netip.MustParseAddr(fmt.Sprintf("10.%d.%d.%d", 100+n/100, n%100, e+2)), Container: fmt.Sprintf("n%d-c%d", n, e)})
		}
		nets = append(nets, nw)
	}
	st.Replace("state", nets)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		st.Update("state", nets[i%100])
	}
}

// A shared alias with an unhealthy member, under the default policy: the
// ready set is chosen, and left-out members counted, without allocating.
func BenchmarkServeDNSHealthPrefer(b *testing.B) {
	benchServe(b, newHandler(healthStore()), hostIP, "api.hnet.", dns.TypeA)
}

// The same alias asked for every member (_all): as many allocations with
// three records as with the two ready ones.
func BenchmarkServeDNSHealthAll(b *testing.B) {
	benchServe(b, newHandler(healthStore()), hostIP, "_all.api.hnet.", dns.TypeA)
}
