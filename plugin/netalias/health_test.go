package netalias

import (
	"context"
	"net/netip"
	"testing"

	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/netalias/netalias/netwatch"
)

// The health network: three replicas share the alias api; db has one
// member; "boot" (a cluster bootstrapping through DNS) has none ready.
const (
	hA  = "10.202.5.2" // api, healthy
	hB  = "10.202.5.3" // api, unhealthy
	hC  = "10.202.5.4" // api, no healthcheck
	hD  = "10.202.5.5" // db, starting
	hE  = "10.202.5.6" // boot, starting
	hF  = "10.202.5.7" // boot, unhealthy
	hCl = "10.202.5.9" // a client container on the network
)

func healthStore() *netwatch.Store {
	st := netwatch.NewStore("docker")
	st.Replace("docker", []*netwatch.Network{{
		Name: "hnet", Subnet: netip.MustParsePrefix("10.202.5.0/24"), Gateway: addr("10.202.5.1"),
		Endpoints: []netwatch.Endpoint{
			{Name: "a", Aliases: []string{"api"}, IPv4: addr(hA), IPv6: addr("fd00:202:5::2"), Container: "a", Health: netwatch.HealthHealthy},
			{Name: "b", Aliases: []string{"api"}, IPv4: addr(hB), IPv6: addr("fd00:202:5::3"), Container: "b", Health: netwatch.HealthUnhealthy},
			{Name: "c", Aliases: []string{"api"}, IPv4: addr(hC), Container: "c"},
			{Name: "d", Aliases: []string{"db"}, IPv4: addr(hD), Container: "d", Health: netwatch.HealthStarting},
			{Name: "e", Aliases: []string{"boot"}, IPv4: addr(hE), Container: "e", Health: netwatch.HealthStarting},
			{Name: "f", Aliases: []string{"boot"}, IPv4: addr(hF), Container: "f", Health: netwatch.HealthUnhealthy},
			{Name: "cl", IPv4: addr(hCl), Container: "cl"},
		},
	}})
	return st
}

func aRRs(name string, ips ...string) []dns.RR {
	var out []dns.RR
	for _, ip := range ips {
		out = append(out, test.A(name+" 5 IN A "+ip))
	}
	return out
}

func TestHealthPolicies(t *testing.T) {
	nodata := func(from, q string, qt uint16) tcase {
		return tcase{from: from, Case: test.Case{Qname: q, Qtype: qt, Ns: []dns.RR{soa("hnet.")}}}
	}
	ans := func(from, q string, ips ...string) tcase {
		return tcase{from: from, Case: test.Case{Qname: q, Qtype: dns.TypeA, Answer: aRRs(q, ips...)}}
	}
	for _, tc := range []struct {
		policy netwatch.HealthPolicy
		rows   []tcase
	}{
		{netwatch.HealthPrefer, []tcase{
			// Healthy and no-healthcheck members; the unhealthy one left out.
			ans(hostIP, "api.hnet.", hA, hC),
			ans(hCl, "api.hnet.", hA, hC),
			ans(hCl, "api.", hA, hC),
			// AAAA: the only ready member with IPv6 is a.
			{from: hostIP, Case: test.Case{Qname: "api.hnet.", Qtype: dns.TypeAAAA, Answer: []dns.RR{test.AAAA("api.hnet. 5 IN AAAA fd00:202:5::2")}}},
			// None ready: every member (a name never goes dark).
			ans(hostIP, "boot.hnet.", hE, hF),
			ans(hCl, "boot.", hE, hF),
			ans(hostIP, "db.hnet.", hD),
			ans(hostIP, "b.hnet.", hB),
			// Every member, on purpose, qualified and bare, any case.
			ans(hostIP, "_all.api.hnet.", hA, hB, hC),
			ans(hostIP, "_ALL.Api.hnet.", hA, hB, hC),
			ans(hCl, "_all.api.", hA, hB, hC),
			{from: hostIP, Case: test.Case{Qname: "_all.nope.hnet.", Qtype: dns.TypeA, Rcode: dns.RcodeNameError, Ns: []dns.RR{soa("hnet.")}}},
			{from: hostIP, next: true, Case: test.Case{Qname: "_all.api.", Qtype: dns.TypeA}},
			// PTR of an unhealthy member is unaffected.
			{from: hostIP, Case: test.Case{Qname: "3.5.202.10.in-addr.arpa.", Qtype: dns.TypePTR, Answer: []dns.RR{test.PTR("3.5.202.10.in-addr.arpa. 5 IN PTR b.hnet.")}}},
		}},
		{netwatch.HealthStrict, []tcase{
			ans(hostIP, "api.hnet.", hA, hC),
			ans(hCl, "api.", hA, hC),
			// None ready: the name exists, so NODATA with the SOA, not NXDOMAIN.
			nodata(hostIP, "boot.hnet.", dns.TypeA),
			nodata(hCl, "boot.", dns.TypeA),
			nodata(hostIP, "db.hnet.", dns.TypeA),
			nodata(hostIP, "b.hnet.", dns.TypeA),
			ans(hostIP, "_all.boot.hnet.", hE, hF),
			ans(hCl, "_all.boot.", hE, hF),
			{from: hostIP, Case: test.Case{Qname: "3.5.202.10.in-addr.arpa.", Qtype: dns.TypePTR, Answer: []dns.RR{test.PTR("3.5.202.10.in-addr.arpa. 5 IN PTR b.hnet.")}}},
		}},
		{netwatch.HealthOff, []tcase{
			ans(hostIP, "api.hnet.", hA, hB, hC),
			ans(hCl, "api.", hA, hB, hC),
			ans(hostIP, "boot.hnet.", hE, hF),
			ans(hostIP, "db.hnet.", hD),
			ans(hostIP, "_all.api.hnet.", hA, hB, hC),
		}},
	} {
		h := newHandler(healthStore())
		h.Health = tc.policy
		for _, row := range tc.rows {
			t.Run(tc.policy.String()+"/"+row.Qname+"/"+row.from, func(t *testing.T) { run(t, h, row) })
		}
	}
}

