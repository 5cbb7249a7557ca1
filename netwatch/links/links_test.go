package links

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/netalias/netalias/internal/testenv"
	"github.com/netalias/netalias/netwatch"
)

func rnd() string {
	b := make([]byte, 3)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// A host-side veth that disappears takes its endpoint's records at once;
// an address added to the host makes its queries "the host".
func TestLinksWatch(t *testing.T) {
	testenv.RequireRoot(t)
	st := netwatch.NewStoreWith(netwatch.StoreOptions{Expected: []string{"state"}, LinkExists: Exists})
	l := New(st, netwatch.Printf(t.Logf))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	name := "ndnv" + rnd()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("add veth %s: %v", name, err)
	}
	t.Cleanup(func() {
		if lk, err := netlink.LinkByName(name); err == nil {
			netlink.LinkDel(lk)
		}
	})
	st.Replace("state", []*netwatch.Network{{Name: "n", Subnet: netip.MustParsePrefix("10.202.6.0/24"), Endpoints: []netwatch.Endpoint{
		{Name: "a", IPv4: netip.MustParseAddr("10.202.6.2"), HostVeth: name, Container: "a"},
		{Name: "b", IPv4: netip.MustParseAddr("10.202.6.3"), Container: "b"},
	}}})
	eventually(t, "endpoint a served", func() bool { return addrOf(st, "n", "a") == "10.202.6.2" })

	// A host address (on our veth) counts as the host.
	hostAddr := netip.MustParseAddr("10.202.6.250")
	lk, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(lk, &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP("10.202.6.250").To4(), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "host address known", func() bool { return st.IsHost(hostAddr) })

	if err := netlink.LinkDel(lk); err != nil {
		t.Fatal(err)
	}
	eventually(t, "endpoint a gone with its veth", func() bool { return addrOf(st, "n", "a") == "<no name>" })
	eventually(t, "host address gone", func() bool { return !st.IsHost(hostAddr) })
	if got := addrOf(st, "n", "b"); got != "10.202.6.3" {
		t.Fatalf("endpoint b (no veth) = %s", got)
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 5s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func addrOf(st *netwatch.Store, network, name string) string {
	n := st.Snapshot().Network(network)
	if n == nil {
		return "<no network>"
	}
	rs := n.Lookup(name)
	if rs == nil || len(rs.V4) == 0 {
		return "<no name>"
	}
	return rs.V4[0].String()
}
