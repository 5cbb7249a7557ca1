//go:build !netalias_lite

package agent

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/netalias/netalias/agent/internal/fakekernel"
	"github.com/netalias/netalias/agent/ipam"
	"github.com/netalias/netalias/cluster"
	"github.com/netalias/netalias/internal/etcdtest"
	"github.com/netalias/netalias/overlay"
	"github.com/netalias/netalias/state"
)

// Cluster mode against a real embedded etcd and the fake kernel: several
// "hosts" are Managers with their own state directory and fake kernel,
// sharing one etcd.

// fakeOverlay records what the daemon asks of the data plane.
type fakeOverlay struct {
	mu      sync.Mutex
	devs    map[string]overlay.NetworkSpec
	peers   map[string][]overlay.Peer
	remotes map[string][]overlay.Remote
}

func newFakeOverlay() *fakeOverlay {
	return &fakeOverlay{devs: map[string]overlay.NetworkSpec{}, peers: map[string][]overlay.Peer{}, remotes: map[string][]overlay.Remote{}}
}

func (f *fakeOverlay) MTU(s overlay.NetworkSpec) (int, error) {
	if s.MTU != 0 {
		return s.MTU, nil
	}
	return overlay.MTUFor(1500, false), nil
}

func (f *fakeOverlay) Ensure(s overlay.NetworkSpec, p []overlay.Peer, r []overlay.Remote) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.devs[s.Name], f.peers[s.Name], f.remotes[s.Name] = s, p, r
	return nil
}

func (f *fakeOverlay) Remove(n string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.devs, n)
	return nil
}

func (f *fakeOverlay) Networks() ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for n := range f.devs {
		out = append(out, n)
	}
	return out, nil
}

type clHost struct {
	m  *Manager
	fk *fakekernel.Kernel
	ov *fakeOverlay
}