// Rotation goes over the members the policy keeps, and only them.
func TestHealthRotation(t *testing.T) {
	h := newHandler(healthStore())
	firsts := map[string]bool{}
	for i := 0; i < 8; i++ {
		rec := dnstest.NewRecorder(&test.ResponseWriter{RemoteIP: hostIP})
		newGate(h, h).ServeDNS(context.Background(), rec, test.Case{Qname: "api.hnet.", Qtype: dns.TypeA}.Msg())
		if len(rec.Msg.Answer) != 2 {
			t.Fatalf("answer %v, want 2 records", rec.Msg.Answer)
		}
		firsts[rec.Msg.Answer[0].(*dns.A).A.String()] = true
	}
	if len(firsts) != 2 || firsts[hB] {
		t.Fatalf("first records over 8 queries: %v, want both ready members, never %s", firsts, hB)
	}
}

// A health change applies at the next query; the metric counts what was
// left out, per server.
func TestHealthChangeAndMetric(t *testing.T) {
	st := healthStore()
	h := newHandler(st)
	h.Health = netwatch.HealthStrict
	c := h.m.get(context.Background())
	before := counterValue(c.excluded)
	run(t, h, tcase{from: hostIP, Case: test.Case{Qname: "api.hnet.", Qtype: dns.TypeA, Answer: aRRs("api.hnet.", hA, hC)}})
	run(t, h, tcase{from: hostIP, Case: test.Case{Qname: "boot.hnet.", Qtype: dns.TypeA, Ns: []dns.RR{soa("hnet.")}}})
	if got := counterValue(c.excluded) - before; got != 3 {
		t.Errorf("health_excluded_total rose by %v, want 3 (b from api; e, f from boot)", got)
	}
	if n := st.Snapshot().Unready(); n != 4 {
		t.Errorf("unready endpoints %d, want 4", n)
	}
	// b recovers, a fails.
	st.Update("docker", &netwatch.Network{Name: "hnet", Subnet: netip.MustParsePrefix("10.202.5.0/24"), Endpoints: []netwatch.Endpoint{
		{Name: "a", Aliases: []string{"api"}, IPv4: addr(hA), Container: "a", Health: netwatch.HealthUnhealthy},
		{Name: "b", Aliases: []string{"api"}, IPv4: addr(hB), Container: "b", Health: netwatch.HealthHealthy},
	}})
	run(t, h, tcase{from: hostIP, Case: test.Case{Qname: "api.hnet.", Qtype: dns.TypeA, Answer: aRRs("api.hnet.", hB)}})
	before = counterValue(c.excluded)
	run(t, h, tcase{from: hostIP, Case: test.Case{Qname: "_all.api.hnet.", Qtype: dns.TypeA, Answer: aRRs("_all.api.hnet.", hA, hB)}})
	if got := counterValue(c.excluded) - before; got != 0 {
		t.Errorf("_all answer counted %v exclusions", got)
	}
}

// A bare name found on two networks of the client: prefer picks the ready
// members over both, and falls back to every member only when none of
// either network is ready.
func TestHealthBareAcrossNetworks(t *testing.T) {
	st := netwatch.NewStore("docker")
	st.Replace("docker", []*netwatch.Network{
		{Name: "n1", Subnet: netip.MustParsePrefix("10.202.6.0/24"), Endpoints: []netwatch.Endpoint{
			{Name: "x1", Aliases: []string{"svc"}, IPv4: addr("10.202.6.2"), Container: "x1", Health: netwatch.HealthUnhealthy},
			{Name: "cl", IPv4: addr("10.202.6.9"), Container: "cl"},
		}},
		{Name: "n2", Subnet: netip.MustParsePrefix("10.202.7.0/24"), Endpoints: []netwatch.Endpoint{
			{Name: "x2", Aliases: []string{"svc"}, IPv4: addr("10.202.7.2"), Container: "x2", Health: netwatch.HealthHealthy},
			{Name: "cl", IPv4: addr("10.202.7.9"), Container: "cl"},
		}},
	})
	h := newHandler(st)
	run(t, h, tcase{from: "10.202.6.9", Case: test.Case{Qname: "svc.", Qtype: dns.TypeA, Answer: aRRs("svc.", "10.202.7.2")}})
	run(t, h, tcase{from: "10.202.6.9", Case: test.Case{Qname: "_all.svc.", Qtype: dns.TypeA, Answer: aRRs("_all.svc.", "10.202.6.2", "10.202.7.2")}})
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}
