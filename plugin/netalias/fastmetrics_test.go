package netalias

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/metrics"
	"github.com/coredns/coredns/plugin/metrics/vars"
	"github.com/coredns/coredns/plugin/test"
	"github.com/coredns/coredns/request"
	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/netalias/netalias/state"
)

// pluginOf runs a plugin's setup on directive line and returns the
// function that puts its handler in front of a chain.
func pluginOf(t *testing.T, line string) plugin.Plugin {
	t.Helper()
	name := strings.Fields(line)[0]
	action, err := caddy.DirectiveAction("dns", name)
	if err != nil {
		t.Fatal(err)
	}
	c := caddy.NewTestController("dns", line)
	if err := action(c); err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	ps := dnsserver.GetConfig(c).Plugin
	if len(ps) != 1 {
		t.Fatalf("%s: %d plugins set up, want 1", line, len(ps))
	}
	return ps[0]
}

// The shortcut stands in for prometheus (and errors) only when nothing else
// runs in front of netalias, and labels responses with the plugin right
// after prometheus, as prometheus's recorder does.
func TestShortcutChains(t *testing.T) {
	prom := func() plugin.Plugin { return pluginOf(t, "prometheus 127.0.0.1:0") }
	errs := func() plugin.Plugin { return pluginOf(t, "errors") }
	logp := func() plugin.Plugin { return pluginOf(t, "log") }
	for _, tc := range []struct {
		name  string
		chain []func() plugin.Plugin // in front of netalias, head first
		label string                 // "" for no shortcut
	}{
		{"prometheus errors (deployed)", []func() plugin.Plugin{prom, errs}, "errors"},
		{"prometheus", []func() plugin.Plugin{prom}, "netalias"},
		{"errors", []func() plugin.Plugin{errs}, ""},
		{"errors prometheus", []func() plugin.Plugin{errs, prom}, ""},
		{"prometheus errors log", []func() plugin.Plugin{prom, errs, logp}, ""},
		{"prometheus log", []func() plugin.Plugin{prom, logp}, ""},
		{"none", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHandler(testStore())
			var next plugin.Handler = h
			for _, p := range slices.Backward(tc.chain) {
				next = p()(next)
			}
			g := newGate(h, next)
			switch {
			case tc.label == "" && g.short != nil:
				t.Fatalf("shortcut (label %q) for a chain that needs the real one", g.short.label)
			case tc.label != "" && g.short == nil:
				t.Fatal("no shortcut")
			case tc.label != "" && g.short.label != tc.label:
				t.Fatalf("label %q, want %q", g.short.label, tc.label)
			}
		})
	}
}

// metricsOf flattens the series of server srv that a Prometheus user sees
// of the DNS metrics: every counter, every histogram's count, sum and
// buckets, but the request duration's count only (its values are times).
func metricsOf(t *testing.T, srv string) map[string]float64 {
	t.Helper()
	fams, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, f := range fams {
		name := f.GetName()
		if !strings.HasPrefix(name, "coredns_dns_") && !strings.HasPrefix(name, "coredns_netalias_") {
			continue
		}
		for _, m := range f.GetMetric() {
			var labels []string
			mine := false
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
				if l.GetName() == "server" && l.GetValue() == srv {
					mine = true
				}
			}
			if !mine {
				continue
			}
			key := name + "{" + strings.Join(labels, ",") + "}"
			switch {
			case m.Counter != nil:
				out[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key] = m.Gauge.GetValue()
			case m.Histogram != nil:
				addHistogram(out, key, name == "coredns_dns_request_duration_seconds", m.Histogram)
			}
		}
	}
	return out
}

func addHistogram(out map[string]float64, key string, countOnly bool, h *dto.Histogram) {
	out[key+"_count"] = float64(h.GetSampleCount())
	if countOnly {
		return
	}
	out[key+"_sum"] = h.GetSampleSum()
	for _, b := range h.GetBucket() {
		out[fmt.Sprintf("%s_bucket{le=%g}", key, b.GetUpperBound())] = float64(b.GetCumulativeCount())
	}
}

func delta(before, after map[string]float64) map[string]float64 {
	d := map[string]float64{}
	for k, v := range after {
		if v != before[k] {
			d[k] = v - before[k]
		}
	}
	for k, v := range before {
		if _, ok := after[k]; !ok {
			d[k] = -v
		}
	}
	return d
}

// responses is the number of responses prometheus has reported for srv:
// its Report counts the rcode last, after the reply went out.
func responses(m map[string]float64) float64 {
	n := 0.0
	for k, v := range m {
		if strings.HasPrefix(k, "coredns_dns_responses_total{") {
			n += v
		}
	}
	return n
}

