// Package netalias is a CoreDNS plugin that answers ALIAS.NETWORK names of
// containers (and bare ALIAS names for containers themselves) from the
// records netwatch collects, scoped to the networks of the asking client.
package netalias

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/pkg/dnsutil"
	"github.com/coredns/coredns/plugin/pkg/fall"
	"github.com/miekg/dns"

	"github.com/netalias/netalias/netwatch"
)

// Netalias is the plugin handler.
type Netalias struct {
	Next    plugin.Handler
	Zones   []string
	TTL     uint32
	Fall    fall.F
	Store   *netwatch.Store
	Clients Clients
	// gated is set when the clients check runs in front of the whole
	// chain (see gate.go), so the handler need not repeat it.
	gated bool

	m *answerCounters

	// rot changes on every rotated answer: padding keeps it off the cache
	// line of the fields every query reads.
	_   [64]byte
	rot atomic.Uint32
	_   [60]byte
}

// Name implements plugin.Handler.
func (h *Netalias) Name() string { return "netalias" }

// Ready implements ready.Readiness: true after every source's first load.
func (h *Netalias) Ready() bool { return h.Store.Ready() }

// viewer is what a client may see.
type viewer struct {
	all    bool              // the host (or another allowed non-container client)
	client *netwatch.Client  // a container: its networks and links
	subnet *netwatch.NetView // an unknown address inside one managed subnet
}

func (v viewer) sees(n *netwatch.NetView) bool {
	switch {
	case v.all:
		return true
	case v.client != nil:
		return v.client.Sees(n)
	default:
		return v.subnet == n
	}
}

func (h *Netalias) viewerOf(snap *netwatch.Snapshot, src netip.Addr) viewer {
	if src.IsLoopback() {
		return viewer{all: true}
	}
	if c := snap.Client(src); c != nil {
		return viewer{client: c}
	}
	if h.Store.IsHostIn(snap, src) {
		return viewer{all: true}
	}
	if n := snap.InSubnet(src); n != nil {
		return viewer{subnet: n}
	}
	// Outside every managed network, yet allowed by `clients`: trusted like
	// the host.
	return viewer{all: true}
}

// remoteAddr returns the client's address without allocating.
func remoteAddr(w dns.ResponseWriter) netip.Addr {
	switch a := w.RemoteAddr().(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	case nil:
		return netip.Addr{}
	default:
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			return netip.Addr{}
		}
		return ap.Addr().Unmap()
	}
}

// ServeDNS implements plugin.Handler.
func (h *Netalias) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	if len(r.Question) != 1 || r.Opcode != dns.OpcodeQuery {
		return plugin.NextOrFailure(h.Name(), h.Next, ctx, w, r)
	}
	src := remoteAddr(w)
	snap := h.Store.Snapshot()
	if !h.gated && !h.Clients.Allowed(h.Store, snap, src) {
		h.m.get(ctx).refused.Inc()
		return dns.RcodeRefused, nil
	}
	q := r.Question[0]
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		return h.next(ctx, w, r)
	}
	qname := strings.ToLower(q.Name)
	if q.Qtype == dns.TypePTR && (strings.HasSuffix(qname, ".in-addr.arpa.") || strings.HasSuffix(qname, ".ip6.arpa.")) {
		return h.ptr(ctx, w, r, snap, src, qname)
	}
	dot := strings.IndexByte(qname, '.')
	if dot < 0 {
		return h.next(ctx, w, r)
	}
	if dot == len(qname)-1 {
		rs, n := h.bare(snap, src, qname[:dot])
		if rs == nil {
			return h.next(ctx, w, r)
		}
		return h.write(ctx, w, r, snap, n, h.Zones[0], rs)
	}
	zone := h.zoneOf(qname)
	if zone == "" {
		return h.next(ctx, w, r)
	}
	rel := strings.TrimSuffix(qname[:len(qname)-len(zone)], ".")
	i := strings.LastIndexByte(rel, '.')
	if i < 0 {
		// NETWORK.ZONE itself (zones other than the root): a name without
		// addresses.
		n := snap.Network(rel)
		if n == nil || rel == "" {
			return h.next(ctx, w, r)
		}
		if !h.viewerOf(snap, src).sees(n) {
			return h.nxdomain(ctx, w, r, snap, n, zone, qname)
		}
		return h.write(ctx, w, r, snap, n, zone, nil)
	}
	n := snap.Network(rel[i+1:])
	if n == nil {
		return h.next(ctx, w, r) // under no known network: the internet's
	}
	label := rel[:i]
	if !h.viewerOf(snap, src).sees(n) || strings.IndexByte(label, '.') >= 0 {
		return h.nxdomain(ctx, w, r, snap, n, zone, qname)
	}
	rs := n.Lookup(label)
	if rs == nil {
		return h.nxdomain(ctx, w, r, snap, n, zone, qname)
	}
	return h.write(ctx, w, r, snap, n, zone, rs)
}

