package test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/miekg/dns"

	"github.com/netalias/netalias/internal/testenv"
	"github.com/netalias/netalias/netwatch"
	"github.com/netalias/netalias/netwatch/docker"
)

// BenchmarkDockerEventToRecord measures how long after the engine emits an
// event (its own timestamp) the source has published the change: network
// connect and disconnect of a running container, through the real Docker
// Engine. Target: well under 50 ms. Reports the median and the worst case.
func BenchmarkDockerEventToRecord(b *testing.B) {
	testenv.RequireDocker(b)
	e := engine{bin: "docker"}
	img := busyboxImage(b, "docker")
	net, _ := e.networkIn(b, "10.203", nil)
	ctr := natestName("bench")
	e.run(b, ctr, img, "sleep", "3600")

	src, sink := startSource(b, "unix:///var/run/docker.sock")
	src.Log = netwatch.Discard
	eventually(b, 10*time.Second, "first sync", src.Synced)

	eventTime := networkEventTimes(b, net)
	published := func(want bool) time.Time {
		eventually(b, 5*time.Second, fmt.Sprintf("%s on %s: %v", ctr, net, want), func() bool {
			return (len(sink.lookup(ctr, net)) == 1) == want
		})
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return sink.updated[net]
	}

	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.must(b, "network", "connect", net, ctr)
		t0 := eventTime(events.ActionConnect)
		lat = append(lat, published(true).Sub(t0))
		e.must(b, "network", "disconnect", net, ctr)
		t0 = eventTime(events.ActionDisconnect)
		lat = append(lat, published(false).Sub(t0))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "ms-median")
	b.ReportMetric(float64(slices.Max(lat).Microseconds())/1000, "ms-max")
}

// askAt sends one A query for name to server; nil answers on any failure.
func askAt(server, name string) (rcode int, answers int) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	c := dns.Client{Timeout: 500 * time.Millisecond}
	r, _, err := c.Exchange(m, server)
	if err != nil {
		return -1, 0
	}
	return r.Rcode, len(r.Answer)
}

// race polls every server's condition each millisecond from t0 and
// returns how long after t0 each first held.
func race(b *testing.B, t0 time.Time, conds ...func() bool) []time.Duration {
	out := make([]time.Duration, len(conds))
	left := len(conds)
	deadline := time.Now().Add(5 * time.Second)
	for left > 0 {
		for i, c := range conds {
			if out[i] == 0 && c() {
				out[i] = time.Since(t0)
				left--
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("not every server caught up within 5 s: %v", out)
		}
		time.Sleep(time.Millisecond)
	}
	return out
}

func median(d []time.Duration) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	return float64(s[len(s)/2].Microseconds()) / 1000
}

// BenchmarkPodmanConnectToAnswer: after `podman network connect` (from the
// moment the command is issued), how long until our server (following the
// Podman service's event stream) answers the new NAME.NETWORK, compared
// with Podman's own aardvark-dns answering NAME.dns.podman on the same
// network in the same round; then the same for disconnect (NXDOMAIN).
// aardvark-dns is told synchronously by netavark inside the command; we
// learn from Podman's event log (see netwatch/docker/podman.go).
func BenchmarkPodmanConnectToAnswer(b *testing.B) {
	p := newPodman(b)
	e := p.eng
	img := busyboxImage(b, "podman")
	net, third := e.networkIn(b, "10.204", nil) // aardvark-dns on
	gw := fmt.Sprintf("10.204.%d.1", third)
	e.run(b, natestName("keeper"), "--network", net, img, "sleep", "3600")
	ctr := natestName("bench")
	e.run(b, ctr, img, "sleep", "3600")
	startCoreDNS(b, "        state off\n        docker "+p.endpoint(), nil, true)

	ours, theirs := dnsHost+":53", gw+":53"
	var oursUp, aardUp, oursDown, aardDown []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		e.must(b, "network", "connect", net, ctr)
		d := race(b, t0,
			func() bool { _, n := askAt(ours, ctr+"."+net); return n > 0 },
			func() bool { _, n := askAt(theirs, ctr+".dns.podman"); return n > 0 })
		oursUp, aardUp = append(oursUp, d[0]), append(aardUp, d[1])
		t0 = time.Now()
		e.must(b, "network", "disconnect", net, ctr)
		d = race(b, t0,
			func() bool { rc, _ := askAt(ours, ctr+"."+net); return rc == dns.RcodeNameError },
			func() bool { rc, n := askAt(theirs, ctr+".dns.podman"); return rc >= 0 && n == 0 })
		oursDown, aardDown = append(oursDown, d[0]), append(aardDown, d[1])
	}
	b.StopTimer()
	b.ReportMetric(median(oursUp), "ms-connect-ours")
	b.ReportMetric(median(aardUp), "ms-connect-aardvark")
	b.ReportMetric(median(oursDown), "ms-disconnect-ours")
	b.ReportMetric(median(aardDown), "ms-disconnect-aardvark")
	// Per round, how far behind aardvark-dns we were (negative: ahead).
	var lag []time.Duration
	for i := range oursUp {
		lag = append(lag, oursUp[i]-aardUp[i], oursDown[i]-aardDown[i])
	}
	b.ReportMetric(median(lag), "ms-lag-behind-aardvark")
}

