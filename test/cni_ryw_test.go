package test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestCNIReadYourWrites is the evidence for read-your-writes (issue 10,
// requirement 6) with our CoreDNS running on the state directory: N
// attaches through `netalias connect` and N through CNI ADD (libcni),
// each followed at once by one query; every one must answer, and after
// each disconnect or DEL the name must be NXDOMAIN at once. It also
// measures what the wait for the server adds to connect: connects with
// no server running against connects with one.
func TestCNIReadYourWrites(t *testing.T) {
	n := 200
	if testing.Short() {
		n = 40
	}
	e := newAgentEnv(t)
	dir := cniPluginDir(t)
	net := "cni" + agRand()
	e.network(net)
	list := cniList(t, net, e.dir, net, "1.1.0", nil, nil)
	lib := cniLib(t, dir)
	ctx := context.Background()
	nsName := agNetns(t)
	ns := "/run/netns/" + nsName

	connect := func(name string) time.Duration {
		start := time.Now()
		e.must("connect", "--name", name, net, nsName)
		return time.Since(start)
	}
	const m = 30
	var alone []time.Duration
	for i := range m {
		alone = append(alone, connect(fmt.Sprintf("solo%d", i)))
		e.must("disconnect", net, nsName)
	}

	gw := e.file(net).Network.Gateway.String()
	dnCoreDNS(t, dnCorefile(t, e.dir, dnsAddr, gw))
	answers := func(name string) (bool, bool) {
		r := dnAsk(t, name+"."+net)
		return r.Rcode == dns.RcodeSuccess && len(r.Answer) > 0, r.Rcode == dns.RcodeNameError
	}
	var withServer []time.Duration
	var okConnect, goneDisconnect, okAdd, goneDel int
	for i := range n {
		name := fmt.Sprintf("c%d", i)
		d := connect(name)
		if i < m {
			withServer = append(withServer, d)
		}
		if ok, _ := answers(name); ok {
			okConnect++
		}
		e.must("disconnect", net, nsName)
		if _, nx := answers(name); nx {
			goneDisconnect++
		}
	}
	for i := range n {
		name := fmt.Sprintf("p%d", i)
		rt := cniRT(fmt.Sprintf("ryw%04d", i), "eth0", ns, name)
		if _, err := lib.AddNetworkList(ctx, list, rt); err != nil {
			t.Fatalf("ADD #%d: %v", i, err)
		}
		if ok, _ := answers(name); ok {
			okAdd++
		}
		if err := lib.DelNetworkList(ctx, list, rt); err != nil {
			t.Fatalf("DEL #%d: %v", i, err)
		}
		if _, nx := answers(name); nx {
			goneDel++
		}
	}
	t.Logf("read your writes: connect %d/%d answered at once, disconnect %d/%d NXDOMAIN at once; CNI ADD %d/%d answered at once, DEL %d/%d NXDOMAIN at once",
		okConnect, n, goneDisconnect, n, okAdd, n, goneDel, n)
	a, w := medianDur(alone), medianDur(withServer)
	t.Logf("connect (whole command) median over %d: %v with no DNS server, %v with one running: read-your-writes adds %v",
		m, a.Round(10*time.Microsecond), w.Round(10*time.Microsecond), (w - a).Round(10*time.Microsecond))
	if okConnect != n || goneDisconnect != n || okAdd != n || goneDel != n {
		t.Errorf("read-your-writes broken: %d, %d, %d, %d of %d", okConnect, goneDisconnect, okAdd, goneDel, n)
	}
}

func medianDur(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