func newClusterHost(t *testing.T, endpoint, host string) clHost {
	t.Helper()
	fk := fakekernel.New()
	pools, err := ipam.ParsePools("10.201.140.0/22:24")
	if err != nil {
		t.Fatal(err)
	}
	mem, err := cluster.Join(cluster.Options{Endpoints: []string{endpoint}, Host: host, LeaseTTL: 2 * time.Second, DialTimeout: time.Second}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	ov := newFakeOverlay()
	m, err := New(Options{StateDir: t.TempDir(), Pools: pools,
		Kernel:  Kernel{Links: fk, Veths: fk, Sysctl: fk, Firewall: fk, Resolver: fk, Namespaces: fk},
		Log:     slog.New(slog.NewTextHandler(&logBuf{}, nil)),
		Cluster: &ClusterOptions{Member: mem, VTEP: netip.MustParseAddr("192.0.2.1"), Overlay: ov, Timeout: 2 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	m.files = fakekernel.Files{K: fk, Inner: m.store}
	return clHost{m, fk, ov}
}

func TestClusterNetworkJoinedAcrossHosts(t *testing.T) {
	srv := etcdtest.Start(t)
	a, b, c := newClusterHost(t, srv.Endpoint, "a"), newClusterHost(t, srv.Endpoint, "b"), newClusterHost(t, srv.Endpoint, "c")

	n, err := a.m.CreateClusterNetwork(NetworkSpec{Name: "testnet", Subnet: "10.9.0.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	if n.Cluster == nil || n.Cluster.VNI < cluster.MinVNI || len(n.Cluster.Blocks) != 1 || !n.Cluster.Blocks[0].Contains(n.Gateway) || n.MTU != 1450 {
		t.Fatalf("created network: %+v cluster %+v", n, n.Cluster)
	}
	if fw := a.fk.State().Tables[a.m.table]; len(fw) != 1 || fw[0].OverlayPort != overlay.DefaultPort {
		t.Errorf("firewall of a: %+v, want the network with overlay port %d", fw, overlay.DefaultPort)
	}

	// b joins by connecting: the network is materialised from etcd.
	ns := b.fk.AddNetns("web")
	ep, err := b.m.Connect(ConnectSpec{Network: "testnet", Netns: ns})
	if err != nil {
		t.Fatal(err)
	}
	fb, _ := b.m.Snapshot()
	nb := fb.Files["testnet"].Network
	if nb.Cluster == nil || nb.Cluster.VNI != n.Cluster.VNI || nb.Subnet != n.Subnet {
		t.Fatalf("b's copy %+v (cluster %+v), want a's subnet and VNI", nb, nb.Cluster)
	}
	if nb.Gateway == n.Gateway || nb.Cluster.Blocks[0] == n.Cluster.Blocks[0] {
		t.Errorf("a and b share gateway %s or block %s", nb.Gateway, nb.Cluster.Blocks[0])
	}
	if !nb.Cluster.Blocks[0].Contains(ep.IPv4) || ep.IPv4 == nb.Gateway {
		t.Errorf("b's endpoint %s outside its block %s or on its gateway", ep.IPv4, nb.Cluster.Blocks[0])
	}

	// Another subnet under the same name: refused, nothing made on c.
	if _, err := c.m.CreateClusterNetwork(NetworkSpec{Name: "testnet", Subnet: "10.9.1.0/24"}); !errors.Is(err, cluster.ErrNetworkConflict) {
		t.Errorf("c: create testnet with another subnet: %v, want a conflict", err)
	}
	if s, _ := c.m.Snapshot(); len(s.Files) != 0 || len(c.fk.State().Links) != 0 {
		t.Errorf("c after the refused create: %d networks, links %v", len(s.Files), c.fk.State().Links)
	}
	// The same name without a subnet joins.
	if _, err := c.m.CreateClusterNetwork(NetworkSpec{Name: "testnet"}); err != nil {
		t.Errorf("c: join testnet: %v", err)
	}
	if s, _ := c.m.Snapshot(); len(s.Files) != 1 {
		t.Errorf("c: %d networks after the join, want 1", len(s.Files))
	}

	// rm on a is refused while b has endpoints (published by hand here:
	// the daemon's publisher does it in production).
	pub := cluster.NewPublisher(b.m.cl.Member.Client, b.m.cl.Member.Opts.Keys(), "b", b.m.cl.Member.Session, ClusterDesired(b.m.StateDir(), netip.Addr{}), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lease, err := b.m.cl.Member.Client.Grant(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pub.Sync(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	if err := a.m.RemoveClusterNetwork("testnet", false); !errors.Is(err, cluster.ErrNetworkInUse) || !strings.Contains(err.Error(), "b (1)") {
		t.Errorf("a: rm testnet with b's endpoint: %v, want in use by b (1)", err)
	}
	if s, _ := a.m.Snapshot(); s.Files["testnet"] == nil {
		t.Error("a's testnet removed although the cluster refused")
	}
}

// A host cut off from etcd attaches from the block it holds, and only
// fails (changing nothing) when the block is full.
func TestClusterConnectOfflineFromHeldBlock(t *testing.T) {
	srv := etcdtest.Start(t)
	px := etcdtest.NewProxy(t, srv)
	a := newClusterHost(t, px.Endpoint, "a")
	if _, err := a.m.CreateClusterNetwork(NetworkSpec{Name: "testnet", Subnet: "10.9.0.0/24"}); err != nil {
		t.Fatal(err)
	}
	px.Cut()
	seen := map[netip.Addr]bool{}
	// A /26 block: 64 addresses, one the gateway (the block of the
	// subnet's first or last address loses one more).
	var err error
	for i := 0; i < 64; i++ {
		ns := a.fk.AddNetns(strings.Repeat("x", 1) + string(rune('a'+i/26)) + string(rune('a'+i%26)))
		var ep *state.Endpoint
		ep, err = a.m.Connect(ConnectSpec{Network: "testnet", Netns: ns})
		if err != nil {
			break
		}
		if seen[ep.IPv4] {
			t.Fatalf("address %s given twice", ep.IPv4)
		}
		seen[ep.IPv4] = true
	}
	if len(seen) < 62 {
		t.Fatalf("only %d connects worked offline: %v", len(seen), err)
	}
	if err == nil || !strings.Contains(err.Error(), "testnet") {
		t.Fatalf("connect beyond the held block offline: %v, want an error naming the network", err)
	}
	s, _ := a.m.Snapshot()
	if got := len(s.Files["testnet"].Endpoints); got != len(seen) {
		t.Errorf("%d endpoints recorded after the failed connect, want %d", got, len(seen))
	}
	px.Heal()
}

// The overlay input: peers are live hosts (with a host record) carrying
// the network, this host excluded; remotes are the peers' endpoints.
func TestClusterViewOverlayInput(t *testing.T) {
	k := cluster.Keys{Prefix: cluster.DefaultPrefix}
	v := newClusterView(k, "a")
	v.put(k.Host("a"), []byte(`{"vtep":"192.0.2.1"}`))
	v.put(k.Host("b"), []byte(`{"vtep":"192.0.2.2"}`))
	v.put(k.Host("d"), []byte(`{"vtep":"192.0.2.4"}`)) // live, not on the network
	v.put(k.Gateway("a", "n"), []byte(`{"ipv4":"10.0.0.1"}`))
	v.put(k.Gateway("b", "n"), []byte(`{"ipv4":"10.0.0.65"}`))
	v.put(k.Endpoint("a", "n", "e1"), []byte(`{"name":"x","ipv4":"10.0.0.2","mac":"02:42:0a:00:00:02"}`))
	v.put(k.Endpoint("b", "n", "e2"), []byte(`{"name":"y","ipv4":"10.0.0.66","mac":"02:42:0a:00:00:42"}`))
	// c's lease expired: its host record is gone, a stray endpoint is not
	// used.
	v.put(k.Endpoint("c", "n", "e3"), []byte(`{"name":"z","ipv4":"10.0.0.130","mac":"02:42:0a:00:00:82"}`))
	peers, remotes := v.overlayInput("n")
	if len(peers) != 1 || peers[0].Host != "b" || peers[0].VTEP != netip.MustParseAddr("192.0.2.2") {
		t.Errorf("peers %+v, want b only", peers)
	}
	if len(remotes) != 1 || remotes[0].Host != "b" || remotes[0].MAC.String() != "02:42:0a:00:00:42" {
		t.Errorf("remotes %+v, want b's endpoint only", remotes)
	}
	v.del(k.Host("b"))
	if p, r := v.overlayInput("n"); len(p) != 0 || len(r) != 0 {
		t.Errorf("after b's expiry: peers %v remotes %v, want none", p, r)
	}
	v.del(k.Network("n"))
	if !v.removed("n", time.Now()) {
		t.Error("a seen deletion does not mark the network removed")
	}
}

// Blocks gone from etcd (the IPAM lease expired while the agent was down)
// are claimed again by the daemon from the network file.
func TestClusterReclaimBlocks(t *testing.T) {
	srv := etcdtest.Start(t)
	a := newClusterHost(t, srv.Endpoint, "a")
	n, err := a.m.CreateClusterNetwork(NetworkSpec{Name: "testnet", Subnet: "10.9.0.0/24"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli := a.m.cl.Member.Client
	if _, err := cli.Revoke(ctx, a.m.cl.Member.Blocks.LeaseID()); err != nil {
		t.Fatal(err)
	}
	if held, _ := a.m.cl.Member.Blocks.Held(ctx, "testnet"); len(held) != 0 {
		t.Fatalf("blocks %v still held after the lease went", held)
	}
	a.m.reclaimBlocks(ctx)
	if held, _ := a.m.cl.Member.Blocks.Held(ctx, "testnet"); len(held) != 1 || held[0] != n.Cluster.Blocks[0] {
		t.Fatalf("after reclaim etcd holds %v for a, want %v", held, n.Cluster.Blocks)
	}
}

// --mtu on a cluster network holds on every host that joins it; without
// it the overlay MTU is the VTEP device's minus 50.
func TestClusterNetworkMTU(t *testing.T) {
	srv := etcdtest.Start(t)
	a, b := newClusterHost(t, srv.Endpoint, "a"), newClusterHost(t, srv.Endpoint, "b")
	if _, err := a.m.CreateClusterNetwork(NetworkSpec{Name: "jumbo", Subnet: "10.9.0.0/24", MTU: 1400}); err != nil {
		t.Fatal(err)
	}
	ep, err := b.m.Connect(ConnectSpec{Network: "jumbo", Netns: b.fk.AddNetns("web")})
	if err != nil {
		t.Fatal(err)
	}
	s, _ := b.m.Snapshot()
	n := s.Files["jumbo"].Network
	if n.MTU != 1400 || b.fk.State().Links[n.Bridge].MTU != 1400 || b.fk.State().Links[ep.HostVeth].MTU != 1400 {
		t.Errorf("b: network MTU %d, bridge %d, veth %d; want 1400 everywhere", n.MTU, b.fk.State().Links[n.Bridge].MTU, b.fk.State().Links[ep.HostVeth].MTU)
	}
	if _, err := a.m.CreateClusterNetwork(NetworkSpec{Name: "auto", Subnet: "10.9.1.0/24"}); err != nil {
		t.Fatal(err)
	}
	if s, _ := a.m.Snapshot(); s.Files["auto"].Network.MTU != 1450 {
		t.Errorf("auto MTU %d, want 1450 (1500-byte underlay)", s.Files["auto"].Network.MTU)
	}
}
