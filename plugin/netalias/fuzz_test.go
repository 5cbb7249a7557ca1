package netalias

import (
	"context"
	"testing"

	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"

	"github.com/netalias/netalias/netwatch"
)

// FuzzServeDNS feeds arbitrary messages, from every kind of client, to the
// handler behind its clients gate: it must never panic, and whatever it writes must pack.
func FuzzServeDNS(f *testing.F) {
	for _, tc := range cases {
		b, _ := tc.Msg().Pack()
		f.Add(b, byte(0))
	}
	for _, q := range []string{"api.hnet.", "_all.api.hnet.", "boot.", "_all.boot.", "_all.", "_all.hnet."} {
		b, _ := test.Case{Qname: q, Qtype: dns.TypeA}.Msg().Pack()
		f.Add(b, byte(0x10+10)) // hCl, under the health store
	}
	f.Add([]byte{}, byte(1))
	// The high bits of who choose the store and policy: the plain one, or
	// the health network under each policy.
	var hs []*Netalias
	hs = append(hs, newHandler(testStore()))
	for _, p := range []netwatch.HealthPolicy{netwatch.HealthPrefer, netwatch.HealthStrict, netwatch.HealthOff} {
		h := newHandler(healthStore())
		h.Health = p
		hs = append(hs, h)
	}
	froms := []string{hostIP, c1IP, c2IP, c3IP, o1IP, m1IPo, strayIP, farIP, "::1", "fd00:202:1::2", hCl, hB}
	f.Fuzz(func(t *testing.T, b []byte, who byte) {
		m := new(dns.Msg)
		if err := m.Unpack(b); err != nil {
			return
		}
		h := hs[int(who>>4)%len(hs)]
		rec := dnstest.NewRecorder(&test.ResponseWriter{RemoteIP: froms[int(who&0xf)%len(froms)]})
		newGate(h, h).ServeDNS(context.Background(), rec, m)
		if rec.Msg != nil {
			if _, err := rec.Msg.Pack(); err != nil {
				t.Fatalf("reply does not pack: %v\n%v", err, rec.Msg)
			}
		}
	})
}