// settled waits until srv's metrics show one more response than before,
// and returns them gathered again after that: a gathering is not atomic
// (the families are collected one by one), so the one that saw the rcode
// counted may have read other families before the rest of that Report.
func settled(t *testing.T, srv string, before map[string]float64) map[string]float64 {
	t.Helper()
	want := responses(before) + 1
	deadline := time.Now().Add(5 * time.Second)
	for {
		m := metricsOf(t, srv)
		switch n := responses(m); {
		case n == want:
			m = metricsOf(t, srv)
			if n := responses(m); n != want {
				t.Fatalf("%v responses reported, want %v", n, want)
			}
			return m
		case n > want:
			t.Fatalf("%v responses reported, want %v", n, want)
		case time.Now().After(deadline):
			t.Fatalf("the response never reported (%v, want %v)", n, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// quiet returns srv's metrics once they stop changing: the reports of
// earlier queries (the start-up probes) done.
func quiet(t *testing.T, srv string) map[string]float64 {
	t.Helper()
	m := metricsOf(t, srv)
	for i := 0; i < 250; i++ {
		time.Sleep(20 * time.Millisecond)
		next := metricsOf(t, srv)
		if len(delta(m, next)) == 0 {
			return next
		}
		m = next
	}
	t.Fatal("metrics never stopped changing")
	return nil
}

// comparable is a reply without what legitimately differs between two
// answers: the ID and the order of rotated records (a truncated reply's
// records depend on the rotation, its size and count do not).
func comparable(r *dns.Msg) string {
	c := r.Copy()
	c.Id = 0
	if c.Truncated {
		n := len(c.Answer)
		c.Answer = nil
		return fmt.Sprintf("%s\n(%d answers)", c, n)
	}
	sort.Slice(c.Answer, func(i, j int) bool { return c.Answer[i].String() < c.Answer[j].String() })
	return c.String()
}

// The deployed chain (prometheus, errors, netalias, cache) answers every
// kind of query the same and reports the same metrics, series by series,
// whether the shortcut stands in for prometheus and errors or not: rcode
// and plugin labels, request and response sizes (a truncated answer's
// size is the untruncated one's, as prometheus's recorder sees it), DO
// requests, TCP, and the queries that go on to the next plugin.
func TestShortcutSameAnswersAndMetrics(t *testing.T) {
	mport := freePort(t)
	made := shortcutsMade.Load()
	v6 := &state.File{Network: state.Network{ID: state.NewID(), Name: "dual", Subnet: netip.MustParsePrefix("10.202.5.0/24"),
		Gateway: netip.MustParseAddr("10.202.5.1"), Subnet6: netip.MustParsePrefix("fd00:202:5::/64"), Gateway6: netip.MustParseAddr("fd00:202:5::1")}}
	v6.Endpoints = append(v6.Endpoints, state.Endpoint{ID: state.NewID(), Name: "d0", IPv4: netip.MustParseAddr("10.202.5.2"),
		IPv6: netip.MustParseAddr("fd00:202:5::2"), Container: "d0"})
	addr, _ := startChain(t, "", fmt.Sprintf("errors\n prometheus 127.0.0.1:%d", mport), bigNetwork(100), v6)
	if shortcutsMade.Load() == made {
		t.Fatal("the deployed chain got no shortcut: this test would compare the real chain with itself")
	}
	waitAnswer(t, addr, "all.big.", 100)
	srv := "dns://" + addr

	ask := func(netw, name string, qt uint16, edns bool) *dns.Msg {
		c := &dns.Client{Net: netw, Timeout: 2 * time.Second}
		m := new(dns.Msg)
		m.SetQuestion(name, qt)
		if edns {
			m.SetEdns0(1232, true)
		}
		r, _, err := c.Exchange(m, addr)
		if err != nil {
			t.Fatalf("%s %s: %v", netw, name, err)
		}
		return r
	}
	for _, q := range []struct {
		what  string
		netw  string
		name  string
		qt    uint16
		edns  bool
		rcode int
		tc    bool
	}{
		{"NOERROR", "udp", "e0.big.", dns.TypeA, false, dns.RcodeSuccess, false},
		{"NOERROR mixed case", "udp", "E1.Big.", dns.TypeA, false, dns.RcodeSuccess, false},
		{"NOERROR AAAA", "udp", "d0.dual.", dns.TypeAAAA, false, dns.RcodeSuccess, false},
		{"NOERROR ANY", "udp", "d0.dual.", dns.TypeANY, false, dns.RcodeSuccess, false},
		{"NODATA", "udp", "e0.big.", dns.TypeAAAA, false, dns.RcodeSuccess, false},
		{"NODATA MX", "udp", "e0.big.", dns.TypeMX, false, dns.RcodeSuccess, false},
		{"NODATA CAA (type other)", "udp", "e0.big.", dns.TypeCAA, false, dns.RcodeSuccess, false},
		{"NXDOMAIN", "udp", "nope.big.", dns.TypeA, false, dns.RcodeNameError, false},
		{"bare name from the host: next plugin", "udp", "e0%s.", dns.TypeA, false, dns.RcodeServerFailure, false},
		{"truncated UDP", "udp", "all.big.", dns.TypeA, false, dns.RcodeSuccess, true},
		{"truncated UDP with EDNS", "udp", "all.big.", dns.TypeA, true, dns.RcodeSuccess, true},
		{"EDNS DO", "udp", "e2.big.", dns.TypeA, true, dns.RcodeSuccess, false},
		{"EDNS NXDOMAIN", "udp", "nope.big.", dns.TypeA, true, dns.RcodeNameError, false},
		{"TCP whole", "tcp", "all.big.", dns.TypeA, false, dns.RcodeSuccess, false},
		{"TCP NXDOMAIN", "tcp", "nope.big.", dns.TypeA, false, dns.RcodeNameError, false},
		{"PTR", "udp", "2.4.202.10.in-addr.arpa.", dns.TypePTR, false, dns.RcodeSuccess, false},
		// Names asked once each way: cache keeps the SERVFAIL.
		{"next plugin", "udp", "example-%s.org.", dns.TypeA, false, dns.RcodeServerFailure, false},
		{"next plugin, unknown network", "udp", "x.nonet%s.", dns.TypeA, false, dns.RcodeServerFailure, false},
	} {
		t.Run(q.what, func(t *testing.T) {
			defer shortcutOff.Store(false)
			m0 := quiet(t, srv)
			name := func(run string) string {
				if strings.Contains(q.name, "%s") {
					return fmt.Sprintf(q.name, run)
				}
				return q.name
			}
			short := ask(q.netw, name("a"), q.qt, q.edns)
			m1 := settled(t, srv, m0)
			shortcutOff.Store(true)
			real := ask(q.netw, name("b"), q.qt, q.edns)
			m2 := settled(t, srv, m1)
			shortcutOff.Store(false)

			if real.Rcode != q.rcode || real.Truncated != q.tc {
				t.Fatalf("the real chain answered rcode %s truncated %v, want %s %v:\n%v", dns.RcodeToString[real.Rcode], real.Truncated, dns.RcodeToString[q.rcode], q.tc, real)
			}
			if a, b := comparable(short), comparable(real); a != b && name("a") == name("b") {
				t.Errorf("answers differ:\nshortcut:\n%s\nreal chain:\n%s", a, b)
			}
			d1, d2 := delta(m0, m1), delta(m1, m2)
			if len(d2) == 0 {
				t.Fatal("the real chain changed no metric")
			}
			keys := map[string]bool{}
			for k := range d1 {
				keys[k] = true
			}
			for k := range d2 {
				keys[k] = true
			}
			for k := range keys {
				if d1[k] != d2[k] {
					t.Errorf("%s: +%v through the shortcut, +%v through the real chain", k, d1[k], d2[k])
				}
			}
		})
	}
}

// qtypeLabel labels every qtype as vars.Report does: each of the 65,536
// reported once through Report under a server of its own, the type labels
// and their counts are those qtypeLabel gives.
func TestQtypeLabelIsReports(t *testing.T) {
	const srv = "netalias-qtype-probe"
	want := map[string]float64{}
	w := &test.ResponseWriter{}
	for qt := 0; qt <= 0xffff; qt++ {
		m := new(dns.Msg)
		m.SetQuestion("q.", uint16(qt))
		vars.Report(srv, request.Request{W: w, Req: m}, ".", "", "NOERROR", "netalias", 40, time.Now())
		want[qtypeLabel(uint16(qt))]++
	}
	got := map[string]float64{}
	for k, v := range metricsOf(t, srv) {
		if strings.HasPrefix(k, "coredns_dns_requests_total{") {
			for _, l := range strings.Split(strings.Trim(k[strings.Index(k, "{"):], "{}"), ",") {
				if typ, ok := strings.CutPrefix(l, "type="); ok {
					got[typ] += v
				}
			}
		}
	}
	if len(got) != len(want) || len(want) != len(monitoredTypes)+1 {
		t.Fatalf("type labels: Report %v, qtypeLabel %v", got, want)
	}
	for typ, n := range want {
		if got[typ] != n {
			t.Errorf("type %q: %v through Report, %v by qtypeLabel", typ, got[typ], n)
		}
	}
}

// The series cache stops growing at maxSeriesKeys; past it, replies still
// count in their own series.
func TestSeriesCacheBound(t *testing.T) {
	var c seriesCache
	const srv = "netalias-cache-probe"
	for i := 0; i < maxSeriesKeys+100; i++ {
		c.get(seriesKey{server: srv, zone: ".", proto: "udp", plugin: "netalias", rcode: i % 24, qtype: uint16(i)}).count(time.Now(), 40, 30)
	}
	if n := c.n.Load(); n != maxSeriesKeys {
		t.Fatalf("%d keys cached, want %d", n, maxSeriesKeys)
	}
	total := 0.0
	for k, v := range metricsOf(t, srv) {
		if strings.HasPrefix(k, "coredns_dns_responses_total{") && strings.Contains(k, "rcode=NOTAUTH,") {
			total += v
		}
	}
	// rcode 9 (NOTAUTH): i = 9, 33, 57... below maxSeriesKeys+100.
	want := 0.0
	for i := 0; i < maxSeriesKeys+100; i++ {
		if i%24 == 9 {
			want++
		}
	}
	if total != want {
		t.Fatalf("NOTAUTH responses %v, want %v", total, want)
	}
}
