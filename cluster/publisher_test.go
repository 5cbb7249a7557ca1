package cluster

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netalias/netalias/internal/etcdtest"
	"github.com/netalias/netalias/state"
)

// desiredSet is a mutable desired set standing in for the state directory.
type desiredSet struct {
	mu sync.Mutex
	d  Desired
}

func newDesired() *desiredSet {
	return &desiredSet{d: Desired{Host: HostRecord{VTEP: "192.0.2.1"}, Gateways: map[string]GatewayRecord{}, Endpoints: map[EndpointID]EndpointRecord{}}}
}

func (s *desiredSet) get() (*Desired, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := Desired{Host: s.d.Host, Gateways: map[string]GatewayRecord{}, Endpoints: map[EndpointID]EndpointRecord{}}
	for k, v := range s.d.Gateways {
		c.Gateways[k] = v
	}
	for k, v := range s.d.Endpoints {
		c.Endpoints[k] = v
	}
	return &c, nil
}

func (s *desiredSet) put(net, id, name, ip string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.d.Endpoints[EndpointID{net, id}] = EndpointRecord{Name: name, IPv4: ip, Container: "/run/netns/" + name}
}

func (s *desiredSet) del(net, id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.d.Endpoints, EndpointID{net, id})
}

func rev(t *testing.T, cli *clientv3.Client) int64 {
	t.Helper()
	r, err := cli.Get(context.Background(), "rev-probe")
	if err != nil {
		t.Fatal(err)
	}
	return r.Header.Revision
}

