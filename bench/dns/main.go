// Command dns holds the helpers of bench/dns.sh:
//
//	dns bare ADDR                    a bare miekg/dns server answering one fixed A record
//	dns gen DIR NETWORKS ENDPOINTS   write state files (names cE.netN) and a query file
//	dns change DIR NETWORK SERVER N  change-to-answer latency through a real server
//	dns summary FILE                 medians of per-round ratios from the results table
package main

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/netalias/netalias/state"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "bare":
		err = bare(os.Args[2:])
	case "gen":
		err = gen(os.Args[2:])
	case "change":
		err = change(os.Args[2:])
	case "summary":
		err = summary(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dns:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: dns bare ADDR | gen DIR NETWORKS ENDPOINTS | change DIR NETWORK SERVER N | summary FILE")
	os.Exit(2)
}

// bare is the limit for a Go DNS server here: no plugin chain, one record.
func bare(args []string) error {
	if len(args) != 1 {
		usage()
	}
	rr := &dns.A{Hdr: dns.RR_Header{Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: net.IPv4(10, 202, 0, 2)}
	h := dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		m.Authoritative = true
		a := *rr
		a.Hdr.Name = r.Question[0].Name
		m.Answer = []dns.RR{&a}
		w.WriteMsg(m)
	})
	errc := make(chan error, 2)
	for _, n := range []string{"udp", "tcp"} {
		s := &dns.Server{Addr: args[0], Net: n, Handler: h}
		go func() { errc <- s.ListenAndServe() }()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case err := <-errc:
		return err
	case <-sig:
		return nil
	}
}

// gen writes NETWORKS state files of ENDPOINTS endpoints each (subnets in
// 10.202.0.0/16 for up to 200 networks of up to 250 endpoints) and prints
// a dnsperf query file spread over every name.
func gen(args []string) error {
	if len(args) != 3 {
		usage()
	}
	nets, err1 := strconv.Atoi(args[1])
	eps, err2 := strconv.Atoi(args[2])
	if err1 != nil || err2 != nil || nets < 1 || nets > 200 || eps < 1 || eps > 250 {
		return fmt.Errorf("gen: NETWORKS 1..200, ENDPOINTS 1..250")
	}
	for n := 0; n < nets; n++ {
		f := &state.File{Network: state.Network{
			ID: fmt.Sprintf("%064d", n), Name: fmt.Sprintf("net%d", n),
			Subnet:  netip.MustParsePrefix(fmt.Sprintf("10.202.%d.0/24", n)),
			Gateway: netip.MustParseAddr(fmt.Sprintf("10.202.%d.1", n)),
		}}
		for e := 0; e < eps; e++ {
			f.Endpoints = append(f.Endpoints, state.Endpoint{
				ID: fmt.Sprintf("%064x", e), Name: fmt.Sprintf("c%d", e), Aliases: []string{fmt.Sprintf("svc%d", e)},
				IPv4: netip.MustParseAddr(fmt.Sprintf("10.202.%d.%d", n, e+2)), Container: fmt.Sprintf("n%d-c%d", n, e),
			})
		}
		if err := state.Write(args[0], f); err != nil {
			return err
		}
	}
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	for i := 0; i < 10000; i++ {
		fmt.Fprintf(w, "c%d.net%d A\n", (i*7919)%eps, (i*104729)%nets)
	}
	return nil
}

