package netalias

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/coredns/coredns/plugin"
	"github.com/miekg/dns"

	"github.com/netalias/netalias/netwatch"
)

// Clients is who may ask. The default (managed) is loopback, the host's own
// addresses and the managed networks' subnets: a resolver on port 53 must
// never be an open resolver.
type Clients struct {
	Any      bool
	Managed  bool
	Prefixes []netip.Prefix
}

// ParseClients reads the arguments of the clients property.
func ParseClients(args []string) (Clients, error) {
	var c Clients
	if len(args) == 0 {
		return c, fmt.Errorf("clients needs managed, any or CIDRs")
	}
	for _, a := range args {
		switch strings.ToLower(a) {
		case "any":
			c.Any = true
		case "managed":
			c.Managed = true
		default:
			p, err := netip.ParsePrefix(a)
			if err != nil {
				addr, err2 := netip.ParseAddr(a)
				if err2 != nil {
					return c, fmt.Errorf("clients: %q is not managed, any, a CIDR or an address", a)
				}
				p = netip.PrefixFrom(addr, addr.BitLen())
			}
			c.Prefixes = append(c.Prefixes, p.Masked())
		}
	}
	return c, nil
}

// Allowed reports whether src may ask.
func (c *Clients) Allowed(st *netwatch.Store, snap *netwatch.Snapshot, src netip.Addr) bool {
	if c.Any {
		return true
	}
	for _, p := range c.Prefixes {
		if p.Contains(src) {
			return true
		}
	}
	if !c.Managed {
		return false
	}
	// Containers first: they ask most (the order does not change the result).
	return src.IsLoopback() || snap.Client(src) != nil || st.IsHostIn(snap, src) || snap.Managed(src)
}

// gate enforces clients in front of the whole plugin chain, so that no
// plugin before netalias (cache above all) answers a refused client.
type gate struct {
	h    *Netalias
	next plugin.Handler
	// grow is set when other plugins run between the gate and netalias
	// (see growStack).
	grow bool
	// short stands in for prometheus (and errors) in front of netalias
	// for the names netalias answers (see metricsShortcut); nil when other
	// plugins run in front of it.
	short *metricsShortcut
}

// newGate puts the clients check in front of next, the chain's head.
func newGate(h *Netalias, next plugin.Handler) gate {
	return gate{h: h, next: next, grow: next != plugin.Handler(h), short: shortcutFor(h, next)}
}

func (g gate) Name() string { return "netalias_clients" }

func (g gate) ServeDNS(ctx context.Context, w dns.ResponseWriter, r *dns.Msg) (int, error) {
	if !g.h.Clients.Allowed(g.h.Store, g.h.Store.Snapshot(), remoteAddr(w)) {
		g.h.m.get(ctx).refused.Inc()
		return dns.RcodeRefused, nil
	}
	if g.short != nil && !shortcutOff.Load() {
		if rc, ok, err := g.short.serve(ctx, g.h, w, r); ok {
			return rc, err
		}
	}
	if g.grow {
		growStack(len(r.Question))
	}
	return g.next.ServeDNS(ctx, w, r)
}

// growStack grows the query's goroutine stack once, here at the shallow top
// of the chain, to what the plugin chain below needs. Left alone, the stack
// doubles several times deep in the chain, each time copying and adjusting
// every frame: 13% of the server's CPU time in a profile under dnsperf,
// 7% with this (6 KiB measured best among 3, 6, 12 and 16 KiB: from 32 KiB
// on, stacks come from the heap and cost more than they save).
//
// Only when the query goes through other plugins in front of netalias
// (log, acl..., or prometheus and errors for the names netalias does not
// answer: see metricsShortcut), though: netalias alone fits the starting
// stack the runtime sizes from the stacks it has seen, and growing anyway
// costs a copy per query (under dnsperf, Go 1.26: stack growth 10-11% of
// the server's CPU time with this, 2-3% without). With errors and
// prometheus in front (cache runs after netalias), their frames and the
// reply's write path no longer fit a 4 KiB stack, so it grows on every
// query anyway: 5-7% of the CPU time with this, 8.5-11% without (first in
// answerCounters.get, then in the reply's allocation when get's frame was
// made small).
//
//go:noinline
func growStack(i int) byte {
	var buf [stackNeed]byte
	buf[i&1023] = byte(i)
	return buf[(i*7)&1023]
}

const stackNeed = 6 << 10
