// Package names validates the names users give networks, endpoints and
// aliases. Networks and endpoints become the labels of NAME.NETWORK, so they
// must be valid DNS labels; aliases may be multi-label DNS names.
package names

import (
	"fmt"
	"strings"
)

// Label checks that s is a DNS label (RFC 1123 host label): 1-63 letters,
// digits and hyphens, not starting or ending with a hyphen. what names the
// thing in the error ("network name", "endpoint name").
func Label(what, s string) error {
	if s == "" {
		return fmt.Errorf("invalid %s \"\": must not be empty", what)
	}
	if len(s) > 63 {
		return fmt.Errorf("invalid %s %q: longer than 63 characters (a DNS label)", what, s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-':
			if i == 0 || i == len(s)-1 {
				return fmt.Errorf("invalid %s %q: a DNS label cannot start or end with '-'", what, s)
			}
		default:
			return fmt.Errorf("invalid %s %q: character %q not allowed in a DNS label (letters, digits, '-')", what, s, c)
		}
	}
	return nil
}

// DNSName checks that s is a DNS name: dot-separated labels, at most 253
// characters, no trailing dot.
func DNSName(what, s string) error {
	if s == "" {
		return fmt.Errorf("invalid %s \"\": must not be empty", what)
	}
	if len(s) > 253 {
		return fmt.Errorf("invalid %s %q: longer than 253 characters", what, s)
	}
	for _, l := range strings.Split(s, ".") {
		if err := Label(what, l); err != nil {
			return fmt.Errorf("invalid %s %q: label %q is not a DNS label", what, s, l)
		}
	}
	return nil
}
