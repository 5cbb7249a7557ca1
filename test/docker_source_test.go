package test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/netalias/netalias/internal/testenv"
	"github.com/netalias/netalias/netwatch"
	"github.com/netalias/netalias/netwatch/docker"
)

func addrs(ss ...netip.Addr) []netip.Addr {
	slices.SortFunc(ss, netip.Addr.Compare)
	return ss
}

// TestDockerSource follows the scenario at the source's output
// (the records it hands the DNS server), through a socket proxy that the
// test cuts to play a daemon that goes away.
func TestDockerSource(t *testing.T) {
	testenv.RequireDocker(t)
	e := engine{bin: "docker"}
	img := busyboxImage(t, "docker")
	net, third := e.networkIn(t, "10.203", nil)
	subnet := fmt.Sprintf("10.203.%d.0/24", third)

	proxy := newSockProxy(t, "/var/run/docker.sock")
	src, sink := startSource(t, proxy.endpoint())
	eventually(t, 10*time.Second, "first sync", src.Synced)
	if v := src.APIVersion(); v != "1.41" {
		t.Errorf("negotiated API version %q, want the engine's 1.41", v)
	}

	// Networks come and go with their events, containers or not.
	later, _ := e.networkIn(t, "10.203", nil)
	has := func(name string) bool { sink.mu.Lock(); defer sink.mu.Unlock(); return sink.nets[name] != nil }
	eventually(t, time.Second, "created network published", func() bool { return has(later) })
	e.must(t, "network", "rm", later)
	eventually(t, time.Second, "removed network dropped", func() bool { return !has(later) })

	c1 := natestName("centos-1")
	id1 := e.run(t, c1, "--network", net, "--network-alias", "c1", "--label", "com.docker.compose.service=web", img, "sleep", "600")
	rep := natestName("web-2")
	e.run(t, rep, "--network", net, "--label", "com.docker.compose.service=web", img, "sleep", "600")
	ip1, ipRep := e.ip(t, c1, net), e.ip(t, rep, net)
	for _, name := range []string{c1, "c1", id1[:12]} {
		eventually(t, 2*time.Second, name+"."+net+" resolves to "+ip1.String(), func() bool {
			return slices.Equal(sink.lookup(name, net), []netip.Addr{ip1})
		})
	}
	if got, want := sink.lookup("web", net), addrs(ip1, ipRep); !slices.Equal(got, want) {
		t.Errorf("compose service web.%s = %v, want both replicas %v", net, got, want)
	}
	if ep, _ := sink.endpoint(c1, net); ep.Container != id1 {
		t.Errorf("endpoint container %q, want id %q", ep.Container, id1)
	}
	sink.checkNetwork(t, net, subnet, fmt.Sprintf("10.203.%d.1", third))

	// docker restart: the current address is served.
	e.must(t, "restart", "-t", "0", c1)
	eventually(t, 2*time.Second, "after restart, the current address", func() bool {
		return slices.Equal(sink.lookup(c1, net), []netip.Addr{e.ip(t, c1, net)})
	})

	// Restart onto another address: someone took the old one meanwhile.
	e.must(t, "stop", "-t", "0", c1)
	eventually(t, time.Second, "stopped container gone", func() bool { return sink.lookup(c1, net) == nil })
	thief := natestName("thief")
	e.run(t, thief, "--network", net, "--ip", ip1.String(), img, "sleep", "600")
	e.must(t, "start", c1)
	ip1b := e.ip(t, c1, net)
	if ip1b == ip1 {
		t.Fatalf("container kept %v although another took it", ip1)
	}
	eventually(t, 2*time.Second, "new address "+ip1b.String()+" after restart", func() bool {
		return slices.Equal(sink.lookup(c1, net), []netip.Addr{ip1b})
	})

	// Rename: the new name resolves, the old one no longer.
	c1r := natestName("renamed")
	e.must(t, "rename", c1, c1r)
	t.Cleanup(func() { e.cmd("rm", "-f", c1r).Run() })
	eventually(t, time.Second, "renamed container under its new name only", func() bool {
		return slices.Equal(sink.lookup(c1r, net), []netip.Addr{ip1b}) && sink.lookup(c1, net) == nil
	})
	e.must(t, "rename", c1r, c1)

	// --link: an alias on the linking container's endpoint only.
	c2 := natestName("centos-2")
	e.run(t, c2, "--network", net, "--link", c1+":db", img, "sleep", "600")
	eventually(t, 2*time.Second, c2+" published with its link", func() bool {
		ep, ok := sink.endpoint(c2, net)
		return ok && slices.Equal(ep.Links, []netwatch.Link{{Target: c1, Alias: "db"}})
	})
	if ep, _ := sink.endpoint(c1, net); len(ep.Links) != 0 {
		t.Errorf("link leaked onto the target's endpoint: %v", ep.Links)
	}

	// The default bridge, which Docker gives no DNS.
	c3 := natestName("onbridge")
	e.run(t, c3, img, "sleep", "600")
	ip3 := e.ip(t, c3, "bridge")
	eventually(t, 2*time.Second, c3+".bridge resolves", func() bool {
		return slices.Equal(sink.lookup(c3, "bridge"), []netip.Addr{ip3})
	})

	// rm -f: gone within a second.
	e.must(t, "rm", "-f", rep)
	eventually(t, time.Second, "removed replica dropped from web."+net, func() bool {
		return slices.Equal(sink.lookup("web", net), []netip.Addr{ip1b})
	})

	// The engine goes away: records stay, marked stale; a container removed
	// meanwhile goes on resync, the others stay.
	proxy.cut()
	eventually(t, 5*time.Second, "source marked stale", sink.isStale)
	if got := sink.lookup(c2, net); len(got) != 1 {
		t.Errorf("while disconnected, %s.%s = %v, want last known record", c2, net, got)
	}
	e.must(t, "rm", "-f", c2)
	time.Sleep(500 * time.Millisecond) // stays cut across a few reconnect attempts
	proxy.restore(t)
	eventually(t, 6*time.Second, "resynced, stale cleared", func() bool { return !sink.isStale() })
	if got := sink.lookup(c2, net); got != nil {
		t.Errorf("container removed while disconnected still resolves: %v", got)
	}
	for name, net := range map[string]string{c1: net, thief: net, c3: "bridge"} {
		if got := sink.lookup(name, net); len(got) != 1 {
			t.Errorf("running %s.%s lost across the outage: %v", name, net, got)
		}
	}
	// And events flow again after the reconnect.
	e.must(t, "rm", "-f", c3)
	eventually(t, time.Second, "event after reconnect", func() bool { return sink.lookup(c3, "bridge") == nil })
}