// change rewrites network NETWORK's file in DIR N times, each time moving
// endpoint c0 to a new address, and polls SERVER until it answers the new
// one. Prints p50/p99/max of write-start-to-answer.
func change(args []string) error {
	if len(args) != 4 {
		usage()
	}
	dir, network, server := args[0], args[1], args[2]
	n, err := strconv.Atoi(args[3])
	if err != nil {
		return err
	}
	f, err := state.Read(state.NetworkPath(dir, network))
	if err != nil {
		return err
	}
	if len(f.Endpoints) == 0 {
		return fmt.Errorf("%s has no endpoint", network)
	}
	base := f.Network.Subnet.Addr().As4()
	name := f.Endpoints[0].Name + "." + network + "."
	c := &dns.Client{Timeout: time.Second}
	q := new(dns.Msg)
	q.SetQuestion(name, dns.TypeA)
	var lat, after []time.Duration
	for i := 0; i < n; i++ {
		ip := netip.AddrFrom4([4]byte{base[0], base[1], base[2], byte(200 + i%50)}).String()
		f.Endpoints[0].IPv4 = netip.MustParseAddr(ip)
		t0 := time.Now()
		if err := state.Write(dir, f); err != nil {
			return err
		}
		t1 := time.Now()
		for {
			r, _, err := c.Exchange(q, server)
			if err == nil && len(r.Answer) == 1 && r.Answer[0].(*dns.A).A.String() == ip {
				break
			}
			if time.Since(t0) > 5*time.Second {
				return fmt.Errorf("%s never answered %s", name, ip)
			}
		}
		lat = append(lat, time.Since(t0))
		after = append(after, time.Since(t1))
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	for _, l := range [][]time.Duration{lat, after} {
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	}
	fmt.Printf("change_to_answer_ms n=%d p50=%.2f p99=%.2f max=%.2f | after the write returned: p50=%.2f p99=%.2f\n",
		n, ms(lat[n/2]), ms(lat[n*99/100]), ms(lat[n-1]), ms(after[n/2]), ms(after[n*99/100]))
	return nil
}

// summary reads "round server qps cpu_us_per_query latency_ms" lines and
// prints, for every pair the issue names, the median of per-round ratios.
func summary(args []string) error {
	if len(args) != 1 {
		usage()
	}
	data, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	type row struct{ qps, cpu, lat float64 }
	rounds := map[string]map[string]row{}
	for _, line := range strings.Split(string(data), "\n") {
		fs := strings.Fields(line)
		if len(fs) != 5 || fs[0] == "round" {
			continue
		}
		q, _ := strconv.ParseFloat(fs[2], 64)
		c, _ := strconv.ParseFloat(fs[3], 64)
		l, _ := strconv.ParseFloat(fs[4], 64)
		if rounds[fs[0]] == nil {
			rounds[fs[0]] = map[string]row{}
		}
		rounds[fs[0]][fs[1]] = row{q, c, l}
	}
	median := func(v []float64) float64 {
		if len(v) == 0 {
			return 0
		}
		sort.Float64s(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	servers := map[string]bool{}
	for _, r := range rounds {
		for s := range r {
			servers[s] = true
		}
	}
	names := make([]string, 0, len(servers))
	for s := range servers {
		names = append(names, s)
	}
	sort.Strings(names)
	fmt.Printf("%-22s %10s %14s %10s   (medians over %d rounds)\n", "server", "qps", "cpu_us/query", "lat_ms", len(rounds))
	for _, s := range names {
		var q, c, l []float64
		for _, r := range rounds {
			if x, ok := r[s]; ok {
				q, c, l = append(q, x.qps), append(c, x.cpu), append(l, x.lat)
			}
		}
		fmt.Printf("%-22s %10.0f %14.2f %10.3f\n", s, median(q), median(c), median(l))
	}
	fmt.Println()
	pairs := []struct {
		a, b, target string
	}{
		{"netalias_host", "aardvark", "≥ 1.30"},
		{"netalias_host", "hosts", "≥ 0.95"},
		{"netalias_host", "bare_miekg", "≥ 0.85"},
		{"netalias_bare_ns", "netalias_host", "≥ 0.90 (within 10%)"},
		{"netalias_bare_ns", "netalias_qual_ns", "(lookup only: same packet path)"},
		{"netalias_qual_ns", "netalias_host", "(packet path: namespace vs loopback)"},
		{"netalias_10k", "netalias_host", "≥ 0.90 (within 10%)"},
		{"netalias_deployed", "netalias_host", "≥ 0.85 (deployed chain vs a bare netalias block)"},
		{"netalias_ep", "netalias_host", "(errors+prometheus alone)"},
	}
	fmt.Printf("%-38s %10s %16s   %s\n", "ratio (median of per-round ratios)", "qps", "1/cpu_per_query", "target")
	for _, p := range pairs {
		var rq, rc []float64
		for _, r := range rounds {
			a, okA := r[p.a]
			b, okB := r[p.b]
			if !okA || !okB || b.qps == 0 || a.cpu == 0 {
				continue
			}
			rq = append(rq, a.qps/b.qps)
			rc = append(rc, b.cpu/a.cpu)
		}
		if len(rq) == 0 {
			continue
		}
		fmt.Printf("%-38s %10.2f %16.2f   %s\n", p.a+" / "+p.b, median(rq), median(rc), p.target)
	}
	return nil
}