// zoneOf is plugin.Zones(h.Zones).Matches, without its label walk when the
// zone is the root (which holds every name).
func (h *Netalias) zoneOf(qname string) string {
	if len(h.Zones) == 1 && h.Zones[0] == "." {
		return "."
	}
	return plugin.Zones(h.Zones).Matches(qname)
}

// bare looks a one-label name up in the client's own networks and links:
// the addresses and the first network that has them, or nil for the next
// plugin. It returns before the answer is written, so that writing it
// takes no more stack than a qualified name's: a deeper stack at the write
// (whose path is deep) outgrows the goroutine's starting stack, and its
// growth cost a fifth of the server's CPU time under dnsperf.
//
//go:noinline
func (h *Netalias) bare(snap *netwatch.Snapshot, src netip.Addr, label string) (*netwatch.RRSet, *netwatch.NetView) {
	v := h.viewerOf(snap, src)
	var nets []*netwatch.NetView
	switch {
	case v.client != nil:
		nets = v.client.Networks
	case v.subnet != nil:
		nets = []*netwatch.NetView{v.subnet}
	default:
		return nil, nil // the host has no "own" network: the next plugin
	}
	var found *netwatch.RRSet
	var first *netwatch.NetView
	merged := false
	add := func(n *netwatch.NetView, rs *netwatch.RRSet) {
		if rs == nil {
			return
		}
		if found == nil {
			found, first = rs, n
			return
		}
		if !merged {
			found = &netwatch.RRSet{V4: append([]net.IP(nil), found.V4...), V6: append([]net.IP(nil), found.V6...)}
			merged = true
		}
		found.V4 = appendNew(found.V4, rs.V4)
		found.V6 = appendNew(found.V6, rs.V6)
	}
	for _, n := range nets {
		add(n, n.Lookup(label))
	}
	if v.client != nil {
		for _, l := range v.client.Links {
			if l.Alias != label {
				continue
			}
			for _, n := range nets {
				add(n, n.Endpoint(l.Target))
			}
		}
	}
	if found == nil {
		return nil, nil // the next plugin, as Docker and aardvark-dns forward it
	}
	return found, first
}

func appendNew(dst, src []net.IP) []net.IP {
	for _, ip := range src {
		dup := false
		for _, d := range dst {
			if d.Equal(ip) {
				dup = true
				break
			}
		}
		if !dup {
			dst = append(dst, ip)
		}
	}
	return dst
}

// ptr answers reverse lookups of endpoint addresses with NAME.NETWORK.
func (h *Netalias) ptr(ctx context.Context, w dns.ResponseWriter, r *dns.Msg, snap *netwatch.Snapshot, src netip.Addr, qname string) (int, error) {
	a, ok := parseReverse(qname)
	if !ok {
		return h.next(ctx, w, r)
	}
	name, n := snap.PTR(a.Unmap())
	if n == nil || !h.viewerOf(snap, src).sees(n) {
		return h.next(ctx, w, r)
	}
	if z := h.Zones[0]; z != "." {
		name += z
	}
	rep := newReply1[dns.PTR](r)
	rep.rec = dns.PTR{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: h.TTL}, Ptr: name}
	rep.rr[0] = &rep.rec
	rep.m.Answer = rep.rr[:]
	h.m.get(ctx).success.Inc()
	w.WriteMsg(&rep.m)
	return dns.RcodeSuccess, nil
}

