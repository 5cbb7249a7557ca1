package test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netalias/netalias/internal/testenv"
)

// Three hosts, each running the real `netalias agent` in cluster mode,
// coredns with the `cluster` option and an etcd member; one network made
// on host 1 and joined by the others through `connect`. What a user sees:
// names across hosts (qualified, bare, PTR), ping by name over the VXLAN
// overlay, isolation, the MTU edge, a dead host's names and forwarding
// entries gone, a partition that heals, etcd down and back, concurrent
// connects without a duplicate address, nothing left behind.
func TestClusterAgents(t *testing.T) {
	for _, tool := range []string{"ping", "bridge", "nft", "dig"} {
		testenv.RequireCommand(t, tool)
	}
	c := newClusterTopo(t, 3)
	c.startEtcd()
	h1, h2, h3 := c.hosts[0], c.hosts[1], c.hosts[2]
	c.moveLeader(h1) // h3 dies later as a follower
	as := c.startAgents()
	a1, a2, a3 := as[0], as[1], as[2]
	rss0 := rssOf(a1.coredns.Process.Pid)

	a1.mustNA("network", "create", "--subnet", "10.212.32.0/20", "testnet")
	if _, err := a2.na("network", "create", "--subnet", "10.212.64.0/20", "testnet"); err == nil {
		t.Error("h2 created testnet with another subnet than h1's")
	}
	c1, c2, c3 := a2.container("c1"), a1.container("c2"), a3.container("c3")
	a2.mustNA("connect", "--name", "centos-1", "testnet", c1)
	a1.mustNA("connect", "--name", "centos-2", "testnet", c2)
	a3.mustNA("connect", "--name", "centos-3", "testnet", c3)
	ip1, ip2, ip3 := a2.endpointIP("testnet", "centos-1"), a1.endpointIP("testnet", "centos-2"), a3.endpointIP("testnet", "centos-3")
	gw1, gw2 := a1.file("testnet").Network.Gateway, a2.file("testnet").Network.Gateway
	t.Logf("centos-1 %s on h2 (gateway %s), centos-2 %s on h1 (gateway %s), centos-3 %s on h3", ip1, gw2, ip2, gw1, ip3)
	if gw1 == gw2 {
		t.Errorf("h1 and h2 share gateway %s", gw1)
	}
	if f := a2.file("testnet"); f.Network.Cluster == nil || len(f.Network.Cluster.Blocks) == 0 || f.Network.MTU != 1450 {
		t.Errorf("h2's copy of testnet: cluster %+v, MTU %d; want its blocks recorded and MTU 1450", f.Network.Cluster, f.Network.MTU)
	}

	t.Run("names across hosts", func(t *testing.T) {
		if d, ok := clWait(5*time.Second, func() bool { return a1.answers("centos-1.testnet", ip1) }); !ok {
			t.Fatalf("h1 does not answer centos-1.testnet (on h2) after %v", d)
		}
		if !a2.answers("centos-2.testnet", ip2) || !a3.answers("centos-1.testnet", ip1) {
			t.Error("h2 or h3 does not answer the other hosts' names")
		}
		rev, _ := dns.ReverseAddr(ip1)
		r, err := a1.query(rev, dns.TypePTR)
		if err != nil || len(r.Answer) == 0 || !strings.HasPrefix(r.Answer[0].(*dns.PTR).Ptr, "centos-1.testnet") {
			t.Errorf("h1: PTR %s: %v %v", rev, r, err)
		}
		// Bare names from inside a container on h1, at its gateway.
		out, err := nsExec(c2, "dig", "+short", "+time=2", "+tries=1", "@"+gw1.String(), "centos-1", "A")
		if err != nil || strings.TrimSpace(out) != ip1 {
			t.Errorf("bare centos-1 from centos-2 (h1): %q %v, want %s", out, err, ip1)
		}
	})

	t.Run("ping by name across hosts", func(t *testing.T) {
		for _, name := range []string{"centos-1.testnet", "centos-1"} {
			if out, err := pingUntil(c2, name, 5*time.Second); err != nil {
				t.Errorf("centos-2 (h1) → %s (h2): %v\n%s", name, err, out)
			}
		}
		if out, err := nsExec(c3, "ping", "-c1", "-W2", "centos-2.testnet"); err != nil {
			t.Errorf("centos-3 (h3) → centos-2 (h1): %v\n%s", err, out)
		}
	})

	t.Run("MTU edge", func(t *testing.T) {
		// 1450 - 28 bytes of IPv4 and ICMP headers.
		if out, err := nsExec(c2, "ping", "-c1", "-W2", "-M", "do", "-s", "1422", ip1); err != nil {
			t.Errorf("ping -M do -s 1422 across hosts: %v\n%s", err, out)
		}
		out, err := nsExec(c2, "ping", "-c1", "-W2", "-M", "do", "-s", "1423", ip1)
		if err == nil || !strings.Contains(strings.ToLower(out), "message too long") {
			t.Errorf("ping -M do -s 1423: want a local \"message too long\", got %v\n%s", err, out)
		}
	})

	t.Run("isolation across hosts", func(t *testing.T) {
		a2.mustNA("network", "create", "--subnet", "10.212.48.0/20", "othernet")
		c4 := a2.container("c4")
		a2.mustNA("connect", "--name", "other", "othernet", c4)
		ip4 := a2.endpointIP("othernet", "other")
		if out, err := nsExec(c2, "ping", "-c1", "-W1", ip4); err == nil {
			t.Errorf("centos-2 on testnet (h1) reached %s on othernet (h2)\n%s", ip4, out)
		}
		if out, err := nsExec(c4, "ping", "-c1", "-W1", ip1); err == nil {
			t.Errorf("other on othernet (h2) reached centos-1 on testnet (h2)\n%s", out)
		}
		// rm is cluster-wide: refused while another host has endpoints.
		if _, err := a1.na("network", "rm", "testnet"); err == nil || !strings.Contains(err.Error(), "h2 (1)") {
			t.Errorf("h1: network rm testnet with endpoints on h2: %v, want a refusal naming h2", err)
		}
		if f := a1.file("testnet"); f == nil {
			t.Error("h1 lost testnet after a refused rm")
		}
		a2.mustNA("network", "rm", "--force", "othernet")
		r, err := c.client(h1).Get(context.Background(), "/netalias/v1/networks/othernet")
		if err != nil || len(r.Kvs) != 0 {
			t.Errorf("othernet still in etcd after rm on h2: %v %v", r, err)
		}
	})

	t.Run("RTT", func(t *testing.T) {
		if testing.Short() {
			t.Skip("1,000 pings each way")
		}
		same := a1.container("same")
		a1.mustNA("connect", "--name", "same", "testnet", same)
		ipSame := a1.endpointIP("testnet", "same")
		// Median of the per-packet times (an average follows the outliers
		// of two shared cores), the two pairs taking turns in 10 runs of
		// 100 pings: one after the other, each had its own 2 s of the
		// machine and the ratio swung from 0.6 to 3.4 between runs.
		rtt := func(dst string) ([]time.Duration, int) {
			out, err := nsExec(c2, "ping", "-c", "100", "-i", "0.002", "-W", "1", dst)
			if err != nil {
				t.Errorf("ping %s: %v\n%s", dst, err, out)
			}
			var ts []time.Duration
			for _, l := range strings.Split(out, "\n") {
				if _, v, ok := strings.Cut(l, "time="); ok {
					if d, err := time.ParseDuration(strings.ReplaceAll(v, " ", "")); err == nil {
						ts = append(ts, d)
					}
				}
			}
			return ts, 100 - len(ts)
		}
		var ss, xs []time.Duration
		var sLost, xLost int
		for i := 0; i < 10; i++ {
			ts, lost := rtt(ipSame)
			ss, sLost = append(ss, ts...), sLost+lost
			ts, lost = rtt(ip1)
			xs, xLost = append(xs, ts...), xLost+lost
		}
		if len(ss) == 0 || len(xs) == 0 {
			t.Fatalf("no ping answered: same host %d, across hosts %d", len(ss), len(xs))
		}
		s, x := clPercentile(ss, 0.5), clPercentile(xs, 0.5)
		t.Logf("RTT medians over 1,000 pings each, in turns: same host %v (%d lost), across hosts %v (%d lost), ratio %.2f", s, sLost, x, xLost, float64(x)/float64(s))
		if xLost > 0 {
			t.Errorf("%d of 1,000 cross-host pings lost", xLost)
		}
	})

	t.Run("propagation", func(t *testing.T) {
		n := 200
		if testing.Short() {
			n = 20
		}
		nss := make([]string, n)
		for i := range nss {
			nss[i] = a2.container(fmt.Sprintf("p%d", i))
		}
		cli := c.client(h1)
		rev := func() int64 {
			r, err := cli.Get(context.Background(), "rev-probe")
			if err != nil {
				t.Fatal(err)
			}
			return r.Header.Revision
		}
		blocks0 := len(a2.file("testnet").Network.Cluster.Blocks)
		rev0 := rev()
		var lat []time.Duration
		for i, ns := range nss {
			name := fmt.Sprintf("p%d", i)
			a2.mustNA("connect", "--name", name, "testnet", ns)
			ip := a2.endpointIP("testnet", name)
			d, ok := clWait(5*time.Second, func() bool { return a1.answers(name+".testnet", ip) })
			if !ok {
				t.Fatalf("%s.testnet connected on h2 not answered on h1 after %v", name, d)
			}
			lat = append(lat, d)
		}
		claims := len(a2.file("testnet").Network.Cluster.Blocks) - blocks0
		if d := rev() - rev0; d != int64(n+claims) {
			t.Errorf("%d connects (%d block claims) took %d etcd revisions, want one each", n, claims, d)
		}
		t.Logf("propagation connect on h2 → answer on h1 over %d connects: p50 %v, p99 %v, max %v (%d block claims)", n,
			clPercentile(lat, 0.5).Round(10*time.Microsecond), clPercentile(lat, 0.99).Round(10*time.Microsecond), clPercentile(lat, 1).Round(10*time.Microsecond), claims)
		rev0 = rev()
		a2.mustNA("disconnect", "testnet", nss[0])
		if _, ok := clWait(5*time.Second, func() bool { _, rc, _ := a1.lookup("p0.testnet"); return rc == dns.RcodeNameError }); !ok {
			t.Error("p0 disconnected on h2 still answered on h1")
		}
		if d := rev() - rev0; d != 1 {
			t.Errorf("a disconnect took %d etcd revisions, want 1", d)
		}
	})

	t.Run("1000 remote endpoints", func(t *testing.T) {
		if testing.Short() {
			t.Skip("1,000 records")
		}
		// A host "hx" with 1,000 endpoints, written straight into etcd under
		// a lease of its own (no host record: no overlay peer).
		cli := c.client(h1)
		ctx := context.Background()
		lease, err := cli.Grant(ctx, 60)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 1000; i += 100 {
			var ops []clientv3.Op
			for j := i; j < i+100; j++ {
				ops = append(ops, clientv3.OpPut(fmt.Sprintf("/netalias/v1/endpoints/hx/testnet/x%d", j),
					fmt.Sprintf(`{"name":"x%d","ipv4":"10.212.%d.%d","mac":"02:42:0a:d4:%02x:%02x","container":"/run/netns/x%d"}`, j, 56+j/250, 1+j%250, 56+j/250, 1+j%250, j),
					clientv3.WithLease(lease.ID)))
			}
			if _, err := cli.Txn(ctx).Then(ops...).Commit(); err != nil {
				t.Fatal(err)
			}
		}
		if _, ok := clWait(5*time.Second, func() bool { return a1.answers("x999.testnet", "10.212.59.250") }); !ok {
			t.Fatal("h1 never answered the 1,000th remote endpoint")
		}
		var lat []time.Duration
		for i := 0; i < 50; i++ {
			ns := a2.container(fmt.Sprintf("q%d", i))
			name := fmt.Sprintf("q%d", i)
			a2.mustNA("connect", "--name", name, "testnet", ns)
			ip := a2.endpointIP("testnet", name)
			d, ok := clWait(5*time.Second, func() bool { return a1.answers(name+".testnet", ip) })
			if !ok {
				t.Fatalf("%s not answered on h1", name)
			}
			lat = append(lat, d)
		}
		t.Logf("propagation with 1,000 more remote endpoints over 50 connects: p50 %v, p99 %v", clPercentile(lat, 0.5).Round(10*time.Microsecond), clPercentile(lat, 0.99).Round(10*time.Microsecond))
		t.Logf("coredns RSS on h1: %d kB before any remote endpoint, %d kB with ~1,250 remote ones (ratio %.2f)", rss0, rssOf(a1.coredns.Process.Pid), float64(rssOf(a1.coredns.Process.Pid))/float64(rss0))
		if _, err := cli.Revoke(ctx, lease.ID); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("partition heals", func(t *testing.T) {
		heal := c.partition(h2)
		cut := time.Now()
		if _, ok := clWait(clLeaseTTL+3*time.Second, func() bool { _, rc, _ := a1.lookup("centos-1.testnet"); return rc == dns.RcodeNameError }); !ok {
			t.Error("h1 still answers centos-1 of partitioned h2 after TTL + 3 s")
		}
		// h2 alone: its own names, the last-known remote ones, and a new
		// container attached from the blocks it holds.
		late := a2.container("late")
		if _, err := a2.na("connect", "--name", "late", "testnet", late); err != nil {
			t.Errorf("connect on partitioned h2: %v", err)
		}
		if !a2ns(a2, "centos-1.testnet", ip1) || !a2ns(a2, "centos-2.testnet", ip2) {
			t.Error("partitioned h2 lost its own or last-known names")
		}
		if wait := 30*time.Second - time.Since(cut); wait > 0 && !testing.Short() {
			time.Sleep(wait)
		}
		heal()
		healed := time.Now()
		lateIP := a2.endpointIP("testnet", "late")
		if d, ok := clWait(5*time.Second, func() bool {
			return a1.answers("centos-1.testnet", ip1) && a1.answers("late.testnet", lateIP)
		}); !ok {
			t.Errorf("h2's names not back on h1 %v after the heal", d)
		}
		// Traffic by name within 5 s of the heal (issue 13). It once took
		// 10.4-10.7 s, one run in three: the trace showed traffic by
		// address flowing at 0.6 s while the container's lookups timed out
		// twice, its neighbour entry for the gateway holding a MAC the
		// bridge no longer had (a bridge took its lowest port's MAC until
		// the agent set one).
		trace := startHealTrace(healed, []*clAgent{a1, a2}, c2, ip1)
		_, err := pingUntil(c2, "centos-1.testnet", 5*time.Second-time.Since(healed))
		took := time.Since(healed)
		if report := trace.stop(); err != nil || took > 5*time.Second {
			t.Logf("slow heal (%v), trace:\n%s", took.Round(time.Millisecond), report)
		}
		if err != nil {
			t.Errorf("centos-2 (h1) → centos-1 (h2) not flowing 5 s after the heal: %v", err)
		}
		t.Logf("partition of h2 healed: names and traffic back after %v", took.Round(time.Millisecond))
		clNoDuplicates(t, []*clAgent{a1, a2}, "testnet")
	})

	t.Run("concurrent connects", func(t *testing.T) {
		n := 100
		if testing.Short() {
			n = 10
		}
		var wg sync.WaitGroup
		errs := make(chan error, 3*n)
		for _, a := range as {
			nss := make([]string, n)
			for i := range nss {
				nss[i] = a.container(fmt.Sprintf("r%d", i))
			}
			wg.Add(1)
			go func(a *clAgent) {
				defer wg.Done()
				var inner sync.WaitGroup
				for w := 0; w < 4; w++ {
					inner.Add(1)
					go func(w int) {
						defer inner.Done()
						for i := w; i < n; i += 4 {
							if _, err := a.na("connect", "--name", fmt.Sprintf("%s-r%d", a.h.name, i), "testnet", nss[i]); err != nil {
								errs <- err
							}
						}
					}(w)
				}
				inner.Wait()
			}(a)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		clNoDuplicates(t, as, "testnet")
	})

	t.Run("host death", func(t *testing.T) {
		if l := c.leader(c.client(h1)); l == h3 {
			c.moveLeader(h1) // this case is a follower's death
		}
		if d, ok := clWait(5*time.Second, func() bool { return strings.Contains(a1.fdbDsts(), "dst "+h3.ip) }); !ok {
			t.Fatalf("h1 has no forwarding entry to h3 after %v:\n%s", d, a1.fdbDsts())
		}
		died := time.Now()
		a3.stop()
		c.killEtcd(h3)
		for _, ns := range []string{h3.ns} {
			exec.Command("ip", "netns", "del", ns).Run()
		}
		bound := clLeaseTTL + 2*time.Second
		gone := func(a *clAgent) func() bool {
			return func() bool {
				_, rc, err := a.lookup("centos-3.testnet")
				return err == nil && rc == dns.RcodeNameError && !strings.Contains(a.fdbDsts(), "dst "+h3.ip)
			}
		}
		d1, ok1 := clWait(bound+3*time.Second, gone(a1))
		d2, ok2 := clWait(bound+3*time.Second-time.Since(died)+d1, gone(a2))
		since := time.Since(died)
		t.Logf("h3 dead: centos-3 NXDOMAIN and its FDB entries gone on h1 after %v, on h2 after %v (TTL %v)", d1.Round(time.Millisecond), since.Round(time.Millisecond), clLeaseTTL)
		if !ok1 || !ok2 || since > bound+500*time.Millisecond {
			t.Errorf("h3's names or FDB entries not gone everywhere within %v (h1 %v %v, h2 %v %v)\nh1 fdb:\n%s", bound, ok1, d1, ok2, d2, a1.fdbDsts())
		}
	})

	t.Run("etcd down", func(t *testing.T) {
		for _, h := range []*clHost{h1, h2} {
			c.killEtcd(h)
		}
		time.Sleep(time.Second)
		if !a1.answers("centos-1.testnet", ip1) || !a2.answers("centos-2.testnet", ip2) || !a1.answers("centos-2.testnet", ip2) {
			t.Error("with etcd down the hosts stopped answering")
		}
		c.hosts = []*clHost{h1, h2} // h3 is dead
		c.startEtcd()
		restarted := time.Now()
		x := a1.container("after")
		a1.mustNA("connect", "--name", "after", "testnet", x)
		ipx := a1.endpointIP("testnet", "after")
		if d, ok := clWait(5*time.Second, func() bool { return a2.answers("after.testnet", ipx) && a1.answers("centos-1.testnet", ip1) }); !ok {
			t.Errorf("not reconverged %v after etcd restarted", d)
		}
		t.Logf("etcd restarted: reconverged after %v", time.Since(restarted).Round(time.Millisecond))
	})
}

// a2ns asks a's DNS server from inside its host (over loopback: the
// underlay may be cut).
func a2ns(a *clAgent, name, ip string) bool {
	_, ok := clWait(2*time.Second, func() bool {
		out, err := nsExec(a.h.ns, "dig", "+short", "+time=1", "+tries=1", "@127.0.0.1", name, "A")
		return err == nil && strings.TrimSpace(out) == ip
	})
	return ok
}

// pingUntil pings name from ns until one answer or d.
func pingUntil(ns, name string, d time.Duration) (string, error) {
	deadline := time.Now().Add(d)
	for {
		out, err := nsExec(ns, "ping", "-c1", "-W1", name)
		if err == nil || time.Now().After(deadline) {
			return out, err
		}
	}
}

// clNoDuplicates checks that no IPv4 address is held twice on net across
// the hosts' state files, and that each is inside a block its host holds.
func clNoDuplicates(t *testing.T, as []*clAgent, net string) {
	t.Helper()
	seen := map[netip.Addr]string{}
	total := 0
	for _, a := range as {
		f := a.file(net)
		all := append([]netip.Addr{f.Network.Gateway}, nil...)
		for _, ep := range f.Endpoints {
			all = append(all, ep.IPv4)
		}
		for _, ip := range all {
			total++
			if o, dup := seen[ip]; dup {
				t.Errorf("address %s held by %s and %s", ip, o, a.h.name)
			}
			seen[ip] = a.h.name
			in := false
			for _, b := range f.Network.Cluster.Blocks {
				in = in || b.Contains(ip)
			}
			if !in {
				t.Errorf("%s: address %s outside its blocks %v", a.h.name, ip, f.Network.Cluster.Blocks)
			}
		}
	}
	t.Logf("%d addresses on %s across %d hosts, none twice", total, net, len(as))
}

// rssOf is a process's resident set in kB (0 when unknown).
func rssOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			var kb int
			fmt.Sscanf(strings.TrimSpace(v), "%d", &kb)
			return kb
		}
	}
	return 0
}
