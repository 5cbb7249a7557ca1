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
	"github.com/coredns/coredns/plugin/pkg/fall"
	"github.com/miekg/dns"

	"github.com/netalias/netalias/netwatch"
)

// Netalias is the plugin handler.
type Netalias struct {
	Next  plugin.Handler
	Zones []string
	TTL   uint32
	Fall  fall.F
	Store *netwatch.Store
	// Health chooses the members of a name that answer (`healthcheck`).
	Health netwatch.HealthPolicy
	// Clients is checked by the gate in front of the whole chain (gate.go),
	// not by ServeDNS.
	Clients Clients

	m     *answerCounters
	stale *staleTTL // cluster mode: shorter TTL while etcd is unreachable

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
		if declined(w) {
			return 0, nil // the real chain passes it on
		}
		return plugin.NextOrFailure(h.Name(), h.Next, ctx, w, r)
	}
	src := remoteAddr(w)
	snap := h.Store.Snapshot()
	q := r.Question[0]
	if q.Qclass != dns.ClassINET && q.Qclass != dns.ClassANY {
		return h.next(ctx, w, r)
	}
	qname := strings.ToLower(q.Name)
	if q.Qtype == dns.TypePTR && (strings.HasSuffix(qname, ".in-addr.arpa.") || strings.HasSuffix(qname, ".ip6.arpa.")) {
		return h.ptr(ctx, w, r, snap, src, qname)
	}
	policy := h.Health
	if strings.HasPrefix(qname, allLabel) {
		// Every member, whatever its health; otherwise the same name.
		qname, policy = qname[len(allLabel):], netwatch.HealthOff
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
		return h.write(ctx, w, r, snap, n, h.Zones[0], rs.Pick(policy))
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
	// A name whose members are all left out (strict) still exists: NODATA.
	return h.write(ctx, w, r, snap, n, zone, rs.Pick(policy))
}

// allLabel in front of a name asks for every member regardless of health.
// A container name is a DNS label and never starts with an underscore, nor
// does a network name, so it cannot collide.
const allLabel = "_all."

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
	add := func(n *netwatch.NetView, rs *netwatch.RRSet) {
		switch {
		case rs == nil:
		case found == nil:
			found, first = rs, n
		default:
			// Found on several networks: members and their health merged
			// (a new set; rare).
			found = netwatch.Union(found, rs)
		}
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
	rep.rec = dns.PTR{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: h.ttl()}, Ptr: name}
	rep.rr[0] = &rep.rec
	rep.m.Answer = rep.rr[:]
	h.m.get(ctx).success.Inc()
	w.WriteMsg(&rep.m)
	return dns.RcodeSuccess, nil
}

func (h *Netalias) next(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	if declined(w) {
		return 0, nil // the real chain counts it and passes it on
	}
	h.m.get(ctx).next.Inc()
	return plugin.NextOrFailure(h.Name(), h.Next, ctx, w, r)
}
