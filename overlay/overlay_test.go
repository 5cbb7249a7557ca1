package overlay

import (
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

var (
	local = netip.MustParseAddr("10.0.0.1")
	vt2   = netip.MustParseAddr("10.0.0.2")
	vt3   = netip.MustParseAddr("10.0.0.3")
)

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

func ent(m string, v netip.Addr) entry { return entry{MAC: m, VTEP: v} }

func keys(m map[entry]bool) []string {
	var out []string
	for e := range m {
		out = append(out, e.String())
	}
	slices.Sort(out)
	return out
}

func TestMTUFor(t *testing.T) {
	for _, c := range []struct {
		under int
		v6    bool
		want  int
	}{{1500, false, 1450}, {1400, false, 1350}, {9001, false, 8951}, {1500, true, 1430}} {
		if got := MTUFor(c.under, c.v6); got != c.want {
			t.Errorf("MTUFor(%d, v6=%v) = %d, want %d", c.under, c.v6, got, c.want)
		}
	}
}

func TestDeviceName(t *testing.T) {
	if got := DeviceName(0xffffff); got != "nvxffffff" || len(got) > 15 {
		t.Errorf("DeviceName(max VNI) = %q", got)
	}
	if got := DeviceName(256); got != "nvx100" {
		t.Errorf("DeviceName(256) = %q, want nvx100", got)
	}
}

func TestDesired(t *testing.T) {
	peers := []Peer{{"h1", local}, {"h2", vt2}, {"h3", vt3}}
	cases := []struct {
		name    string
		peers   []Peer
		remotes []Remote
		want    []string
		errs    []string
	}{
		{name: "no peers", want: nil},
		{name: "self is no peer", peers: []Peer{{"h1", local}}, remotes: []Remote{{Host: "h1", MAC: mac("02:42:0a:00:00:05")}}},
		{
			name: "flood per peer, entry per remote", peers: peers,
			remotes: []Remote{{Host: "h2", MAC: mac("02:42:0a:00:00:02")}, {Host: "h3", MAC: mac("02:42:0a:00:00:03")}, {Host: "h1", MAC: mac("02:42:0a:00:00:01")}},
			want:    []string{"00:00:00:00:00:00 dst 10.0.0.2", "00:00:00:00:00:00 dst 10.0.0.3", "02:42:0a:00:00:02 dst 10.0.0.2", "02:42:0a:00:00:03 dst 10.0.0.3"},
		},
		{
			name: "departed host's endpoints left out", peers: []Peer{{"h2", vt2}},
			remotes: []Remote{{Host: "h2", MAC: mac("02:42:0a:00:00:02")}, {Host: "h3", MAC: mac("02:42:0a:00:00:03")}},
			want:    []string{"00:00:00:00:00:00 dst 10.0.0.2", "02:42:0a:00:00:02 dst 10.0.0.2"},
		},
		{
			name: "same record twice is fine", peers: []Peer{{"h2", vt2}},
			remotes: []Remote{{Host: "h2", MAC: mac("02:42:0a:00:00:02")}, {Host: "h2", MAC: mac("02:42:0a:00:00:02")}},
			want:    []string{"00:00:00:00:00:00 dst 10.0.0.2", "02:42:0a:00:00:02 dst 10.0.0.2"},
		},
		{
			name: "MAC on two hosts is left out and reported", peers: peers,
			remotes: []Remote{{Host: "h3", MAC: mac("02:42:0a:00:00:09"), IPv4: netip.MustParseAddr("10.9.0.9")}, {Host: "h2", MAC: mac("02:42:0a:00:00:09"), IPv4: netip.MustParseAddr("10.9.0.9")}, {Host: "h2", MAC: mac("02:42:0a:00:00:02")}},
			want:    []string{"00:00:00:00:00:00 dst 10.0.0.2", "00:00:00:00:00:00 dst 10.0.0.3", "02:42:0a:00:00:02 dst 10.0.0.2"},
			errs:    []string{"MAC 02:42:0a:00:00:09 is claimed by endpoint 10.9.0.9 on host h2 and by endpoint 10.9.0.9 on host h3"},
		},
		{
			name: "bad MACs reported", peers: []Peer{{"h2", vt2}},
			remotes: []Remote{{Host: "h2", MAC: mac("ff:ff:ff:ff:ff:ff")}, {Host: "h2", MAC: mac("00:00:00:00:00:00")}, {Host: "h2"}},
			want:    []string{"00:00:00:00:00:00 dst 10.0.0.2"},
			errs:    []string{"is not a unicast", "is not a unicast", "is not a unicast"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, errs := desired(local, c.peers, c.remotes)
			if k := keys(got); !slices.Equal(k, c.want) {
				t.Errorf("entries = %q, want %q", k, c.want)
			}
			if len(errs) != len(c.errs) {
				t.Fatalf("errors = %v, want %d", errs, len(c.errs))
			}
			for i, e := range errs {
				if !strings.Contains(e.Error(), c.errs[i]) {
					t.Errorf("error %q does not contain %q", e, c.errs[i])
				}
			}
		})
	}
}

func self(m string, v netip.Addr) netlink.Neigh {
	return netlink.Neigh{LinkIndex: 7, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT, HardwareAddr: mac(m), IP: v.AsSlice()}
}

func TestActualSkipsBridgeEntries(t *testing.T) {
	bridgeOwn := netlink.Neigh{LinkIndex: 7, Family: unix.AF_BRIDGE, Flags: netlink.NTF_MASTER, State: netlink.NUD_PERMANENT, HardwareAddr: mac("aa:bb:cc:00:00:01")}
	learnt := netlink.Neigh{LinkIndex: 7, Family: unix.AF_BRIDGE, MasterIndex: 3, HardwareAddr: mac("02:42:0a:00:00:02")}
	other := self("02:42:0a:00:00:05", vt2)
	other.LinkIndex = 8
	got := actual([]netlink.Neigh{bridgeOwn, learnt, other, self(floodMAC, vt2)}, 7)
	if len(got) != 1 || got[0].entry != ent(floodMAC, vt2) || !got[0].ok {
		t.Fatalf("actual = %+v, want only the flood entry to 10.0.0.2", got)
	}
}

func TestDiff(t *testing.T) {
	want := map[entry]bool{ent(floodMAC, vt2): true, ent("02:42:0a:00:00:02", vt2): true}
	stale := self("02:42:0a:00:00:02", vt3) // MAC moved from h3 to h2
	reach := self(floodMAC, vt2)
	reach.State = netlink.NUD_REACHABLE // not what we write: replaced
	vni := self("02:42:0a:00:00:02", vt2)
	vni.VNI = 99 // another VNI: replaced
	cases := []struct {
		name     string
		have     []netlink.Neigh
		del, add []string
	}{
		{name: "empty table", add: []string{"00:00:00:00:00:00 dst 10.0.0.2", "02:42:0a:00:00:02 dst 10.0.0.2"}},
		{name: "in sync", have: []netlink.Neigh{self(floodMAC, vt2), self("02:42:0a:00:00:02", vt2)}},
		{
			name: "dead host's flood and stale MAC deleted",
			have: []netlink.Neigh{self(floodMAC, vt2), self(floodMAC, vt3), self("02:42:0a:00:00:02", vt2), self("02:42:0a:00:00:03", vt3)},
			del:  []string{"00:00:00:00:00:00 dst 10.0.0.3", "02:42:0a:00:00:03 dst 10.0.0.3"},
		},
		{
			name: "moved MAC deleted then added",
			have: []netlink.Neigh{self(floodMAC, vt2), stale},
			del:  []string{"02:42:0a:00:00:02 dst 10.0.0.3"}, add: []string{"02:42:0a:00:00:02 dst 10.0.0.2"},
		},
		{
			name: "wrong forms replaced",
			have: []netlink.Neigh{reach, vni},
			del:  []string{"00:00:00:00:00:00 dst 10.0.0.2", "02:42:0a:00:00:02 dst 10.0.0.2"},
			add:  []string{"00:00:00:00:00:00 dst 10.0.0.2", "02:42:0a:00:00:02 dst 10.0.0.2"},
		},
		{
			name: "duplicate kept once",
			have: []netlink.Neigh{self(floodMAC, vt2), self(floodMAC, vt2), self("02:42:0a:00:00:02", vt2)},
			del:  []string{"00:00:00:00:00:00 dst 10.0.0.2"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := diff(want, actual(c.have, 7))
			var del, add []string
			for _, d := range p.Del {
				del = append(del, d.String())
				if d.del.Flags != netlink.NTF_SELF || d.del.Family != unix.AF_BRIDGE || d.del.LinkIndex != 7 {
					t.Errorf("delete message for %s = %+v, want AF_BRIDGE NTF_SELF on 7", d, d.del)
				}
			}
			for _, a := range p.Add {
				add = append(add, a.String())
			}
			slices.Sort(del)
			if !slices.Equal(del, c.del) || !slices.Equal(add, c.add) {
				t.Errorf("diff: del %q add %q, want del %q add %q", del, add, c.del, c.add)
			}
		})
	}
}

func spec() NetworkSpec {
	return NetworkSpec{Name: "testnet", Bridge: "na-test", VNI: 0x100, Local: local}
}

func TestEnsureFromScratch(t *testing.T) {
	k := newHost()
	o := New(k)
	peers := []Peer{{"h1", local}, {"h2", vt2}, {"h3", vt3}}
	remotes := []Remote{{Host: "h2", MAC: mac("02:42:0a:00:00:02")}, {Host: "h3", MAC: mac("02:42:0a:00:00:03")}}
	if err := o.Ensure(spec(), peers, remotes); err != nil {
		t.Fatal(err)
	}
	l, err := k.LinkByName("nvx100")
	if err != nil {
		t.Fatalf("no VXLAN device: %v", err)
	}
	vx := l.(*netlink.Vxlan)
	br, _ := k.LinkByName("na-test")
	if vx.VxlanId != 0x100 || vx.Port != 4789 || vx.Learning || !net.IP(vx.SrcAddr).Equal(local.AsSlice()) || vx.VtepDevIndex != 1 {
		t.Errorf("device = VNI %d port %d learning %v src %v link %d, want VNI 256 port 4789 no learning src 10.0.0.1 link 1", vx.VxlanId, vx.Port, vx.Learning, vx.SrcAddr, vx.VtepDevIndex)
	}
	if vx.MTU != 1450 || br.Attrs().MTU != 1450 {
		t.Errorf("MTU: device %d bridge %d, want 1450 (1500 - 50)", vx.MTU, br.Attrs().MTU)
	}
	if vx.MasterIndex != br.Attrs().Index || vx.Flags&net.FlagUp == 0 || vx.Alias != "netalias-overlay:testnet" {
		t.Errorf("device master %d up %v alias %q", vx.MasterIndex, vx.Flags&net.FlagUp != 0, vx.Alias)
	}
	got := table(k, vx.Index)
	want := []string{"00:00:00:00:00:00 dst 10.0.0.2", "00:00:00:00:00:00 dst 10.0.0.3", "02:42:0a:00:00:02 dst 10.0.0.2", "02:42:0a:00:00:03 dst 10.0.0.3"}
	if !slices.Equal(got, want) {
		t.Errorf("table = %q, want %q", got, want)
	}
	if m, err := o.MTU(spec()); err != nil || m != 1450 {
		t.Errorf("MTU(spec) = %d, %v; want 1450", m, err)
	}

	// Idempotent: a second identical Ensure writes nothing.
	k.writes = nil
	if err := o.Ensure(spec(), peers, remotes); err != nil {
		t.Fatal(err)
	}
	if len(k.writes) != 0 {
		t.Errorf("second Ensure wrote %q, want nothing", k.writes)
	}

	// h3 departs; a stale entry added by hand goes too.
	k.neighs = append(k.neighs, self("02:42:0a:00:00:63", netip.MustParseAddr("10.0.0.99")))
	k.neighs[len(k.neighs)-1].LinkIndex = vx.Index
	if err := o.Ensure(spec(), peers[:2], remotes); err != nil {
		t.Fatal(err)
	}
	if got, want := table(k, vx.Index), []string{"00:00:00:00:00:00 dst 10.0.0.2", "02:42:0a:00:00:02 dst 10.0.0.2"}; !slices.Equal(got, want) {
		t.Errorf("after h3 left: table = %q, want %q", got, want)
	}

	if nets, _ := o.Networks(); !slices.Equal(nets, []string{"testnet"}) {
		t.Errorf("Networks() = %q", nets)
	}
	if err := o.Remove("testnet"); err != nil {
		t.Fatal(err)
	}
	if _, err := k.LinkByName("nvx100"); err == nil {
		t.Error("Remove left nvx100")
	}
	if err := o.Remove("testnet"); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

func table(k *fakeKernel, dev int) []string {
	ns, _ := k.NeighList(dev, unix.AF_BRIDGE)
	var out []string
	for _, c := range actual(ns, dev) {
		out = append(out, c.String())
	}
	slices.Sort(out)
	return out
}

func TestEnsureRecreatesChangedDevice(t *testing.T) {
	k := newHost()
	o := New(k)
	if err := o.Ensure(spec(), []Peer{{"h2", vt2}}, nil); err != nil {
		t.Fatal(err)
	}
	old, _ := k.LinkByName("nvx100")
	s := spec()
	s.Port = 8472
	s.MTU = 1400
	if err := o.Ensure(s, []Peer{{"h2", vt2}}, nil); err != nil {
		t.Fatal(err)
	}
	l, _ := k.LinkByName("nvx100")
	if l.Attrs().Index == old.Attrs().Index || l.(*netlink.Vxlan).Port != 8472 || l.Attrs().MTU != 1400 {
		t.Errorf("device not re-created with port 8472 and MTU 1400: index %d→%d port %d mtu %d", old.Attrs().Index, l.Attrs().Index, l.(*netlink.Vxlan).Port, l.Attrs().MTU)
	}
	if got := table(k, l.Attrs().Index); !slices.Equal(got, []string{"00:00:00:00:00:00 dst 10.0.0.2"}) {
		t.Errorf("table after re-create = %q", got)
	}
	// An MTU change alone is applied in place.
	s.MTU = 1300
	if err := o.Ensure(s, []Peer{{"h2", vt2}}, nil); err != nil {
		t.Fatal(err)
	}
	if l2, _ := k.LinkByName("nvx100"); l2.Attrs().Index != l.Attrs().Index || l2.Attrs().MTU != 1300 {
		t.Errorf("MTU change re-created the device or was not applied")
	}
}

func TestEnsureRefusesForeignDevice(t *testing.T) {
	k := newHost()
	la := netlink.NewLinkAttrs()
	la.Name = "nvx100"
	k.add(&netlink.Vxlan{LinkAttrs: la, VxlanId: 0x100})
	err := New(k).Ensure(spec(), nil, nil)
	if err == nil || !strings.Contains(err.Error(), "nvx100") || !strings.Contains(err.Error(), "did not make") {
		t.Fatalf("Ensure over a foreign nvx100: %v", err)
	}
	if len(k.writes) != 0 {
		t.Errorf("Ensure touched the kernel: %q", k.writes)
	}
}

func TestEnsureBadInputChangesNothing(t *testing.T) {
	v6 := netip.MustParseAddr("fd00::2")
	cases := []struct {
		name  string
		mod   func(*NetworkSpec)
		peers []Peer
		want  string
	}{
		{"no name", func(s *NetworkSpec) { s.Name = "" }, nil, "network name is empty"},
		{"no bridge", func(s *NetworkSpec) { s.Bridge = "" }, nil, "bridge name is empty"},
		{"VNI 0", func(s *NetworkSpec) { s.VNI = 0 }, nil, "VNI 0 out of range"},
		{"VNI too big", func(s *NetworkSpec) { s.VNI = 1 << 24 }, nil, "VNI 16777216 out of range"},
		{"port", func(s *NetworkSpec) { s.Port = 70000 }, nil, "port 70000"},
		{"MTU", func(s *NetworkSpec) { s.MTU = 20 }, nil, "MTU 20"},
		{"no local", func(s *NetworkSpec) { s.Local = netip.Addr{} }, nil, "no local VTEP"},
		{"missing bridge", func(s *NetworkSpec) { s.Bridge = "na-gone" }, nil, "bridge na-gone"},
		{"not a bridge", func(s *NetworkSpec) { s.Bridge = "eth0" }, nil, "eth0 is a device, not a bridge"},
		{"local not ours", func(s *NetworkSpec) { s.Local = vt3 }, nil, "local VTEP 10.0.0.3 is not an address of this host"},
		{"missing underlay", func(s *NetworkSpec) { s.Underlay = "eth9" }, nil, "underlay device eth9"},
		{"peer without VTEP", nil, []Peer{{Host: "h2"}}, `peer "h2" has no VTEP`},
		{"peer of other family", nil, []Peer{{"h2", v6}}, `peer "h2" VTEP fd00::2 is not of the local VTEP's family`},
		{"peer twice", nil, []Peer{{"h2", vt2}, {"h2", vt3}}, `peer "h2" listed with VTEPs 10.0.0.2 and 10.0.0.3`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k := newHost()
			s := spec()
			if c.mod != nil {
				c.mod(&s)
			}
			err := New(k).Ensure(s, c.peers, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Ensure: %v, want an error containing %q", err, c.want)
			}
			if len(k.writes) != 0 {
				t.Errorf("bad input changed the kernel: %q", k.writes)
			}
		})
	}
}

func TestEnsureReportsConflictsAfterApplying(t *testing.T) {
	k := newHost()
	peers := []Peer{{"h2", vt2}, {"h3", vt3}}
	remotes := []Remote{{Host: "h2", MAC: mac("02:42:0a:00:00:09")}, {Host: "h3", MAC: mac("02:42:0a:00:00:09")}, {Host: "h3", MAC: mac("02:42:0a:00:00:03")}}
	err := New(k).Ensure(spec(), peers, remotes)
	if err == nil || !strings.Contains(err.Error(), "network testnet") || !strings.Contains(err.Error(), "02:42:0a:00:00:09") {
		t.Fatalf("Ensure with a MAC on two hosts: %v", err)
	}
	l, _ := k.LinkByName("nvx100")
	want := []string{"00:00:00:00:00:00 dst 10.0.0.2", "00:00:00:00:00:00 dst 10.0.0.3", "02:42:0a:00:00:03 dst 10.0.0.3"}
	if got := table(k, l.Attrs().Index); !slices.Equal(got, want) {
		t.Errorf("table = %q, want %q", got, want)
	}
}
