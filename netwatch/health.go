package netwatch

import (
	"net"
	"net/netip"
)

// Health is a member's state as its runtime's healthcheck reports it.
type Health uint8

const (
	// HealthNone: no healthcheck (the agent's own endpoints, containers
	// without HEALTHCHECK). Counted ready.
	HealthNone Health = iota
	// HealthHealthy: the healthcheck passes. Ready.
	HealthHealthy
	// HealthStarting: checks have not passed yet. Not ready.
	HealthStarting
	// HealthUnhealthy: the healthcheck fails. Not ready.
	HealthUnhealthy
)

// Ready reports whether a member in state h is answered by default.
func (h Health) Ready() bool { return h == HealthNone || h == HealthHealthy }

func (h Health) String() string {
	switch h {
	case HealthHealthy:
		return "healthy"
	case HealthStarting:
		return "starting"
	case HealthUnhealthy:
		return "unhealthy"
	default:
		return "none"
	}
}

// ParseHealth reads a runtime's health status ("healthy", "starting",
// "unhealthy", "none" or ""); ok is false for anything else.
func ParseHealth(s string) (h Health, ok bool) {
	switch s {
	case "", "none":
		return HealthNone, true
	case "healthy":
		return HealthHealthy, true
	case "starting":
		return HealthStarting, true
	case "unhealthy":
		return HealthUnhealthy, true
	}
	return HealthNone, false
}

// HealthPolicy chooses which members of a name answer.
type HealthPolicy uint8

const (
	// HealthPrefer answers the ready members, or every member when none
	// is ready: a name never goes dark because of health.
	HealthPrefer HealthPolicy = iota
	// HealthStrict answers the ready members only (none: no address).
	HealthStrict
	// HealthOff answers every member, as Docker's own DNS does.
	HealthOff
)

func (p HealthPolicy) String() string {
	switch p {
	case HealthStrict:
		return "strict"
	case HealthOff:
		return "off"
	default:
		return "prefer"
	}
}

// ParseHealthPolicy reads "prefer", "strict" or "off".
func ParseHealthPolicy(s string) (HealthPolicy, bool) {
	switch s {
	case "prefer":
		return HealthPrefer, true
	case "strict":
		return HealthStrict, true
	case "off":
		return HealthOff, true
	}
	return HealthPrefer, false
}

// Pick returns the members that answer under policy p: rs itself, or a
// set built with the snapshot (no work per query beyond the choice).
// Nil stays nil.
func (rs *RRSet) Pick(p HealthPolicy) *RRSet {
	if rs == nil || rs.preferred == nil { // nil, or a set never sealed: every member
		return rs
	}
	switch p {
	case HealthStrict:
		return rs.ready
	case HealthOff:
		return rs
	default:
		return rs.preferred
	}
}

// Members is the set of every member that rs was picked from (rs itself
// when nothing was left out).
func (rs *RRSet) Members() *RRSet {
	if rs.all == nil {
		return rs
	}
	return rs.all
}

// addMember adds a member's addresses to rs (every member) and, when the
// member is ready, to the ready set. The ready set is made only once a
// member that is not ready appears; until then it is rs itself.
func (v *NetView) addMember(rs *RRSet, a4, a6 netip.Addr, ready bool) {
	if !ready && rs.ready == nil {
		rs.ready = &RRSet{V4: append([]net.IP(nil), rs.V4...), V6: append([]net.IP(nil), rs.V6...), all: rs}
	}
	var ip4, ip6 net.IP
	if a4.IsValid() {
		b := a4.As4()
		ip4 = v.addIP(&rs.V4, a4, b[:])
	}
	if a6.IsValid() {
		b := a6.As16()
		ip6 = v.addIP(&rs.V6, a6, b[:])
	}
	if ready && rs.ready != nil {
		if ip4 != nil && !hasIP(rs.ready.V4, ip4) {
			rs.ready.V4 = append(rs.ready.V4, ip4)
		}
		if ip6 != nil && !hasIP(rs.ready.V6, ip6) {
			rs.ready.V6 = append(rs.ready.V6, ip6)
		}
	}
}

// addIP puts a (bytes b) into *l unless there, and returns its bytes in *l.
func (v *NetView) addIP(l *[]net.IP, a netip.Addr, b []byte) net.IP {
	for _, ip := range *l {
		if x, ok := netip.AddrFromSlice(ip); ok && x.Unmap() == a.Unmap() {
			return ip
		}
	}
	ip := v.ipBytes(b)
	*l = append(*l, ip)
	return ip
}

// seal fixes the views of rs once every member is in.
func (rs *RRSet) seal() {
	switch {
	case rs.ready == nil: // every member ready
		rs.ready, rs.preferred = rs, rs
	case len(rs.ready.V4)+len(rs.ready.V6) == 0: // none ready
		rs.preferred = rs
	default:
		rs.preferred = rs.ready
	}
	// The picked sets answer Pick too (a bare name's merge picks again).
	if rs.ready != rs {
		rs.ready.ready, rs.ready.preferred = rs.ready, rs.ready
	}
}

// Union returns a new set of the members of a and b (either may be nil),
// keeping which are ready. For bare names found on several networks.
func Union(a, b *RRSet) *RRSet {
	out := &RRSet{}
	var rd RRSet
	for _, s := range []*RRSet{a, b} {
		if s == nil {
			continue
		}
		s = s.Members()
		out.V4 = appendNewIPs(out.V4, s.V4)
		out.V6 = appendNewIPs(out.V6, s.V6)
		r := s.Pick(HealthStrict)
		rd.V4 = appendNewIPs(rd.V4, r.V4)
		rd.V6 = appendNewIPs(rd.V6, r.V6)
	}
	if len(rd.V4) != len(out.V4) || len(rd.V6) != len(out.V6) {
		rd.all = out
		out.ready = &rd
	}
	out.seal()
	return out
}

func hasIP(l []net.IP, ip net.IP) bool {
	for _, x := range l {
		if x.Equal(ip) {
			return true
		}
	}
	return false
}

func appendNewIPs(dst, src []net.IP) []net.IP {
	for _, ip := range src {
		if !hasIP(dst, ip) {
			dst = append(dst, ip)
		}
	}
	return dst
}
