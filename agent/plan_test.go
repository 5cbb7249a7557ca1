package agent

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/netalias/netalias/agent/ipam"
	"github.com/netalias/netalias/agent/netns"
	"github.com/netalias/netalias/state"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

type netipAddr = netip.Addr

// checkErr fails t unless err matches want ("" for none, else a substring).
func checkErr(t *testing.T, err error, want string) bool {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want != "" && err == nil:
		t.Fatalf("no error, want one containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Fatalf("error %q, want it to contain %q", err, want)
	}
	return err == nil
}

func TestEndpointName(t *testing.T) {
	for _, tc := range []struct {
		name    string
		spec    ConnectSpec
		ref     netns.Ref
		want    string
		wantErr string
	}{
		{"given", ConnectSpec{Name: "web"}, netns.Ref{Path: "/run/netns/c1", Name: "c1"}, "web", ""},
		{"namespace name", ConnectSpec{Netns: "c1"}, netns.Ref{Path: "/run/netns/c1", Name: "c1"}, "c1", ""},
		{"pid", ConnectSpec{Netns: "4242"}, netns.Ref{Path: "/proc/4242/ns/net"}, "pid-4242", ""},
		{"path", ConnectSpec{Netns: "/var/run/docker/netns/abc"}, netns.Ref{Path: "/var/run/docker/netns/abc"}, "abc", ""},
		{"bad given", ConnectSpec{Name: "no_underscores"}, netns.Ref{Path: "/run/netns/c1", Name: "c1"}, "", "endpoint name"},
		{"bad derived", ConnectSpec{Netns: "/x/a.b"}, netns.Ref{Path: "/x/a.b"}, "", "give one with --name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := endpointName(tc.spec, tc.ref)
			if checkErr(t, err, tc.wantErr) && got != tc.want {
				t.Errorf("name %q, want %q", got, tc.want)
			}
		})
	}
}

func TestCheckConnectSpec(t *testing.T) {
	for _, tc := range []struct {
		name     string
		spec     ConnectSpec
		ip4, ip6 string
		wantErr  string
	}{
		{"empty", ConnectSpec{}, "", "", ""},
		{"addresses", ConnectSpec{IP: "10.0.0.5", IP6: "fd00::5"}, "10.0.0.5", "fd00::5", ""},
		{"ip not v4", ConnectSpec{IP: "fd00::5"}, "", "", "invalid --ip"},
		{"ip garbage", ConnectSpec{IP: "10.0.0"}, "", "", "invalid --ip"},
		{"ip6 not v6", ConnectSpec{IP6: "10.0.0.5"}, "", "", "invalid --ip6"},
		{"ip6 mapped v4", ConnectSpec{IP6: "::ffff:10.0.0.5"}, "", "", "invalid --ip6"},
		{"bad alias", ConnectSpec{Aliases: []string{"a..b"}}, "", "", "alias"},
		{"dotted alias ok", ConnectSpec{Aliases: []string{"db.internal"}}, "", "", ""},
		{"bad link target", ConnectSpec{Links: []state.Link{{Target: "a.b", Alias: "x"}}}, "", "", "link target"},
		{"bad link alias", ConnectSpec{Links: []state.Link{{Target: "db", Alias: "-x"}}}, "", "", "link alias"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := checkConnectSpec(tc.spec)
			if !checkErr(t, err, tc.wantErr) {
				return
			}
			if tc.ip4 != "" && r.ip4 != addr(tc.ip4) || tc.ip4 == "" && r.ip4.IsValid() {
				t.Errorf("ip4 %v, want %q", r.ip4, tc.ip4)
			}
			if tc.ip6 != "" && r.ip6 != addr(tc.ip6) || tc.ip6 == "" && r.ip6.IsValid() {
				t.Errorf("ip6 %v, want %q", r.ip6, tc.ip6)
			}
		})
	}
}