// write answers from rs (nil: the name exists without addresses), or NODATA
// when rs has nothing of the asked type.
func (h *Netalias) write(ctx context.Context, w dns.ResponseWriter, r *dns.Msg, snap *netwatch.Snapshot, n *netwatch.NetView, zone string, rs *netwatch.RRSet) (int, error) {
	q := r.Question[0]
	var v4, v6 []net.IP
	if rs != nil {
		switch q.Qtype {
		case dns.TypeA:
			v4 = rs.V4
		case dns.TypeAAAA:
			v6 = rs.V6
		case dns.TypeANY:
			v4, v6 = rs.V4, rs.V6
		}
	}
	c := h.m.get(ctx)
	hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: h.TTL}
	var m *dns.Msg
	switch {
	case len(v4)+len(v6) == 0:
		m = h.negative(r, snap, n, zone)
		c.nodata.Inc()
		w.WriteMsg(m)
		return dns.RcodeSuccess, nil
	case len(v4) == 1 && len(v6) == 0:
		m = oneA(r, hdr, v4[0])
	case len(v4) == 0 && len(v6) == 1:
		m = oneAAAA(r, hdr, v6[0])
	default:
		m = h.many(r, hdr, v4, v6)
	}
	c.success.Inc()
	w.WriteMsg(m)
	return dns.RcodeSuccess, nil
}

// oneA is the common answer: the message, its question, answer section and
// record in one allocation. Apart from write, to keep write's stack frame
// small (see bare).
//
//go:noinline
func oneA(r *dns.Msg, hdr dns.RR_Header, ip net.IP) *dns.Msg {
	rep := newReply1[dns.A](r)
	hdr.Rrtype = dns.TypeA
	rep.rec = dns.A{Hdr: hdr, A: ip}
	rep.rr[0] = &rep.rec
	rep.m.Answer = rep.rr[:]
	return &rep.m
}

// oneAAAA is oneA for one IPv6 address.
//
//go:noinline
func oneAAAA(r *dns.Msg, hdr dns.RR_Header, ip net.IP) *dns.Msg {
	rep := newReply1[dns.AAAA](r)
	hdr.Rrtype = dns.TypeAAAA
	rep.rec = dns.AAAA{Hdr: hdr, AAAA: ip}
	rep.rr[0] = &rep.rec
	rep.m.Answer = rep.rr[:]
	return &rep.m
}

// many is the answer with several records. Apart from write, to keep
// write's stack frame small (see bare).
//
//go:noinline
func (h *Netalias) many(r *dns.Msg, hdr dns.RR_Header, v4, v6 []net.IP) *dns.Msg {
	rep := newReply1[struct{}](r)
	m := &rep.m
	m.Answer = make([]dns.RR, 0, len(v4)+len(v6))
	// Only answers with several addresses of a type rotate: the shared
	// counter is not touched (nor its cache line moved) otherwise.
	rot := 0
	if len(v4) > 1 || len(v6) > 1 {
		rot = int(h.rot.Add(1))
	}
	if len(v4) > 0 {
		hdr.Rrtype = dns.TypeA
		as := make([]dns.A, len(v4))
		for i := range as {
			as[i] = dns.A{Hdr: hdr, A: v4[(i+rot)%len(v4)]}
			m.Answer = append(m.Answer, &as[i])
		}
	}
	if len(v6) > 0 {
		hdr.Rrtype = dns.TypeAAAA
		as := make([]dns.AAAA, len(v6))
		for i := range as {
			as[i] = dns.AAAA{Hdr: hdr, AAAA: v6[(i+rot)%len(v6)]}
			m.Answer = append(m.Answer, &as[i])
		}
	}
	return m
}

// reply1 is an answer message with room for its question and one record:
// one allocation instead of four. Every query gets a fresh one (plugins
// before us may keep or change what they are handed).
type reply1[T any] struct {
	m   dns.Msg
	q   [1]dns.Question
	rr  [1]dns.RR
	rec T
}

// newReply1 is new(dns.Msg).SetReply(r) with Authoritative set, for a
// request of exactly one question.
func newReply1[T any](r *dns.Msg) *reply1[T] {
	rep := new(reply1[T])
	m := &rep.m
	m.Id = r.Id
	m.Response = true
	m.Opcode = r.Opcode
	if m.Opcode == dns.OpcodeQuery {
		m.RecursionDesired = r.RecursionDesired
		m.CheckingDisabled = r.CheckingDisabled
	}
	m.Rcode = dns.RcodeSuccess
	m.Authoritative = true
	rep.q[0] = r.Question[0]
	m.Question = rep.q[:]
	return rep
}

