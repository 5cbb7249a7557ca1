package cluster

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/netalias/netalias/internal/etcdtest"
	"github.com/netalias/netalias/state"
)

// The agent's wiring end to end: a state directory, WatchStateDir feeding
// the publisher of a joined member; a network file written shows in etcd,
// its removal withdraws it; Leave deletes everything at once.
func TestMemberPublishesStateDir(t *testing.T) {
	srv := etcdtest.Start(t)
	dir := t.TempDir()
	opts := Options{Endpoints: []string{srv.Endpoint}, Host: "h1", LeaseTTL: 3 * time.Second}
	m, err := Join(opts, StateDirDesired(dir, HostRecord{VTEP: "192.0.2.1"}, nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); m.Run(ctx) }()
	go func() { defer wg.Done(); WatchStateDir(ctx, dir, m.Publisher.Notify, nil) }()
	defer func() { cancel(); wg.Wait() }()

	obs := srv.Client(t)
	rec, _, err := m.Networks.Create(ctx, NetworkSpec{Name: "testnet", Subnet: netip.MustParsePrefix("10.10.0.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	gw, claimed, err := m.Blocks.Allocate(ctx, "testnet", rec, nil, nil)
	if err != nil || gw.String() == "" || !claimed.IsValid() {
		t.Fatalf("gateway: %v %v %v", gw, claimed, err)
	}
	ip, _, err := m.Blocks.Allocate(ctx, "testnet", rec, []netip.Prefix{claimed}, map[netip.Addr]bool{gw: true})
	if err != nil {
		t.Fatal(err)
	}
	epID := state.NewID()
	f := &state.File{Network: state.Network{ID: state.NewID(), Name: "testnet", Subnet: netip.MustParsePrefix(rec.Subnet), Gateway: gw},
		Endpoints: []state.Endpoint{{ID: epID, Name: "c1", IPv4: ip, Netns: "/run/netns/c1"}}}
	if err := state.Write(dir, f); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "endpoint in etcd", 5*time.Second, func() bool {
		_, ok := hostKeys(t, obs, "h1")[testKeys.Endpoint("h1", "testnet", epID)]
		return ok
	})
	f.Endpoints = nil
	if err := state.Write(dir, f); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "endpoint withdrawn", 5*time.Second, func() bool {
		_, ok := hostKeys(t, obs, "h1")[testKeys.Endpoint("h1", "testnet", epID)]
		return !ok
	})
	if err := m.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "host gone after Leave", 5*time.Second, func() bool { return len(hostKeys(t, obs, "h1")) == 0 })
	// The network and the host's block stay (the block has its own lease).
	if held, err := m.Blocks.Held(ctx, "testnet"); err != nil || len(held) != 1 {
		t.Fatalf("blocks after leave: %v %v", held, err)
	}
}
