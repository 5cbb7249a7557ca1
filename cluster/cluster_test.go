package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netalias/netalias/internal/etcdtest"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var testKeys = Keys{Prefix: DefaultPrefix}

func TestOptionsComplete(t *testing.T) {
	o := Options{Endpoints: []string{"http://127.0.0.1:2379"}, Host: "h1", LeaseTTL: time.Second}
	if err := o.Complete(); err == nil || !strings.Contains(err.Error(), "minimum of 2s") {
		t.Fatalf("TTL 1s: got %v, want an error naming the 2s minimum", err)
	}
	o = Options{Endpoints: []string{"http://127.0.0.1:2379"}, Host: "a/b"}
	if err := o.Complete(); err == nil || !strings.Contains(err.Error(), `"a/b"`) {
		t.Fatalf("host a/b: got %v", err)
	}
	o = Options{Endpoints: []string{"http://127.0.0.1:2379"}, Host: "h1", CertFile: "c.pem"}
	if err := o.Complete(); err == nil {
		t.Fatal("certificate without key accepted")
	}
	o = Options{Endpoints: []string{"http://127.0.0.1:2379"}}
	if err := o.Complete(); err != nil || o.Host == "" || o.LeaseTTL != 10*time.Second || o.Prefix != "/netalias/v1" {
		t.Fatalf("defaults: %v %+v", err, o)
	}
	if _, err := ParseEndpoints("http://a:1, https://b:2"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "a:1", "ftp://x:1", ","} {
		if _, err := ParseEndpoints(bad); err == nil || !strings.Contains(err.Error(), "--etcd") {
			t.Errorf("ParseEndpoints(%q) = %v, want an error naming --etcd", bad, err)
		}
	}
}

func TestKeysParse(t *testing.T) {
	k := testKeys
	for _, c := range []struct {
		key  string
		want Parsed
	}{
		{k.Network("testnet"), Parsed{Kind: KindNetwork, Net: "testnet", Valid: true}},
		{k.VNI(4096), Parsed{Kind: KindVNI, ID: "4096", Valid: true}},
		{k.Host("h1"), Parsed{Kind: KindHost, Host: "h1", Valid: true}},
		{k.Gateway("h1", "n"), Parsed{Kind: KindGateway, Host: "h1", Net: "n", Valid: true}},
		{k.Endpoint("h1", "n", "e1"), Parsed{Kind: KindEndpoint, Host: "h1", Net: "n", ID: "e1", Valid: true}},
		{k.Block("n", "10.0.0.64/26"), Parsed{Kind: KindBlock, Net: "n", ID: "10.0.0.64/26", Valid: true}},
		{k.Endpoint("h1", "n", "e1") + "/x", Parsed{}},
		{"/other/networks/x", Parsed{}},
	} {
		if got := k.Parse(c.key); got != c.want {
			t.Errorf("Parse(%q) = %+v, want %+v", c.key, got, c.want)
		}
	}
}

