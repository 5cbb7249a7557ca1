package netalias

import (
	"net/netip"
	"strings"

	"github.com/coredns/coredns/plugin/pkg/dnsutil"
)

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
