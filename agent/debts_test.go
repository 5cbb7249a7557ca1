package agent

import (
	"slices"
	"testing"
)

// Debts from the review of issue 8, each with a test that failed before
// its fix.

// A dual-stack container that leaves the network carrying its default
// routes gets both back through its next non-internal network.
func TestFakeDualStackDefaultRoutesMoveOnDisconnect(t *testing.T) {
	m, fk, _ := newFakeManager(t)
	n1 := mustCreate(t, m, NetworkSpec{Name: "n1", Subnet: "10.201.140.0/24", Subnet6: "fd00:201:140::/64"})
	n2 := mustCreate(t, m, NetworkSpec{Name: "n2", Subnet: "10.201.141.0/24", Subnet6: "fd00:201:141::/64"})
	p := fk.AddNetns("c1")
	mustConnect(t, m, ConnectSpec{Network: "n1", Netns: "c1"})
	ep2 := mustConnect(t, m, ConnectSpec{Network: "n2", Netns: "c1"})
	if r := fk.State().Netns[p]["eth0"].Routes; !slices.Equal(r, []netipAddr{n1.Gateway, n1.Gateway6}) {
		t.Fatalf("routes via n1: %v", r)
	}
	if err := m.Disconnect("n1", "c1"); err != nil {
		t.Fatal(err)
	}
	got := fk.State().Netns[p][ep2.IfName].Routes
	if !slices.Equal(got, []netipAddr{n2.Gateway, n2.Gateway6}) {
		t.Errorf("default routes after leaving n1: %v, want via %s and %s", got, n2.Gateway, n2.Gateway6)
	}
}