func testFile() *state.File {
	return &state.File{Network: state.Network{Name: "n", Subnet: pfx("10.9.0.0/29"), Gateway: addr("10.9.0.1"),
		Subnet6: pfx("fd00:9::/64"), Gateway6: addr("fd00:9::1")},
		Endpoints: []state.Endpoint{{Name: "a", IPv4: addr("10.9.0.2"), IPv6: addr("fd00:9::2"), Container: "/run/netns/a", Netns: "/run/netns/a"}},
		Leases:    map[string]state.Lease{"a": {IPv4: addr("10.9.0.2")}, "gone": {IPv4: addr("10.9.0.3"), IPv6: addr("fd00:9::3")}, "me": {IPv4: addr("10.9.0.5"), IPv6: addr("fd00:9::5")}},
	}
}

// testFileFull is testFile with every address but gone's lease in use.
func testFileFull() *state.File {
	f := testFile()
	f.Endpoints = append(f.Endpoints, state.Endpoint{Name: "b", IPv4: addr("10.9.0.4")}, state.Endpoint{Name: "me", IPv4: addr("10.9.0.5")},
		state.Endpoint{Name: "d", IPv4: addr("10.9.0.6")})
	return f
}

func TestAllocAddrs(t *testing.T) {
	v4only := testFile()
	v4only.Network.Subnet6, v4only.Network.Gateway6 = netip.Prefix{}, netip.Addr{}
	full := testFile()
	full.Endpoints = append(full.Endpoints,
		state.Endpoint{Name: "b", IPv4: addr("10.9.0.4")}, state.Endpoint{Name: "c", IPv4: addr("10.9.0.5")},
		state.Endpoint{Name: "d", IPv4: addr("10.9.0.6")}, state.Endpoint{Name: "e", IPv4: addr("10.9.0.3")})
	for _, tc := range []struct {
		name     string
		f        *state.File
		who      string
		req      connectRequest
		ip4, ip6 string
		wantErr  string
	}{
		{"first free, skipping leases of others", testFile(), "new", connectRequest{}, "10.9.0.4", "fd00:9::4", ""},
		{"sticky lease", testFile(), "me", connectRequest{}, "10.9.0.5", "fd00:9::5", ""},
		{"lease of a gone name is kept free", testFile(), "x", connectRequest{}, "10.9.0.4", "fd00:9::4", ""},
		{"own lease comes back", testFile(), "gone", connectRequest{}, "10.9.0.3", "fd00:9::3", ""},
		{"v4-only network", v4only, "new", connectRequest{}, "10.9.0.4", "", ""},
		{"explicit", testFile(), "new", connectRequest{ip4: addr("10.9.0.6"), ip6: addr("fd00:9::99")}, "10.9.0.6", "fd00:9::99", ""},
		{"explicit outside", testFile(), "new", connectRequest{ip4: addr("10.9.1.6")}, "", "", "--ip"},
		{"explicit gateway", testFile(), "new", connectRequest{ip4: addr("10.9.0.1")}, "", "", "gateway"},
		{"explicit broadcast", testFile(), "new", connectRequest{ip4: addr("10.9.0.7")}, "", "", "--ip"},
		{"explicit in use", testFile(), "new", connectRequest{ip4: addr("10.9.0.2")}, "", "", "already in use"},
		{"explicit v6 in use", testFile(), "new", connectRequest{ip6: addr("fd00:9::2")}, "", "", "already in use"},
		{"explicit v6 gateway", testFile(), "new", connectRequest{ip6: addr("fd00:9::1")}, "", "", "gateway"},
		{"explicit v6 on v4-only", v4only, "new", connectRequest{ip6: addr("fd00:9::9")}, "", "", "no IPv6 subnet"},
		{"explicit v6 outside", testFile(), "new", connectRequest{ip6: addr("fd00:8::9")}, "", "", "--ip6"},
		{"full", full, "new", connectRequest{}, "", "", `network "n"`},
		{"full but for a remembered address", testFileFull(), "new", connectRequest{}, "10.9.0.3", "fd00:9::4", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ip4, ip6, err := allocAddrs(tc.f, tc.who, tc.req)
			if !checkErr(t, err, tc.wantErr) {
				return
			}
			if ip4.String() != tc.ip4 {
				t.Errorf("ip4 %v, want %s", ip4, tc.ip4)
			}
			if got := addrString(ip6); got != tc.ip6 {
				t.Errorf("ip6 %q, want %q", got, tc.ip6)
			}
		})
	}
}