func waitFor(t *testing.T, what string, d time.Duration, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func hostKeys(t *testing.T, cli *clientv3.Client, host string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, p := range []string{testKeys.Host(host), testKeys.HostGateways(host), testKeys.HostEndpoints(host)} {
		r, err := cli.Get(context.Background(), p, clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range r.Kvs {
			out[string(kv.Key)] = kv.Lease
		}
	}
	return out
}

func startHost(t *testing.T, srv *etcdtest.Server, host string, ttl time.Duration, ds *desiredSet) (*Session, *Publisher, *clientv3.Client, context.CancelFunc) {
	t.Helper()
	cli := srv.Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	s := NewSession(cli, ttl, nil)
	p := NewPublisher(cli, testKeys, host, s, ds.get, nil)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.Run(ctx) }()
	go func() { defer wg.Done(); p.Run(ctx) }()
	stop := func() { cancel(); wg.Wait() }
	t.Cleanup(stop)
	return s, p, cli, stop
}

func TestPublisherOneRevisionPerChangeAndIdempotent(t *testing.T) {
	srv := etcdtest.Start(t)
	ds := newDesired()
	ds.put("testnet", "e1", "c1", "10.0.0.2")
	ds.d.Gateways["testnet"] = GatewayRecord{IPv4: "10.0.0.1"}
	_, p, cli, _ := startHost(t, srv, "h1", 5*time.Second, ds)
	waitFor(t, "first publish", 10*time.Second, func() bool { return len(hostKeys(t, cli, "h1")) == 3 })
	if w := p.Writes(); w != 1 {
		t.Fatalf("first publish took %d writes, want 1", w)
	}
	// Nothing changed: a sync writes nothing, however often it runs.
	r0 := rev(t, cli)
	for range 5 {
		p.Notify()
		time.Sleep(20 * time.Millisecond)
	}
	if r := rev(t, cli); r != r0 {
		t.Fatalf("idle syncs moved the revision %d → %d", r0, r)
	}
	// One connect, one disconnect: one revision each.
	for i, change := range []func(){
		func() { ds.put("testnet", "e2", "c2", "10.0.0.3") },
		func() { ds.del("testnet", "e1") },
	} {
		r0 := rev(t, cli)
		change()
		p.Notify()
		waitFor(t, "change published", 5*time.Second, func() bool { return rev(t, cli) > r0 })
		time.Sleep(100 * time.Millisecond)
		if d := rev(t, cli) - r0; d != 1 {
			t.Fatalf("change %d took %d revisions, want 1", i, d)
		}
	}
	keys := hostKeys(t, cli, "h1")
	if _, ok := keys[testKeys.Endpoint("h1", "testnet", "e2")]; !ok || len(keys) != 3 {
		t.Fatalf("published keys: %v", keys)
	}
	// A key under this host's prefix that the desired set lacks (a leftover
	// of a crashed run) is removed; a foreign host's key is left alone.
	stray := testKeys.Endpoint("h1", "testnet", "stray")
	other := testKeys.Endpoint("h2", "testnet", "x")
	cli.Put(context.Background(), stray, "{}")
	cli.Put(context.Background(), other, "{}")
	p.Notify()
	waitFor(t, "stray key removed", 5*time.Second, func() bool { _, ok := hostKeys(t, cli, "h1")[stray]; return !ok })
	if r, _ := cli.Get(context.Background(), other); len(r.Kvs) != 1 {
		t.Fatal("publisher of h1 deleted h2's key")
	}
}

// A publish of more keys than one transaction takes (a host with many
// endpoints publishing again under a new lease after a partition) writes
// the host record in the first transaction: the other hosts' overlays
// need it (the VTEP) before any endpoint of the host is of use to them.
func TestPublisherHostRecordInFirstTransaction(t *testing.T) {
	srv := etcdtest.Start(t)
	obs := srv.Client(t)
	ds := newDesired()
	n := 2*maxTxnOps + 10
	for i := range n {
		ds.put("testnet", fmt.Sprintf("e%03d", i), fmt.Sprintf("c%d", i), fmt.Sprintf("10.0.%d.%d", i/250, 2+i%250))
	}
	ds.d.Gateways["testnet"] = GatewayRecord{IPv4: "10.0.0.1"}
	r0 := rev(t, obs)
	startHost(t, srv, "h1", 5*time.Second, ds)
	wch := obs.Watch(ctxT(t), testKeys.Root(), clientv3.WithPrefix(), clientv3.WithRev(r0+1))
	first := map[string]bool{}
	var firstRev int64
	seen := 0
	for seen < n+2 {
		select {
		case wr := <-wch:
			if err := wr.Err(); err != nil {
				t.Fatal(err)
			}
			for _, ev := range wr.Events {
				seen++
				if firstRev == 0 {
					firstRev = ev.Kv.ModRevision
				}
				if ev.Kv.ModRevision == firstRev {
					first[string(ev.Kv.Key)] = true
				}
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d keys published after 10 s", seen, n+2)
		}
	}
	if !first[testKeys.Host("h1")] || !first[testKeys.Gateway("h1", "testnet")] {
		t.Fatalf("first transaction (revision %d, %d keys) lacks the host record or the gateway", firstRev, len(first))
	}
	if len(first) != maxTxnOps {
		t.Fatalf("first transaction wrote %d keys, want %d", len(first), maxTxnOps)
	}
}

func TestLeaseExpiryDeletesHostInOneRevision(t *testing.T) {
	srv := etcdtest.Start(t)
	ds := newDesired()
	for i := range 20 {
		ds.put("testnet", fmt.Sprintf("e%d", i), fmt.Sprintf("c%d", i), fmt.Sprintf("10.0.0.%d", i+2))
	}
	ds.d.Gateways["testnet"] = GatewayRecord{IPv4: "10.0.0.1"}
	_, _, hcli, _ := startHost(t, srv, "h1", 2*time.Second, ds)
	obs := srv.Client(t)
	waitFor(t, "publish", 10*time.Second, func() bool { return len(hostKeys(t, obs, "h1")) == 22 })
	ctx := ctxT(t)
	wch := obs.Watch(ctx, testKeys.Root(), clientv3.WithPrefix(), clientv3.WithRev(rev(t, obs)+1))
	// The host dies: its client goes, keepalives stop.
	died := time.Now()
	hcli.Close()
	var deletes int
	revs := map[int64]bool{}
	for deletes < 22 {
		select {
		case wr := <-wch:
			if err := wr.Err(); err != nil {
				t.Fatal(err)
			}
			for _, ev := range wr.Events {
				if ev.Type != clientv3.EventTypeDelete {
					t.Fatalf("unexpected %v", ev)
				}
				deletes++
				revs[ev.Kv.ModRevision] = true
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of 22 keys deleted 10s after the host died", deletes)
		}
	}
	gone := time.Since(died)
	if len(revs) != 1 {
		t.Fatalf("host's keys deleted in %d revisions, want 1", len(revs))
	}
	if gone < 1500*time.Millisecond || gone > 4*time.Second {
		t.Fatalf("keys gone %v after death, want about the 2s TTL", gone)
	}
	t.Logf("22 keys gone in one revision %v after the host died (TTL 2s)", gone.Round(time.Millisecond))
}

func TestLostLeaseIsReplacedAndRepublished(t *testing.T) {
	srv := etcdtest.Start(t)
	ds := newDesired()
	ds.put("testnet", "e1", "c1", "10.0.0.2")
	s, _, cli, _ := startHost(t, srv, "h1", 3*time.Second, ds)
	waitFor(t, "publish", 10*time.Second, func() bool { return len(hostKeys(t, cli, "h1")) == 2 })
	old, _ := s.Lease()
	// An operator (or a server that lost the lease) revokes it.
	if _, err := srv.Client(t).Revoke(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "republish under a new lease", 10*time.Second, func() bool {
		keys := hostKeys(t, cli, "h1")
		if len(keys) != 2 {
			return false
		}
		for _, l := range keys {
			if l == int64(old) || l == 0 {
				return false
			}
		}
		return true
	})
	if n := s.LeaseLosses(); n != 1 {
		t.Fatalf("lease losses %d, want 1", n)
	}
}

func TestStateDirDesired(t *testing.T) {
	dir := t.TempDir()
	abc := state.NewID()
	f := &state.File{Network: state.Network{ID: state.NewID(), Name: "testnet", Subnet: netip.MustParsePrefix("10.0.0.0/24"), Gateway: netip.MustParseAddr("10.0.0.1")},
		Endpoints: []state.Endpoint{{ID: abc, Name: "c1", IPv4: netip.MustParseAddr("10.0.0.2"), Netns: "/run/netns/c1", Aliases: []string{"web"},
			Links: []state.Link{{Target: "db", Alias: "database"}}}}}
	if err := state.Write(dir, f); err != nil {
		t.Fatal(err)
	}
	f2 := &state.File{Network: state.Network{ID: state.NewID(), Name: "local", Subnet: netip.MustParsePrefix("10.1.0.0/24")}, Endpoints: []state.Endpoint{{ID: state.NewID(), Name: "y"}}}
	if err := state.Write(dir, f2); err != nil {
		t.Fatal(err)
	}
	d, err := StateDirDesired(dir, HostRecord{}, func(f *state.File) bool { return f.Network.Name != "local" })()
	if err != nil {
		t.Fatal(err)
	}
	e := d.Endpoints[EndpointID{"testnet", abc}]
	if len(d.Endpoints) != 1 || e.Name != "c1" || e.Container != "/run/netns/c1" || e.Links[0].Alias != "database" || e.Aliases[0] != "web" {
		t.Fatalf("endpoints: %+v", d.Endpoints)
	}
	if d.Gateways["testnet"].IPv4 != "10.0.0.1" || len(d.Gateways) != 1 {
		t.Fatalf("gateways: %+v", d.Gateways)
	}
	if d, err := StateDirDesired(t.TempDir()+"/none", HostRecord{}, nil)(); err != nil || len(d.Endpoints) != 0 {
		t.Fatalf("missing dir: %v %v", d, err)
	}
}