// The socket is absent when the source starts: it starts anyway, is not
// synced (so not ready), logs once however often it retries, and syncs as
// soon as the engine appears.
func TestDockerSourceSocketAbsentAtStart(t *testing.T) {
	testenv.RequireDocker(t)
	proxy := newSockProxyDown(t, "/var/run/docker.sock")
	src, err := docker.NewSource(proxy.endpoint())
	if err != nil {
		t.Fatal(err)
	}
	var logs atomic.Int32
	src.Log = netwatch.Printf(func(f string, a ...any) { logs.Add(1); t.Logf(f, a...) })
	sink := newRecSink()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); src.Run(ctx, sink) }()
	t.Cleanup(func() { cancel(); <-done })

	time.Sleep(1500 * time.Millisecond) // several backoff rounds
	if src.Synced() {
		t.Fatal("synced without an engine")
	}
	sink.mu.Lock()
	replaces := sink.replaces
	sink.mu.Unlock()
	if !sink.isStale() || replaces != 0 {
		t.Errorf("before the engine appears: stale %v, replaces %d; want stale and nothing published", sink.isStale(), replaces)
	}
	if n := logs.Load(); n != 1 {
		t.Errorf("absent socket logged %d times, want once", n)
	}
	proxy.restore(t)
	eventually(t, 5*time.Second, "synced once the engine appears", src.Synced)
	eventually(t, time.Second, "stale cleared", func() bool { return !sink.isStale() })
}
