package netalias

import (
	"context"
	"testing"

	"github.com/coredns/coredns/plugin/pkg/dnstest"
	"github.com/coredns/coredns/plugin/test"
	"github.com/miekg/dns"
)

// FuzzServeDNS feeds arbitrary messages, from every kind of client, to the
// handler behind its clients gate: it must never panic, and whatever it writes must pack.
func FuzzServeDNS(f *testing.F) {
	for _, tc := range cases {
		b, _ := tc.Msg().Pack()
		f.Add(b, byte(0))
	}
	f.Add([]byte{}, byte(1))
	h := newHandler(testStore())
	froms := []string{hostIP, c1IP, c2IP, c3IP, o1IP, m1IPo, strayIP, farIP, "::1", "fd00:202:1::2"}
	f.Fuzz(func(t *testing.T, b []byte, who byte) {
		m := new(dns.Msg)
		if err := m.Unpack(b); err != nil {
			return
		}
		rec := dnstest.NewRecorder(&test.ResponseWriter{RemoteIP: froms[int(who)%len(froms)]})
		newGate(h, h).ServeDNS(context.Background(), rec, m)
		if rec.Msg != nil {
			if _, err := rec.Msg.Pack(); err != nil {
				t.Fatalf("reply does not pack: %v\n%v", err, rec.Msg)
			}
		}
	})
}