func TestCheckFree(t *testing.T) {
	same := func(a, b string) bool { return a == b || a == "/run/netns/a" && b == "/proc/7/ns/net" }
	for _, tc := range []struct {
		name, container, who, wantErr string
	}{
		{"free", "/run/netns/b", "b", ""},
		{"same container", "/run/netns/a", "b", "already connected"},
		{"same namespace by another path", "/proc/7/ns/net", "b", "already connected"},
		{"name taken", "/run/netns/b", "a", "already in use"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkErr(t, checkFree(testFile(), tc.container, tc.who, same), tc.wantErr)
		})
	}
}

func TestWantDefaultRoute(t *testing.T) {
	ext := &state.File{Network: state.Network{Name: "ext"}, Endpoints: []state.Endpoint{{Container: "c"}}}
	in := &state.File{Network: state.Network{Name: "in", Internal: true}, Endpoints: []state.Endpoint{{Container: "d"}}}
	for _, tc := range []struct {
		name      string
		n         state.Network
		container string
		want      bool
	}{
		{"first network", state.Network{Name: "x"}, "e", true},
		{"internal network", state.Network{Name: "x", Internal: true}, "e", false},
		{"already on a non-internal network", state.Network{Name: "x"}, "c", false},
		{"only on an internal network", state.Network{Name: "x"}, "d", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := wantDefaultRoute(map[string]*state.File{"ext": ext, "in": in}, tc.n, tc.container); got != tc.want {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestPlanVeth(t *testing.T) {
	n := testFile().Network
	n.Bridge, n.MTU = "na-0123456789ab", 1400
	id := "fedcba9876543210" + strings.Repeat("0", 48)
	for _, tc := range []struct {
		name           string
		ip6            netip.Addr
		route          bool
		addr6, gw, gw6 string
	}{
		{"dual stack with routes", addr("fd00:9::4"), true, "fd00:9::4/64", "10.9.0.1", "fd00:9::1"},
		{"dual stack without routes", addr("fd00:9::4"), false, "fd00:9::4/64", "invalid IP", "invalid IP"},
		{"v4 only with route", netip.Addr{}, true, "invalid Prefix", "10.9.0.1", "invalid IP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := planVeth(n, id, "/run/netns/c", addr("10.9.0.4"), tc.ip6, tc.route)
			if v.HostName != "navfedcba987654" || v.Bridge != n.Bridge || v.MTU != 1400 || v.Netns != "/run/netns/c" || v.IfName != "" {
				t.Errorf("veth %+v", v)
			}
			if v.MAC.String() != "02:42:0a:09:00:04" || v.Addr.String() != "10.9.0.4/29" {
				t.Errorf("mac %s addr %s", v.MAC, v.Addr)
			}
			if v.Addr6.String() != tc.addr6 || v.Gateway.String() != tc.gw || v.Gateway6.String() != tc.gw6 {
				t.Errorf("addr6 %s gw %s gw6 %s, want %s %s %s", v.Addr6, v.Gateway, v.Gateway6, tc.addr6, tc.gw, tc.gw6)
			}
		})
	}
}

func TestNames(t *testing.T) {
	id := state.NewID()
	for _, tc := range []struct{ name, got, prefix string }{
		{"bridge", bridgeName(id), "na-"},
		{"veth", vethName(id), "nav"},
		{"park", parkName(id), "nax"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.prefix+id[:12] || len(tc.got) > 15 {
				t.Errorf("%s name %q from id %s", tc.name, tc.got, id)
			}
		})
	}
}

func TestFindEndpoint(t *testing.T) {
	f := testFile()
	f.Endpoints = append(f.Endpoints, state.Endpoint{Name: "b", Container: "/run/netns/b", Netns: "/proc/9/ns/net"})
	for _, tc := range []struct {
		name     string
		ref      netns.Ref
		resolved bool
		arg      string
		want     int
	}{
		{"by container", netns.Ref{Path: "/run/netns/a"}, true, "a", 0},
		{"by namespace path", netns.Ref{}, false, "/proc/9/ns/net", 1},
		{"by name once the namespace is gone", netns.Ref{}, false, "b", 1},
		{"not by name while it resolves", netns.Ref{Path: "/run/netns/zz"}, true, "b", -1},
		{"absent", netns.Ref{Path: "/run/netns/zz"}, true, "zz", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := findEndpoint(f, tc.ref, tc.resolved, tc.arg); got != tc.want {
				t.Errorf("got %d, want %d", got, tc.want)
			}
		})
	}
}

func TestDefaultRoutePlan(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ext := state.Network{Name: "ext", Gateway: addr("10.1.0.1"), Gateway6: addr("fd00:1::1")}
	ext4 := state.Network{Name: "ext4", Gateway: addr("10.2.0.1")}
	in := state.Network{Name: "in", Internal: true, Gateway: addr("10.3.0.1")}
	files := map[string]*state.File{
		"in":   {Network: in, Endpoints: []state.Endpoint{{Name: "c", Container: "c", Created: t0}}},
		"ext":  {Network: ext, Endpoints: []state.Endpoint{{Name: "c", Container: "c", Created: t0.Add(2 * time.Second), IPv4: addr("10.1.0.2"), IPv6: addr("fd00:1::2")}}},
		"ext4": {Network: ext4, Endpoints: []state.Endpoint{{Name: "c", Container: "c", Created: t0.Add(time.Second), IPv4: addr("10.2.0.2")}, {Name: "d", Container: "d", Created: t0}}},
	}
	eps, nets := containerEndpoints(files, "c")
	t.Run("join order", func(t *testing.T) {
		if len(nets) != 3 || nets[0].Name != "in" || nets[1].Name != "ext4" || nets[2].Name != "ext" {
			t.Fatalf("order %v", nets)
		}
	})
	t.Run("carrier skips internal", func(t *testing.T) {
		if i := routeCarrier(nets); i != 1 {
			t.Errorf("carrier %d, want 1 (ext4)", i)
		}
	})
	t.Run("no carrier", func(t *testing.T) {
		if i := routeCarrier([]state.Network{in}); i != -1 {
			t.Errorf("carrier %d, want -1", i)
		}
	})
	for _, tc := range []struct {
		name       string
		i          int
		has4, has6 bool
		want       string
	}{
		{"v4 carrier, no routes", 1, false, false, "[10.2.0.1]"},
		{"dual-stack carrier, no routes", 2, false, false, "[10.1.0.1 fd00:1::1]"},
		{"dual-stack carrier, v4 route left", 2, true, false, "[fd00:1::1]"},
		{"dual-stack carrier, both present", 2, true, true, "[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := missingRoutes(nets[tc.i], eps[tc.i], tc.has4, tc.has6)
			if fmtAddrs(got) != tc.want {
				t.Errorf("missing %v, want %s", got, tc.want)
			}
		})
	}
}

