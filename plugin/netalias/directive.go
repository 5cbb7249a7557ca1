package netalias

import (
	"fmt"
	"slices"

	"github.com/coredns/coredns/core/dnsserver"
)

// Before is the directive netalias runs just before. The position in
// CoreDNS's directive list is the position in the request chain: before
// cache, because our answers depend on who asks and change at once, and
// cache keys by name only and keeps answers for their TTL; still before
// hosts, file and forward, so names we do not own reach them.
const Before = "cache"

// InsertDirective puts netalias into CoreDNS's directive order just before
// Before. A build's main calls it before coremain.Run; calling it again is
// harmless.
func InsertDirective() error {
	d := slices.Clone(dnsserver.Directives)
	if slices.Contains(d, pluginName) {
		return nil
	}
	i := slices.Index(d, Before)
	if i < 0 {
		return fmt.Errorf("insert directive %s: directive %q not found", pluginName, Before)
	}
	return dnsserver.SetDirectives(slices.Insert(d, i, pluginName))
}