// BenchmarkDockerEventToAnswer: from the Docker Engine's event timestamp
// to the first answer of our coredns reflecting the change (network
// connect: the name answers; disconnect: NXDOMAIN). Target: under 50 ms.
func BenchmarkDockerEventToAnswer(b *testing.B) {
	testenv.RequireDocker(b)
	e := engine{bin: "docker"}
	img := busyboxImage(b, "docker")
	net, _ := e.networkIn(b, "10.203", nil)
	ctr := natestName("bench")
	e.run(b, ctr, img, "sleep", "3600")
	startCoreDNS(b, "        state off\n        docker unix:///var/run/docker.sock", nil, true)

	eventTime := networkEventTimes(b, net)
	name := ctr + "." + net
	var up, down []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.must(b, "network", "connect", net, ctr)
		t0 := eventTime(events.ActionConnect)
		race(b, t0, func() bool { _, n := askAt(dnsHost+":53", name); return n > 0 })
		up = append(up, time.Since(t0))
		e.must(b, "network", "disconnect", net, ctr)
		t0 = eventTime(events.ActionDisconnect)
		race(b, t0, func() bool { rc, _ := askAt(dnsHost+":53", name); return rc == dns.RcodeNameError })
		down = append(down, time.Since(t0))
	}
	b.StopTimer()
	b.ReportMetric(median(up), "ms-connect")
	b.ReportMetric(median(down), "ms-disconnect")
	b.ReportMetric(float64(slices.Max(append(up, down...)).Microseconds())/1000, "ms-max")
}

// BenchmarkDockerResync: a source's complete first sync (list, inspect
// every container, networks) against the real Docker Engine running 30
// containers of ours (plus whatever else runs there).
func BenchmarkDockerResync(b *testing.B) {
	testenv.RequireDocker(b)
	e := engine{bin: "docker"}
	img := busyboxImage(b, "docker")
	net, _ := e.networkIn(b, "10.203", nil)
	for i := 0; i < 30; i++ {
		e.run(b, natestName("resync"), "--network", net, img, "sleep", "3600")
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		src, err := docker.NewSource("unix:///var/run/docker.sock")
		if err != nil {
			b.Fatal(err)
		}
		src.Log = netwatch.Discard
		sink := newRecSink()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); src.Run(ctx, sink) }()
		for !src.Synced() {
			time.Sleep(100 * time.Microsecond)
		}
		b.StopTimer()
		sink.mu.Lock()
		n := len(sink.nets[net].Endpoints)
		sink.mu.Unlock()
		if n != 30 {
			b.Fatalf("%d endpoints on %s after sync, want 30", n, net)
		}
		cancel()
		<-done
		b.StartTimer()
	}
}

// networkEventTimes follows Docker's events for network net and returns a
// function that waits for the next event with the given action and gives
// the engine's timestamp of it.
func networkEventTimes(b *testing.B, net string) func(events.Action) time.Time {
	cli, err := client.NewClientWithOpts(client.WithHost("unix:///var/run/docker.sock"), client.WithAPIVersionNegotiation())
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(func() { cancel(); cli.Close() })
	msgs, errs := cli.Events(ctx, events.ListOptions{Filters: filters.NewArgs(
		filters.Arg("type", "network"), filters.Arg("network", net))})
	return func(action events.Action) time.Time {
		for {
			select {
			case m := <-msgs:
				if m.Action == action {
					return time.Unix(0, m.TimeNano)
				}
			case err := <-errs:
				b.Fatal(err)
			case <-time.After(10 * time.Second):
				b.Fatalf("no %s event", action)
			}
		}
	}
}
