package etcd

import (
	"context"
	"net/netip"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/netalias/netalias/cluster"
	"github.com/netalias/netalias/internal/etcdtest"
	"github.com/netalias/netalias/netwatch"
)

var keys = cluster.Keys{Prefix: cluster.DefaultPrefix}

// staleSink wraps the real store to record stale flips.
type staleSink struct {
	*netwatch.Store
	mu    sync.Mutex
	flips []bool
}

func (s *staleSink) SetStale(src string, v bool) {
	s.mu.Lock()
	s.flips = append(s.flips, v)
	s.mu.Unlock()
	s.Store.SetStale(src, v)
}

func (s *staleSink) stale() bool { return s.Store.Stale()[SourceName] }

func put(t *testing.T, cli *clientv3.Client, host, net, id, name, ip, container string) {
	t.Helper()
	rec := cluster.EndpointRecord{Name: name, IPv4: ip, Container: container, Aliases: []string{"web"}}
	if _, err := cli.Put(context.Background(), keys.Endpoint(host, net, id), mustJSON(rec)); err != nil {
		t.Fatal(err)
	}
}

func mustJSON(r cluster.EndpointRecord) string {
	b := `{"name":"` + r.Name + `","ipv4":"` + r.IPv4 + `","container":"` + r.Container + `","aliases":["web"]}`
	return b
}

func addrs(st *netwatch.Store, net, name string) []string {
	v := st.Snapshot().Network(net)
	if v == nil {
		return nil
	}
	rs := v.Lookup(name)
	if rs == nil {
		return nil
	}
	var out []string
	for _, ip := range rs.V4 {
		out = append(out, ip.String())
	}
	sort.Strings(out)
	return out
}

