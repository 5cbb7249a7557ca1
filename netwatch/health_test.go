package netwatch

import (
	"net/netip"
	"slices"
	"testing"
)

func ipsOf(rs *RRSet) []string {
	if rs == nil {
		return nil
	}
	var out []string
	for _, ip := range rs.V4 {
		out = append(out, ip.String())
	}
	for _, ip := range rs.V6 {
		out = append(out, ip.String())
	}
	slices.Sort(out)
	return out
}

func healthNet(h ...Health) *Network {
	n := &Network{Name: "x", Subnet: netip.MustParsePrefix("10.202.7.0/24")}
	for i, hh := range h {
		a := netip.AddrFrom4([4]byte{10, 202, 7, byte(2 + i)})
		n.Endpoints = append(n.Endpoints, Endpoint{Name: "e" + a.String()[9:], Aliases: []string{"svc"}, IPv4: a, Container: a.String(), Health: hh})
	}
	return n
}

// Each policy's answer for a shared alias, per mix of member states.
func TestPickPerPolicy(t *testing.T) {
	for _, tc := range []struct {
		name                string
		members             []Health
		prefer, strict, off []string
	}{
		{"all ready", []Health{HealthNone, HealthHealthy}, []string{"10.202.7.2", "10.202.7.3"}, []string{"10.202.7.2", "10.202.7.3"}, []string{"10.202.7.2", "10.202.7.3"}},
		{"one unhealthy", []Health{HealthHealthy, HealthUnhealthy, HealthNone}, []string{"10.202.7.2", "10.202.7.4"}, []string{"10.202.7.2", "10.202.7.4"}, []string{"10.202.7.2", "10.202.7.3", "10.202.7.4"}},
		{"unready first", []Health{HealthStarting, HealthHealthy}, []string{"10.202.7.3"}, []string{"10.202.7.3"}, []string{"10.202.7.2", "10.202.7.3"}},
		{"none ready", []Health{HealthStarting, HealthUnhealthy}, []string{"10.202.7.2", "10.202.7.3"}, nil, []string{"10.202.7.2", "10.202.7.3"}},
	} {
		st := NewStore()
		st.Update("a", healthNet(tc.members...))
		rs := st.Snapshot().Network("x").Lookup("svc")
		for _, c := range []struct {
			p    HealthPolicy
			want []string
		}{{HealthPrefer, tc.prefer}, {HealthStrict, tc.strict}, {HealthOff, tc.off}} {
			got := rs.Pick(c.p)
			if !slices.Equal(ipsOf(got), c.want) {
				t.Errorf("%s, %v: %v, want %v", tc.name, c.p, ipsOf(got), c.want)
			}
			if got.Members() != rs {
				t.Errorf("%s, %v: Members is not the set of every member", tc.name, c.p)
			}
		}
		// A container's own name follows its own health.
		if got := st.Snapshot().Network("x").Endpoint("e2").Pick(HealthStrict); tc.members[0].Ready() != (len(got.V4) == 1) {
			t.Errorf("%s: strict own name of e2 = %v", tc.name, ipsOf(got))
		}
	}
}

func TestUnreadyCounts(t *testing.T) {
	st := NewStore()
	st.Update("a", healthNet(HealthStarting, HealthUnhealthy, HealthHealthy))
	if n := st.Snapshot().Unready(); n != 2 {
		t.Fatalf("unready %d, want 2", n)
	}
	st.Update("a", healthNet(HealthHealthy, HealthUnhealthy, HealthHealthy))
	if n, v := st.Snapshot().Unready(), st.Snapshot().Network("x").Unready(); n != 1 || v != 1 {
		t.Fatalf("unready %d (network %d), want 1", n, v)
	}
	st.Remove("a", "x")
	if n := st.Snapshot().Unready(); n != 0 {
		t.Fatalf("unready %d after removal, want 0", n)
	}
}

// The same address from a ready and an unready endpoint (two sources) is
// ready.
func TestPickSharedAddress(t *testing.T) {
	st := NewStore()
	a := netip.MustParseAddr("10.202.7.2")
	st.Update("a", &Network{Name: "x", Endpoints: []Endpoint{{Name: "p", Aliases: []string{"svc"}, IPv4: a, Health: HealthUnhealthy}}})
	st.Update("b", &Network{Name: "x", Endpoints: []Endpoint{{Name: "q", Aliases: []string{"svc"}, IPv4: a}}})
	if got := ipsOf(st.Snapshot().Network("x").Lookup("svc").Pick(HealthStrict)); !slices.Equal(got, []string{"10.202.7.2"}) {
		t.Fatalf("strict %v", got)
	}
}

func TestUnion(t *testing.T) {
	st := NewStore()
	st.Update("a", healthNet(HealthUnhealthy, HealthHealthy))
	n2 := healthNet(HealthStarting)
	n2.Name = "y"
	n2.Endpoints[0].IPv4 = netip.MustParseAddr("10.202.8.2")
	st.Update("a", n2)
	s := st.Snapshot()
	u := Union(s.Network("x").Lookup("svc"), s.Network("y").Lookup("svc"))
	if got := ipsOf(u.Pick(HealthPrefer)); !slices.Equal(got, []string{"10.202.7.3"}) {
		t.Errorf("prefer over two networks: %v", got)
	}
	if got := ipsOf(u.Pick(HealthOff)); len(got) != 3 {
		t.Errorf("off over two networks: %v", got)
	}
	u = Union(s.Network("y").Lookup("svc"), nil)
	if got := ipsOf(u.Pick(HealthPrefer)); !slices.Equal(got, []string{"10.202.8.2"}) {
		t.Errorf("prefer, none ready: %v", got)
	}
	if got := u.Pick(HealthStrict); len(got.V4) != 0 {
		t.Errorf("strict, none ready: %v", ipsOf(got))
	}
}

func TestParseHealth(t *testing.T) {
	for s, want := range map[string]Health{"": HealthNone, "none": HealthNone, "healthy": HealthHealthy, "starting": HealthStarting, "unhealthy": HealthUnhealthy} {
		if h, ok := ParseHealth(s); !ok || h != want || (s != "" && h.String() != s) {
			t.Errorf("ParseHealth(%q) = %v %v", s, h, ok)
		}
	}
	if _, ok := ParseHealth("running"); ok {
		t.Error("ParseHealth accepted running")
	}
}

// A set built by hand (never sealed by a snapshot) answers every member.
func TestPickUnsealed(t *testing.T) {
	rs := &RRSet{}
	for _, p := range []HealthPolicy{HealthPrefer, HealthStrict, HealthOff} {
		if rs.Pick(p) != rs {
			t.Errorf("%v: unsealed set not answered whole", p)
		}
	}
	if (*RRSet)(nil).Pick(HealthStrict) != nil {
		t.Error("nil set picked something")
	}
}
