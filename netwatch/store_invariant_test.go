package netwatch

import (
	"net/netip"
	"testing"
)

// assertDrained checks the store's invariant once every source has
// withdrawn everything: no network, address, client or veth reference is
// left behind, whatever the links did in between.
func assertDrained(t *testing.T, st *Store) {
	t.Helper()
	st.mu.Lock()
	defer st.mu.Unlock()
	for src, m := range st.sources {
		if len(m) != 0 {
			t.Errorf("source %s still holds %d networks", src, len(m))
		}
	}
	if len(st.vethNets) != 0 {
		t.Errorf("veth references left behind: %v", st.vethNets)
	}
	if len(st.contNets) != 0 {
		t.Errorf("container references left behind: %v", st.contNets)
	}
	snap := st.snap.Load()
	if n, e, r := snap.Counts(); n != 0 || e != 0 || r != 0 {
		t.Errorf("snapshot counts %d networks, %d endpoints, %d records; want none", n, e, r)
	}
	if len(snap.addrs) != 0 || len(snap.gateways) != 0 || len(snap.subnets) != 0 {
		t.Errorf("snapshot keeps %d address shards, %d gateways, %d subnets", len(snap.addrs), len(snap.gateways), len(snap.subnets))
	}
}

func vethNet(name string, eps ...Endpoint) *Network {
	return &Network{Name: name, Subnet: netip.MustParsePrefix("10.202.8.0/24"), Gateway: netip.MustParseAddr("10.202.8.1"), Endpoints: eps}
}

func ep(name, ip, veth string) Endpoint {
	return Endpoint{Name: name, IPv4: netip.MustParseAddr(ip), HostVeth: veth, Container: name}
}

func TestStoreDrainsToEmpty(t *testing.T) {
	cases := []struct {
		name string
		run  func(st *Store)
	}{
		{"visible endpoints removed", func(st *Store) {
			st.SyncLinks(set("v1", "v2"))
			st.Update("a", vethNet("n", ep("c1", "10.202.8.2", "v1"), ep("c2", "10.202.8.3", "v2")))
			st.Remove("a", "n")
		}},
		{"hidden endpoint removed", func(st *Store) {
			st.SyncLinks(set())
			st.Update("a", vethNet("n", ep("c1", "10.202.8.2", "v1")))
			st.Remove("a", "n")
		}},
		{"veth vanished before the state", func(st *Store) {
			st.SyncLinks(set("v1"))
			st.Update("a", vethNet("n", ep("c1", "10.202.8.2", "v1")))
			st.LinkRemoved("v1")
			st.Update("a", vethNet("n", ep("c1", "10.202.8.2", "v1"))) // rewritten meanwhile
			st.Replace("a", nil)
		}},
		{"two sources, same veth, links resynced", func(st *Store) {
			st.SyncLinks(set("v1"))
			st.Update("a", vethNet("n", ep("c1", "10.202.8.2", "v1")))
			st.Update("b", vethNet("N", ep("c1", "10.202.8.2", "v1"), ep("c3", "10.202.8.4", "v3")))
			st.SyncLinks(set())
			st.LinkAdded("v3")
			st.Remove("a", "n")
			st.LinkRemoved("v3")
			st.Replace("b", nil)
		}},
		{"links unknown throughout", func(st *Store) {
			st.Update("a", vethNet("n", ep("c1", "10.202.8.2", "v1")))
			st.Update("a", vethNet("m", ep("c1", "10.202.8.9", "v9")))
			st.Replace("a", nil)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			st := NewStore("a", "b")
			c.run(st)
			assertDrained(t, st)
		})
	}
}

func set(names ...string) map[string]struct{} {
	m := map[string]struct{}{}
	for _, n := range names {
		m[n] = struct{}{}
	}
	return m
}
