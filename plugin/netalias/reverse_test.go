package netalias

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/coredns/coredns/plugin/pkg/dnsutil"
)

func slowReverse(qname string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(dnsutil.ExtractAddressFromReverse(qname))
	return a, err == nil
}

func checkReverse(t *testing.T, qname string) {
	t.Helper()
	got, gok := parseReverse(qname)
	want, wok := slowReverse(qname)
	if gok != wok || (gok && got.Unmap() != want.Unmap()) {
		t.Errorf("parseReverse(%q) = %v %v, want %v %v", qname, got, gok, want, wok)
	}
}

func TestParseReverse(t *testing.T) {
	for _, q := range []string{
		"2.1.202.10.in-addr.arpa.", "0.0.0.0.in-addr.arpa.", "255.255.255.255.in-addr.arpa.",
		"256.1.1.1.in-addr.arpa.", "01.1.1.1.in-addr.arpa.", "1.1.1.in-addr.arpa.", "1.1.1.1.1.in-addr.arpa.",
		".1.1.1.in-addr.arpa.", "1..1.1.in-addr.arpa.", "a.1.1.1.in-addr.arpa.", "in-addr.arpa.", ".in-addr.arpa.",
		"4.3.2.::ffff:1.in-addr.arpa.", "1.2.3.4.5.in-addr.arpa.", "1234.1.1.1.in-addr.arpa.",
		"2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.2.0.2.0.0.0.d.f.ip6.arpa.",
		"b.a.9.8.7.6.5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
		"4.0.3.0.2.0.1.0.f.f.f.f.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.",
		"0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.",
		"g.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.",
		"00.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.",
		"1.0.0.0.ip6.arpa.", "ip6.arpa.", ".ip6.arpa.",
	} {
		checkReverse(t, q)
	}
}

func FuzzParseReverse(f *testing.F) {
	f.Add("2.1.202.10.in-addr.arpa.")
	f.Add("2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.2.0.2.0.0.0.d.f.ip6.arpa.")
	f.Fuzz(func(t *testing.T, q string) {
		q = strings.ToLower(q)
		if !strings.HasSuffix(q, ".in-addr.arpa.") && !strings.HasSuffix(q, ".ip6.arpa.") {
			q += ".in-addr.arpa."
		}
		checkReverse(t, q)
	})
}