func fmtAddrs(as []netip.Addr) string {
	var s []string
	for _, a := range as {
		s = append(s, a.String())
	}
	return "[" + strings.Join(s, " ") + "]"
}

func TestParseNetworkSpec(t *testing.T) {
	uplink := func() (int, error) { return 1400, nil }
	for _, tc := range []struct {
		name     string
		spec     NetworkSpec
		sub, gw  string
		sub6     string
		v6random bool
		mtu      int
		wantErr  string
	}{
		{"defaults", NetworkSpec{Name: "n"}, "invalid Prefix", "invalid IP", "invalid Prefix", false, 1400, ""},
		{"subnet", NetworkSpec{Name: "n", Subnet: "10.7.0.0/24"}, "10.7.0.0/24", "10.7.0.1", "invalid Prefix", false, 1400, ""},
		{"gateway", NetworkSpec{Name: "n", Subnet: "10.7.0.0/24", Gateway: "10.7.0.254"}, "10.7.0.0/24", "10.7.0.254", "invalid Prefix", false, 1400, ""},
		{"mtu", NetworkSpec{Name: "n", MTU: 9000}, "invalid Prefix", "invalid IP", "invalid Prefix", false, 9000, ""},
		{"ipv6 random", NetworkSpec{Name: "n", IPv6: true}, "invalid Prefix", "invalid IP", "", true, 1400, ""},
		{"subnet6 implies ipv6", NetworkSpec{Name: "n", Subnet6: "fd00:7::/64"}, "invalid Prefix", "invalid IP", "fd00:7::/64", false, 1400, ""},
		{"bad name", NetworkSpec{Name: "a_b"}, "", "", "", false, 0, "network name"},
		{"mtu too small", NetworkSpec{Name: "n", MTU: 60}, "", "", "", false, 0, "invalid --mtu 60"},
		{"gateway without subnet", NetworkSpec{Name: "n", Gateway: "10.7.0.1"}, "", "", "", false, 0, "--gateway needs --subnet"},
		{"gateway6 without subnet6", NetworkSpec{Name: "n", Gateway6: "fd00::1"}, "", "", "", false, 0, "--gateway6 needs --subnet6"},
		{"bad subnet", NetworkSpec{Name: "n", Subnet: "10.7.0.0"}, "", "", "", false, 0, "invalid --subnet"},
		{"v6 subnet as subnet", NetworkSpec{Name: "n", Subnet: "fd00::/64"}, "", "", "", false, 0, "--subnet"},
		{"gateway outside", NetworkSpec{Name: "n", Subnet: "10.7.0.0/24", Gateway: "10.8.0.1"}, "", "", "", false, 0, "--gateway 10.8.0.1 is not inside subnet"},
		{"bad gateway", NetworkSpec{Name: "n", Subnet: "10.7.0.0/24", Gateway: "x"}, "", "", "", false, 0, "invalid --gateway"},
		{"bad subnet6", NetworkSpec{Name: "n", Subnet6: "fd00::"}, "", "", "", false, 0, "invalid --subnet6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := parseNetworkSpec(tc.spec, uplink)
			if !checkErr(t, err, tc.wantErr) {
				return
			}
			if p.sub.String() != tc.sub || p.gw.String() != tc.gw || p.mtu != tc.mtu {
				t.Errorf("plan %v %v mtu %d, want %s %s %d", p.sub, p.gw, p.mtu, tc.sub, tc.gw, tc.mtu)
			}
			if tc.v6random {
				if !p.sub6.IsValid() || p.sub6.Bits() != 64 || p.gw6 != ipam.FirstHost(p.sub6) {
					t.Errorf("random ULA %v gw %v", p.sub6, p.gw6)
				}
			} else if p.sub6.String() != tc.sub6 {
				t.Errorf("sub6 %v, want %s", p.sub6, tc.sub6)
			}
		})
	}
}

