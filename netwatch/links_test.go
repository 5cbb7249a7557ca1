package netwatch

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/netalias/netalias/internal/testenv"
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
	st := NewStore("state")
	l := NewLinks(st)
	l.Logf = t.Logf
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go l.Run(ctx)

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
	st.Replace("state", []*Network{{Name: "n", Subnet: netip.MustParsePrefix("10.202.6.0/24"), Endpoints: []Endpoint{
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