func TestCreateNetworkRaceOneWins(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	ctx := ctxT(t)
	for i := 0; i < 10; i++ {
		name := fmt.Sprintf("race%d", i)
		subnets := []string{"10.1.0.0/24", "10.2.0.0/24"}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		created := make([]bool, 2)
		for j := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n := NewNetworks(cli, testKeys, fmt.Sprintf("h%d", j))
				_, created[j], errs[j] = n.Create(ctx, NetworkSpec{Name: name, Subnet: netip.MustParsePrefix(subnets[j])})
			}()
		}
		wg.Wait()
		wins := 0
		for j := range 2 {
			switch {
			case errs[j] == nil && created[j]:
				wins++
			case errors.Is(errs[j], ErrNetworkConflict):
			default:
				t.Fatalf("%s: host %d: created=%v err=%v", name, j, created[j], errs[j])
			}
		}
		if wins != 1 {
			t.Fatalf("%s: %d creators won, want exactly 1 (errs %v)", name, wins, errs)
		}
		if err := NewNetworks(cli, testKeys, "h0").Remove(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCreateNetworkChoosesFreeSubnetAndVNI(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	ctx := ctxT(t)
	choose := func(taken []netip.Prefix) (netip.Prefix, error) {
		for i := 0; i < 256; i++ {
			c := netip.MustParsePrefix(fmt.Sprintf("10.99.%d.0/24", i))
			free := true
			for _, p := range taken {
				free = free && !p.Overlaps(c)
			}
			if free {
				return c, nil
			}
		}
		return netip.Prefix{}, errors.New("full")
	}
	const n = 12
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nw := NewNetworks(cli, testKeys, fmt.Sprintf("h%d", i%3))
			if _, _, err := nw.Create(ctx, NetworkSpec{Name: fmt.Sprintf("n%d", i), ChooseSubnet: choose}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	nets, err := NewNetworks(cli, testKeys, "h0").List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	subnets, vnis := map[string]string{}, map[uint32]string{}
	for name, r := range nets {
		if o, dup := subnets[r.Subnet]; dup {
			t.Errorf("subnet %s given to %s and %s", r.Subnet, o, name)
		}
		if o, dup := vnis[r.VNI]; dup {
			t.Errorf("VNI %d given to %s and %s", r.VNI, o, name)
		}
		subnets[r.Subnet], vnis[r.VNI] = name, name
		if r.BlockBits != 26 {
			t.Errorf("%s: block bits %d, want 26", name, r.BlockBits)
		}
	}
	if len(nets) != n {
		t.Fatalf("%d networks, want %d", len(nets), n)
	}
	// Joining: the same name without a subnet returns the cluster's.
	r, created, err := NewNetworks(cli, testKeys, "h2").Create(ctx, NetworkSpec{Name: "n0", ChooseSubnet: choose})
	if err != nil || created || r.Subnet != nets["n0"].Subnet {
		t.Fatalf("join n0: %+v created=%v err=%v", r, created, err)
	}
	// A given subnet overlapping another network is refused, naming it.
	_, _, err = NewNetworks(cli, testKeys, "h2").Create(ctx, NetworkSpec{Name: "other", Subnet: netip.MustParsePrefix(nets["n3"].Subnet)})
	if err == nil || !strings.Contains(err.Error(), "n3") {
		t.Fatalf("overlapping subnet: %v", err)
	}
}

func TestRemoveNetworkRefusesWhileEndpointsRemain(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	ctx := ctxT(t)
	nw := NewNetworks(cli, testKeys, "h1")
	rec, _, err := nw.Create(ctx, NetworkSpec{Name: "testnet", Subnet: netip.MustParsePrefix("10.5.0.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewBlocks(cli, testKeys, "h2", 0).Claim(ctx, "testnet", rec); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, testKeys.Endpoint("h2", "testnet", "e1"), `{"name":"c1"}`); err != nil {
		t.Fatal(err)
	}
	err = nw.Remove(ctx, "testnet")
	if !errors.Is(err, ErrNetworkInUse) || !strings.Contains(err.Error(), "h2 (1)") {
		t.Fatalf("remove with an endpoint on h2: %v", err)
	}
	if _, err := cli.Delete(ctx, testKeys.Endpoint("h2", "testnet", "e1")); err != nil {
		t.Fatal(err)
	}
	before, _ := cli.Get(ctx, "x")
	if err := nw.Remove(ctx, "testnet"); err != nil {
		t.Fatal(err)
	}
	after, _ := cli.Get(ctx, testKeys.Root(), clientv3.WithPrefix())
	if len(after.Kvs) != 0 {
		t.Fatalf("left after remove: %v", after.Kvs)
	}
	if d := after.Header.Revision - before.Header.Revision; d != 1 {
		t.Fatalf("remove took %d revisions, want 1", d)
	}
	if err := nw.Remove(ctx, "testnet"); !errors.Is(err, ErrNoNetwork) {
		t.Fatalf("second remove: %v", err)
	}
}

func TestBlockClaimsNeverOverlap(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	ctx := ctxT(t)
	rec, _, err := NewNetworks(cli, testKeys, "h1").Create(ctx, NetworkSpec{Name: "testnet", Subnet: netip.MustParsePrefix("10.6.0.0/22")})
	if err != nil {
		t.Fatal(err)
	}
	const hosts, per = 3, 100
	got := make([][]netip.Addr, hosts)
	var wg sync.WaitGroup
	for h := range hosts {
		// Each host has its own client, as separate machines would.
		hc := srv.Client(t)
		b := NewBlocks(hc, testKeys, fmt.Sprintf("h%d", h), 0)
		var mu sync.Mutex // the host's state-directory lock
		var held []netip.Prefix
		used := map[netip.Addr]bool{}
		for range per {
			wg.Add(1)
			go func() {
				defer wg.Done()
				mu.Lock()
				defer mu.Unlock()
				a, claimed, err := b.Allocate(ctx, "testnet", rec, held, used)
				if err != nil {
					t.Error(err)
					return
				}
				if claimed.IsValid() {
					held = append(held, claimed)
				}
				used[a] = true
				got[h] = append(got[h], a)
			}()
		}
	}
	wg.Wait()
	seen := map[netip.Addr]int{}
	subnet := netip.MustParsePrefix(rec.Subnet)
	for h, as := range got {
		if len(as) != per {
			t.Errorf("host %d got %d addresses, want %d", h, len(as), per)
		}
		for _, a := range as {
			if o, dup := seen[a]; dup {
				t.Errorf("address %s given to host %d and host %d", a, o, h)
			}
			seen[a] = h
			if !subnet.Contains(a) || a == subnet.Addr() || a == broadcast(subnet) {
				t.Errorf("address %s not a host address of %s", a, subnet)
			}
		}
	}
	// etcd agrees: every block has one owner and each host's addresses lie
	// in its own blocks.
	b := NewBlocks(cli, testKeys, "h0", 0)
	owners, _, err := b.owners(ctx, "testnet")
	if err != nil {
		t.Fatal(err)
	}
	for a, h := range seen {
		ok := false
		for p, o := range owners {
			ok = ok || (p.Contains(a) && o == fmt.Sprintf("h%d", h))
		}
		if !ok {
			t.Errorf("address %s of host %d is in no block it holds", a, h)
		}
	}
	t.Logf("%d blocks claimed for %d addresses", len(owners), len(seen))
}

func TestAllocFromBlocksSkipsNetworkAndBroadcast(t *testing.T) {
	sub := netip.MustParsePrefix("10.7.0.0/24")
	blocks, err := SplitBlocks(sub, 26)
	if err != nil || len(blocks) != 4 || blocks[3].String() != "10.7.0.192/26" {
		t.Fatalf("SplitBlocks: %v %v", blocks, err)
	}
	a, ok := AllocFromBlocks(sub, blocks[:1], nil)
	if !ok || a.String() != "10.7.0.1" {
		t.Fatalf("first of first block: %v", a)
	}
	a, ok = AllocFromBlocks(sub, blocks[1:2], nil)
	if !ok || a.String() != "10.7.0.64" {
		t.Fatalf("first of second block: %v", a)
	}
	used := map[netip.Addr]bool{}
	for x := netip.MustParseAddr("10.7.0.192"); x.String() != "10.7.0.255"; x = x.Next() {
		used[x] = true
	}
	if a, ok := AllocFromBlocks(sub, blocks[3:], used); ok {
		t.Fatalf("allocated broadcast-only block: %v", a)
	}
	b6, err := SplitBlocks(netip.MustParsePrefix("fd00:1::/64"), 80)
	if err != nil || len(b6) != 65536 || b6[1].String() != "fd00:1:0:0:1::/80" {
		t.Fatalf("IPv6 blocks: %d %v", len(b6), err)
	}
}

// The CLI and the daemon of one host claim under one IPAM lease; blocks
// lost with an expired lease are claimed back, and one taken meanwhile by
// another host is reported as a conflict.
func TestBlocksSharedLeaseReclaimAndRelease(t *testing.T) {
	srv := etcdtest.Start(t)
	cli := srv.Client(t)
	ctx := ctxT(t)
	rec, _, err := NewNetworks(cli, testKeys, "h1").Create(ctx, NetworkSpec{Name: "testnet", Subnet: netip.MustParsePrefix("10.11.0.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	cliSide, daemon := NewBlocks(srv.Client(t), testKeys, "h1", 0), NewBlocks(cli, testKeys, "h1", 0)
	a, err := cliSide.Claim(ctx, "testnet", rec)
	if err != nil {
		t.Fatal(err)
	}
	b, err := daemon.Claim(ctx, "testnet", rec)
	if err != nil {
		t.Fatal(err)
	}
	leases := map[int64]bool{}
	for _, p := range []netip.Prefix{a, b} {
		r, err := cli.Get(ctx, testKeys.Block("testnet", p.String()))
		if err != nil || len(r.Kvs) != 1 {
			t.Fatalf("block %s: %v", p, err)
		}
		leases[r.Kvs[0].Lease] = true
	}
	if len(leases) != 1 || !leases[int64(daemon.LeaseID())] {
		t.Fatalf("blocks under leases %v, want the one IPAM lease %x", leases, int64(daemon.LeaseID()))
	}
	// The lease expires (daemon down too long): both blocks go.
	if _, err := cli.Revoke(ctx, daemon.LeaseID()); err != nil {
		t.Fatal(err)
	}
	// Meanwhile h2 takes one of them.
	h2 := NewBlocks(cli, testKeys, "h2", 0)
	if _, err := h2.Reclaim(ctx, "testnet", []netip.Prefix{b}); err != nil {
		t.Fatal(err)
	}
	conflicts, err := daemon.Reclaim(ctx, "testnet", []netip.Prefix{a, b})
	if err != nil || len(conflicts) != 1 || conflicts[0] != b {
		t.Fatalf("reclaim: conflicts %v, err %v; want [%s]", conflicts, err, b)
	}
	held, _ := daemon.Held(ctx, "testnet")
	if len(held) != 1 || held[0] != a {
		t.Fatalf("held after reclaim: %v, want [%s]", held, a)
	}
	// Release: only the holder's release counts.
	if err := h2.Release(ctx, "testnet", a); err != nil {
		t.Fatal(err)
	}
	if held, _ := daemon.Held(ctx, "testnet"); len(held) != 1 {
		t.Fatal("h2 released h1's block")
	}
	if err := daemon.Release(ctx, "testnet", a); err != nil {
		t.Fatal(err)
	}
	if held, _ := daemon.Held(ctx, "testnet"); len(held) != 0 {
		t.Fatalf("held after release: %v", held)
	}
	// Claims on a removed network fail cleanly.
	if _, err := NewBlocks(cli, testKeys, "h1", 0).Claim(ctx, "gone", NetworkRecord{Subnet: "10.12.0.0/24", BlockBits: 26}); !errors.Is(err, ErrNoNetwork) {
		t.Fatalf("claim on a missing network: %v", err)
	}
}