func TestChooseSubnets(t *testing.T) {
	pools, _ := ipam.ParsePools("10.50.0.0/22:24")
	files := map[string]*state.File{"a": {Network: state.Network{Name: "a", Subnet: pfx("10.50.0.0/24"), Subnet6: pfx("fd00:50::/64")}}}
	host := []netip.Prefix{pfx("10.50.1.0/24")}
	for _, tc := range []struct {
		name    string
		p       networkPlan
		pools   []ipam.Pool
		sub, gw string
		wantErr string
	}{
		{"allocated past networks and host", networkPlan{}, pools, "10.50.2.0/24", "10.50.2.1", ""},
		{"requested", networkPlan{sub: pfx("10.60.0.0/24"), gw: addr("10.60.0.1")}, pools, "10.60.0.0/24", "10.60.0.1", ""},
		{"overlaps a network", networkPlan{sub: pfx("10.50.0.128/25")}, pools, "", "", `overlaps network "a"`},
		{"overlaps the host", networkPlan{sub: pfx("10.50.1.0/24")}, pools, "", "", "already in use on this host"},
		{"v6 overlaps a network", networkPlan{sub: pfx("10.60.0.0/24"), sub6: pfx("fd00:50::/48")}, pools, "", "", "--subnet6"},
		{"pools exhausted", networkPlan{}, []ipam.Pool{{Base: pfx("10.50.0.0/23"), Size: 24}}, "", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := chooseSubnets(tc.p, files, host, tc.pools)
			if tc.name == "pools exhausted" {
				if err == nil {
					t.Fatalf("allocated %v from exhausted pools", p.sub)
				}
				return
			}
			if checkErr(t, err, tc.wantErr) && (p.sub.String() != tc.sub || p.gw.String() != tc.gw) {
				t.Errorf("chose %v %v, want %s %s", p.sub, p.gw, tc.sub, tc.gw)
			}
		})
	}
}

