package netalias

import (
	"context"
	"net"

	"github.com/miekg/dns"

	"github.com/netalias/netalias/netwatch"
)

// write answers from rs (nil: the name exists without addresses), or NODATA
// when rs has nothing of the asked type. rs is a set Pick chose: members
// it leaves out for health are counted.
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
	if rs != nil && rs.Members() != rs {
		countExcluded(c, q.Qtype, rs)
	}
	hdr := dns.RR_Header{Name: q.Name, Class: dns.ClassINET, Ttl: h.ttl()}
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

// countExcluded adds the addresses of the asked type that health left out
// of an answer from rs. Apart from write, to keep write's stack frame small
// (see bare).
//
//go:noinline
func countExcluded(c *serverCounters, qtype uint16, rs *netwatch.RRSet) {
	all := rs.Members()
	n := 0
	switch qtype {
	case dns.TypeA:
		n = len(all.V4) - len(rs.V4)
	case dns.TypeAAAA:
		n = len(all.V6) - len(rs.V6)
	case dns.TypeANY:
		n = len(all.V4) - len(rs.V4) + len(all.V6) - len(rs.V6)
	}
	if n > 0 {
		c.excluded.Add(float64(n))
	}
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

// soaInto fills in the authority record of a network: NETWORK.ZONE.
func (h *Netalias) soaInto(soa *dns.SOA, snap *netwatch.Snapshot, n *netwatch.NetView, zone string) {
	apex := n.Apex
	ns, mbox := n.SOANames()
	if zone != "." {
		apex += zone
		ns, mbox = "ns.dns."+apex, "hostmaster."+apex
	}
	*soa = dns.SOA{
		Hdr:     dns.RR_Header{Name: apex, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: h.ttl()},
		Ns:      ns,
		Mbox:    mbox,
		Serial:  uint32(snap.Version),
		Refresh: 7200,
		Retry:   1800,
		Expire:  86400,
		Minttl:  h.ttl(),
	}
}
