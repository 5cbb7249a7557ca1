// Package netalias is a CoreDNS plugin that answers ALIAS.NETWORK names of
// containers (and bare ALIAS names for containers themselves) from the
// records netwatch collects, scoped to the networks of the asking client.
package netalias

import (
	"context"
	"net"
	"net/netip"
	"reflect"
	"strings"
	"sync/atomic"

	"github.com/coredns/coredns/plugin"
	"github.com/coredns/coredns/plugin/cache"
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
	// bypassCache is set when the cache plugin runs before us.
	bypassCache bool

	rot atomic.Uint32
	m   *answerCounters
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
		return h.bare(ctx, w, r, snap, src, qname[:dot])
	}
	zone := plugin.Zones(h.Zones).Matches(qname)
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

// bare answers a one-label name from the client's own networks and links.
func (h *Netalias) bare(ctx context.Context, w dns.ResponseWriter, r *dns.Msg, snap *netwatch.Snapshot, src netip.Addr, label string) (int, error) {
	v := h.viewerOf(snap, src)
	var nets []*netwatch.NetView
	switch {
	case v.client != nil:
		nets = v.client.Networks
	case v.subnet != nil:
		nets = []*netwatch.NetView{v.subnet}
	default:
		return h.next(ctx, w, r) // the host has no "own" network
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
		return h.next(ctx, w, r) // as Docker and aardvark-dns forward it
	}
	return h.write(ctx, w, r, snap, first, h.Zones[0], found)
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
	a, err := netip.ParseAddr(dnsutil.ExtractAddressFromReverse(qname))
	if err != nil {
		return h.next(ctx, w, r)
	}
	name, n := snap.PTR(a.Unmap())
	if n == nil || !h.viewerOf(snap, src).sees(n) {
		return h.next(ctx, w, r)
	}
	if z := h.Zones[0]; z != "." {
		name += z
	}
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	m.Answer = []dns.RR{&dns.PTR{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: h.TTL}, Ptr: name}}
	h.m.get(ctx).success.Inc()
	h.writeUncached(w, m)
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
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	c := h.m.get(ctx)
	if len(v4)+len(v6) == 0 {
		m.Ns = []dns.RR{h.soa(snap, n, zone)}
		c.nodata.Inc()
	} else {
		m.Answer = make([]dns.RR, 0, len(v4)+len(v6))
		rot := int(h.rot.Add(1))
		hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: h.TTL}
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
		c.success.Inc()
	}
	h.writeUncached(w, m)
	return dns.RcodeSuccess, nil
}

func (h *Netalias) nxdomain(ctx context.Context, w dns.ResponseWriter, r *dns.Msg, snap *netwatch.Snapshot, n *netwatch.NetView, zone, qname string) (int, error) {
	if h.Fall.Through(qname) {
		return h.next(ctx, w, r)
	}
	m := new(dns.Msg)
	m.SetRcode(r, dns.RcodeNameError)
	m.Authoritative = true
	m.Ns = []dns.RR{h.soa(snap, n, zone)}
	h.m.get(ctx).nxdomain.Inc()
	h.writeUncached(w, m)
	return dns.RcodeSuccess, nil
}

func (h *Netalias) next(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	h.m.get(ctx).next.Inc()
	return plugin.NextOrFailure(h.Name(), h.Next, ctx, w, r)
}

// soa is the authority record of a network: NETWORK.ZONE.
func (h *Netalias) soa(snap *netwatch.Snapshot, n *netwatch.NetView, zone string) dns.RR {
	apex := n.Apex
	if zone != "." {
		apex += zone
	}
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: apex, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: h.TTL},
		Ns:      "ns.dns." + apex,
		Mbox:    "hostmaster." + apex,
		Serial:  uint32(snap.Version),
		Refresh: 7200,
		Retry:   1800,
		Expire:  86400,
		Minttl:  h.TTL,
	}
}

// writeUncached writes m past the cache plugin, when it sits before us:
// its key ignores the client's address, and our answers depend on it
// (scoping, bare names); they also change at once, which a cached copy would
// not. CoreDNS wraps the writer between plugins in an unexported type, so
// the cache's writer is found by following embedded ResponseWriter fields.
func (h *Netalias) writeUncached(w dns.ResponseWriter, m *dns.Msg) {
	if h.bypassCache {
		for i, x := 0, w; i < 8 && x != nil; i++ {
			if cw, ok := x.(*cache.ResponseWriter); ok {
				if cw.ResponseWriter == nil {
					return // a prefetch: no client is waiting
				}
				w = cw.ResponseWriter
				break
			}
			x = embeddedWriter(x)
		}
	}
	w.WriteMsg(m)
}

func embeddedWriter(w dns.ResponseWriter) dns.ResponseWriter {
	v := reflect.ValueOf(w)
	if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
		return nil
	}
	f := v.Elem().FieldByName("ResponseWriter")
	if !f.IsValid() || !f.CanInterface() {
		return nil
	}
	inner, _ := f.Interface().(dns.ResponseWriter)
	return inner
}
