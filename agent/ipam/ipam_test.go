package ipam

import (
	"net/netip"
	"testing"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func ip(s string) netip.Addr    { return netip.MustParseAddr(s) }

func TestAllocSubnetSkipsTaken(t *testing.T) {
	pools := []Pool{{pfx("10.201.0.0/16"), 24}}
	got, err := AllocSubnet(pools, []netip.Prefix{pfx("10.201.0.0/24"), pfx("10.201.1.128/25")})
	if err != nil || got != pfx("10.201.2.0/24") {
		t.Fatalf("AllocSubnet = %v, %v; want 10.201.2.0/24", got, err)
	}
	// A host route covering the whole pool leaves nothing.
	if _, err := AllocSubnet(pools, []netip.Prefix{pfx("10.0.0.0/8")}); err == nil {
		t.Fatal("AllocSubnet with everything taken: want error")
	}
}

func TestDefaultPoolsStartLikeDocker(t *testing.T) {
	got, err := AllocSubnet(DefaultPools(), []netip.Prefix{pfx("172.17.0.0/16")})
	if err != nil || got != pfx("172.18.0.0/16") {
		t.Fatalf("got %v, %v", got, err)
	}
	got, _ = AllocSubnet(DefaultPools(), []netip.Prefix{pfx("172.16.0.0/12")})
	if got != pfx("192.168.0.0/20") {
		t.Fatalf("after 172.16/12: got %v", got)
	}
}

func TestParsePools(t *testing.T) {
	p, err := ParsePools("10.201.0.0/16:24, 10.202.0.0/16:20")
	if err != nil || len(p) != 2 || p[1].Size != 20 {
		t.Fatalf("ParsePools = %v, %v", p, err)
	}
	for _, bad := range []string{"", "10.0.0.0/8", "10.0.0.0/16:8", "x:24", "fd00::/48:64"} {
		if _, err := ParsePools(bad); err == nil {
			t.Errorf("ParsePools(%q): want error", bad)
		}
	}
}

func TestCheckSubnet(t *testing.T) {
	s := pfx("10.201.5.0/24")
	if err := CheckSubnet("--subnet", s, ip("10.201.5.1"), true); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct {
		s  netip.Prefix
		gw netip.Addr
	}{
		"outside":   {s, ip("10.201.6.1")},
		"network":   {s, ip("10.201.5.0")},
		"broadcast": {s, ip("10.201.5.255")},
		"hostbits":  {pfx("10.201.5.7/24"), ip("10.201.5.1")},
		"tiny":      {pfx("10.201.5.0/31"), ip("10.201.5.1")},
		"family":    {pfx("fd00:201::/64"), ip("fd00:201::1")},
	}
	for name, c := range cases {
		if err := CheckSubnet("--subnet", c.s, c.gw, true); err == nil {
			t.Errorf("%s: want error", name)
		}
	}
	if err := CheckSubnet("--subnet6", pfx("fd00:201:1::/64"), ip("fd00:201:1::1"), false); err != nil {
		t.Fatal(err)
	}
}

func TestAllocAddr(t *testing.T) {
	s := pfx("10.201.7.0/29") // hosts .1-.6
	used := map[netip.Addr]bool{ip("10.201.7.1"): true, ip("10.201.7.2"): true}
	remembered := map[netip.Addr]bool{ip("10.201.7.3"): true}
	a, err := AllocAddr(s, used, remembered, netip.Addr{})
	if err != nil || a != ip("10.201.7.4") {
		t.Fatalf("got %v, %v; want .4 (skip used and remembered)", a, err)
	}
	a, _ = AllocAddr(s, used, remembered, ip("10.201.7.3"))
	if a != ip("10.201.7.3") {
		t.Fatalf("preferred free lease: got %v", a)
	}
	a, _ = AllocAddr(s, used, remembered, ip("10.201.7.2"))
	if a != ip("10.201.7.4") {
		t.Fatalf("preferred lease in use: got %v", a)
	}
	for _, x := range []string{"10.201.7.4", "10.201.7.5", "10.201.7.6"} {
		used[ip(x)] = true
	}
	a, _ = AllocAddr(s, used, remembered, netip.Addr{})
	if a != ip("10.201.7.3") {
		t.Fatalf("exhausted: want the remembered address as last resort, got %v", a)
	}
	used[ip("10.201.7.3")] = true
	if _, err := AllocAddr(s, used, remembered, netip.Addr{}); err == nil {
		t.Fatal("full subnet: want error")
	}
}