// The bridge is made with a MAC of its own, derived from the gateway (so
// the same when it is made again), never left to the kernel, which would
// take its lowest port's and change it as ports come and go.
func TestBridgeOf(t *testing.T) {
	for _, tc := range []struct {
		name   string
		n      state.Network
		gw     string
		gw6    string
		mtu    int
		bridge string
		mac    string
	}{
		{"v4", state.Network{Bridge: "na-x", MTU: 1500, Subnet: pfx("10.1.0.0/16"), Gateway: addr("10.1.0.1")}, "10.1.0.1/16", "invalid Prefix", 1500, "na-x", "02:42:0a:01:00:01"},
		{"v4 last host", state.Network{Bridge: "na-z", MTU: 1500, Subnet: pfx("10.201.7.0/24"), Gateway: addr("10.201.7.254")}, "10.201.7.254/24", "invalid Prefix", 1500, "na-z", "02:42:0a:c9:07:fe"},
		{"dual", state.Network{Bridge: "na-y", MTU: 1400, Subnet: pfx("10.1.0.0/24"), Gateway: addr("10.1.0.1"), Subnet6: pfx("fd00::/64"), Gateway6: addr("fd00::1")}, "10.1.0.1/24", "fd00::1/64", 1400, "na-y", "02:42:0a:01:00:01"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := bridgeOf(tc.n)
			if b.Name != tc.bridge || b.MTU != tc.mtu || b.Gateway.String() != tc.gw || b.Gateway6.String() != tc.gw6 {
				t.Errorf("bridge %+v", b)
			}
			if b.MAC.String() != tc.mac {
				t.Errorf("bridge MAC %q, want %s", b.MAC, tc.mac)
			}
		})
	}
}

// A bridge made by an earlier version (its MAC the kernel's) gets its own
// at the next command, once; a bridge that has it is left alone.
func TestFakeReconcilePinsAnOldBridgesMAC(t *testing.T) {
	m, fk, _ := newFakeManager(t)
	mustCreate(t, m, NetworkSpec{Name: "n1", Subnet: "10.201.140.0/24"})
	br := fileOf(t, m, "n1").Network.Bridge
	old := fk.State().Links[br]
	old.MAC = "5a:a9:d5:5d:e7:6b"
	fk.AddLink(br, old)
	if err := m.Reconcile(); err != nil {
		t.Fatal(err)
	}
	if got := fk.State().Links[br].MAC; got != "02:42:0a:c9:8c:01" {
		t.Errorf("bridge %s MAC after reconcile %q, want 02:42:0a:c9:8c:01", br, got)
	}
	n := len(fk.Calls())
	if err := m.Reconcile(); err != nil {
		t.Fatal(err)
	}
	for _, c := range fk.Calls()[n:] {
		if strings.HasPrefix(c, "SetBridgeMAC") {
			t.Errorf("a bridge with its own MAC was set again: %s", c)
		}
	}
}