// negative is an authoritative answer to r without records, with the SOA
// of network n in the authority section.
func (h *Netalias) negative(r *dns.Msg, snap *netwatch.Snapshot, n *netwatch.NetView, zone string) *dns.Msg {
	rep := newReply1[dns.SOA](r)
	h.soaInto(&rep.rec, snap, n, zone)
	rep.rr[0] = &rep.rec
	rep.m.Ns = rep.rr[:]
	return &rep.m
}

func (h *Netalias) nxdomain(ctx context.Context, w dns.ResponseWriter, r *dns.Msg, snap *netwatch.Snapshot, n *netwatch.NetView, zone, qname string) (int, error) {
	if h.Fall.Through(qname) {
		return h.next(ctx, w, r)
	}
	m := h.negative(r, snap, n, zone)
	m.Rcode = dns.RcodeNameError
	h.m.get(ctx).nxdomain.Inc()
	w.WriteMsg(m)
	return dns.RcodeSuccess, nil
}

func (h *Netalias) next(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	h.m.get(ctx).next.Inc()
	return plugin.NextOrFailure(h.Name(), h.Next, ctx, w, r)
}

// soaInto fills in the authority record of a network: NETWORK.ZONE.
func (h *Netalias) soaInto(soa *dns.SOA, snap *netwatch.Snapshot, n *netwatch.NetView, zone string) {
	apex := n.Apex
	ns, mbox := n.SOANames()
	if zone != "." {
		apex += zone
		ns, mbox = "ns.dns."+apex, "hostmaster."+apex
	}
	*soa = dns.SOA{
		Hdr:     dns.RR_Header{Name: apex, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: h.TTL},
		Ns:      ns,
		Mbox:    mbox,
		Serial:  uint32(snap.Version),
		Refresh: 7200,
		Retry:   1800,
		Expire:  86400,
		Minttl:  h.TTL,
	}
}

// parseReverse is netip.ParseAddr(dnsutil.ExtractAddressFromReverse(qname))
// for a lower-case name, without allocating for the usual forms (four
// decimal labels; 32 hex nibbles). Any other form takes the long way, so
// the result is the same for every name.
func parseReverse(qname string) (netip.Addr, bool) {
	if s, ok := strings.CutSuffix(qname, dnsutil.IP4arpa); ok {
		var b [4]byte
		i := 3
		for len(s) > 0 && i >= 0 {
			end := strings.IndexByte(s, '.')
			if end < 0 {
				end = len(s)
			}
			l := s[:end]
			if len(l) == 0 || len(l) > 3 || (len(l) > 1 && l[0] == '0') {
				break
			}
			v := 0
			for j := 0; j < len(l); j++ {
				c := l[j]
				if c < '0' || c > '9' {
					v = 256
					break
				}
				v = v*10 + int(c-'0')
			}
			if v > 255 {
				break
			}
			b[i] = byte(v)
			i--
			if end == len(s) {
				s = ""
				if i < 0 {
					return netip.AddrFrom4(b), true
				}
				break
			}
			s = s[end+1:]
		}
	} else if s, ok := strings.CutSuffix(qname, dnsutil.IP6arpa); ok && len(s) == 63 {
		var b [16]byte
		good := true
		for k := 0; k < 32; k++ {
			c := s[2*k]
			if k < 31 && s[2*k+1] != '.' {
				good = false
				break
			}
			var v byte
			switch {
			case c >= '0' && c <= '9':
				v = c - '0'
			case c >= 'a' && c <= 'f':
				v = c - 'a' + 10
			default:
				good = false
			}
			if !good {
				break
			}
			// Label k is nibble 31-k of the address, lowest first.
			j := 31 - k
			if j%2 == 0 {
				b[j/2] |= v << 4
			} else {
				b[j/2] |= v
			}
		}
		if good {
			return netip.AddrFrom16(b), true
		}
	}
	a, err := netip.ParseAddr(dnsutil.ExtractAddressFromReverse(qname))
	return a, err == nil
}