func waitFor(t *testing.T, what string, d time.Duration, f func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !f() {
		if time.Since(start) > d {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

func client(t *testing.T, endpoint string) *clientv3.Client {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 2 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func start(t *testing.T, src *Source) *staleSink {
	t.Helper()
	sink := &staleSink{Store: netwatch.NewStoreWith(netwatch.StoreOptions{Expected: []string{SourceName}})}
	src.Log = netwatch.Printf(t.Logf)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); src.Run(ctx, sink) }()
	t.Cleanup(func() { cancel(); <-done })
	return sink
}

func TestSourceListsWatchesAndSkipsOwnHost(t *testing.T) {
	srv := etcdtest.Start(t)
	w := srv.Client(t)
	ctx := context.Background()
	w.Put(ctx, keys.Network("testnet"), `{"subnet":"10.9.0.0/24","vni":4096,"block_bits":26}`)
	put(t, w, "h2", "testnet", "e1", "c1", "10.9.0.66", "/run/netns/c1")
	put(t, w, "h1", "testnet", "e9", "mine", "10.9.0.2", "/run/netns/c1")
	sink := start(t, New(srv.Client(t), keys, "h1"))
	waitFor(t, "first load", 5*time.Second, func() bool { return sink.Ready() })
	if got := addrs(sink.Store, "testnet", "c1"); len(got) != 1 || got[0] != "10.9.0.66" {
		t.Fatalf("c1 = %v", got)
	}
	if got := addrs(sink.Store, "testnet", "mine"); got != nil {
		t.Fatalf("own host's record served from etcd: %v", got)
	}
	v := sink.Snapshot().Network("testnet")
	if v.Subnet.String() != "10.9.0.0/24" {
		t.Fatalf("subnet %v", v.Subnet)
	}
	// The same namespace path on another host is another client.
	put(t, w, "h3", "testnet", "e2", "c2", "10.9.0.130", "/run/netns/c1")
	waitFor(t, "c2 via watch", 5*time.Second, func() bool { return addrs(sink.Store, "testnet", "c2") != nil })
	c1 := sink.Snapshot().Client(netip.MustParseAddr("10.9.0.66"))
	c2 := sink.Snapshot().Client(netip.MustParseAddr("10.9.0.130"))
	if c1 == nil || c2 == nil || c1.Key == c2.Key || c1.Key != "h2:/run/netns/c1" {
		t.Fatalf("clients: %+v %+v", c1, c2)
	}
	// This host's netlink view never hides remote endpoints.
	sink.SyncLinks(map[string]struct{}{})
	sink.Update("probe", &netwatch.Network{Name: "probe"})
	if got := addrs(sink.Store, "testnet", "web"); len(got) != 2 {
		t.Fatalf("alias web after a link sync: %v", got)
	}
	// A host's lease expiry deletes its keys in one revision: one update.
	w.Delete(ctx, keys.HostEndpoints("h2"), clientv3.WithPrefix())
	waitFor(t, "c1 gone", 5*time.Second, func() bool { return addrs(sink.Store, "testnet", "c1") == nil })
	w.Delete(ctx, keys.HostEndpoints("h3"), clientv3.WithPrefix())
	waitFor(t, "network gone with its last remote endpoint", 5*time.Second, func() bool { return sink.Snapshot().Network("testnet") == nil })
}

func TestSourceRelistsAfterCompactionMissingNoDeletion(t *testing.T) {
	srv := etcdtest.Start(t)
	w := srv.Client(t)
	ctx := context.Background()
	put(t, w, "h2", "testnet", "e1", "gone", "10.9.0.66", "c")
	put(t, w, "h2", "testnet", "e2", "stays", "10.9.0.67", "d")
	src := New(srv.Client(t), keys, "h1")
	var lists atomic.Int32
	src.afterList = func() {
		if lists.Add(1) > 1 {
			return
		}
		// Between the list and the watch: a deletion, an addition, then a
		// compaction past both, so the watch from the listed revision fails.
		w.Delete(ctx, keys.Endpoint("h2", "testnet", "e1"))
		put(t, w, "h2", "testnet", "e3", "new", "10.9.0.68", "e")
		r, _ := w.Get(ctx, "x")
		if _, err := w.Compact(ctx, r.Header.Revision); err != nil {
			t.Error(err)
		}
	}
	sink := start(t, src)
	waitFor(t, "new after the re-list", 5*time.Second, func() bool { return addrs(sink.Store, "testnet", "new") != nil })
	if got := addrs(sink.Store, "testnet", "gone"); got != nil {
		t.Fatalf("deletion missed across the compaction: gone = %v", got)
	}
	if addrs(sink.Store, "testnet", "stays") == nil || lists.Load() != 2 {
		t.Fatalf("stays lost or lists=%d", lists.Load())
	}
}

func TestSourceStaleKeepsLastKnownAndReconverges(t *testing.T) {
	srv := etcdtest.Start(t)
	w := srv.Client(t)
	ctx := context.Background()
	put(t, w, "h2", "testnet", "e1", "c1", "10.9.0.66", "c")
	put(t, w, "h2", "testnet", "e2", "c2", "10.9.0.67", "d")
	proxy := etcdtest.NewProxy(t, srv)
	src := New(client(t, proxy.Endpoint), keys, "h1")
	src.Probe, src.StaleAfter = 200*time.Millisecond, time.Second
	sink := start(t, src)
	waitFor(t, "load", 5*time.Second, func() bool { return addrs(sink.Store, "testnet", "c2") != nil })
	// An idle but healthy watch is not stale: progress notifications
	// answer the probes.
	time.Sleep(2 * src.StaleAfter)
	if sink.stale() {
		t.Fatal("idle healthy watch marked stale")
	}
	proxy.Cut()
	d := waitFor(t, "stale", 5*time.Second, sink.stale)
	t.Logf("marked stale %v after the cut", d.Round(time.Millisecond))
	// Last-known records keep being served.
	if addrs(sink.Store, "testnet", "c1") == nil || addrs(sink.Store, "testnet", "c2") == nil {
		t.Fatal("records dropped while etcd is unreachable")
	}
	// Meanwhile: one endpoint goes, one comes, and the history is compacted.
	w.Delete(ctx, keys.Endpoint("h2", "testnet", "e1"))
	put(t, w, "h2", "testnet", "e3", "c3", "10.9.0.68", "e")
	r, _ := w.Get(ctx, "x")
	w.Compact(ctx, r.Header.Revision)
	healed := time.Now()
	proxy.Heal()
	waitFor(t, "reconverged", 10*time.Second, func() bool {
		return !sink.stale() && addrs(sink.Store, "testnet", "c1") == nil && addrs(sink.Store, "testnet", "c3") != nil
	})
	t.Logf("reconverged %v after the heal", time.Since(healed).Round(time.Millisecond))
	if addrs(sink.Store, "testnet", "c2") == nil {
		t.Fatal("c2 lost")
	}
}

func TestSourceUnreachableAtStartServesLocal(t *testing.T) {
	srv := etcdtest.Start(t)
	proxy := etcdtest.NewProxy(t, srv)
	proxy.Cut()
	src := New(client(t, proxy.Endpoint), keys, "h1")
	src.Probe, src.StaleAfter = 200*time.Millisecond, 500*time.Millisecond
	sink := start(t, src)
	waitFor(t, "ready without etcd", 5*time.Second, func() bool { return sink.Ready() && sink.stale() })
	put(t, srv.Client(t), "h2", "testnet", "e1", "c1", "10.9.0.66", "c")
	proxy.Heal()
	waitFor(t, "remote names once etcd answers", 10*time.Second, func() bool { return !sink.stale() && addrs(sink.Store, "testnet", "c1") != nil })
}
