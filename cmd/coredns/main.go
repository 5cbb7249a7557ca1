// Command coredns is CoreDNS with a curated plugin set plus netalias, which
// serves ALIAS.NETWORK names of containers. The set and the reason for each
// plugin are in plugins.md; the order of the list below does not matter, the
// directive order (dnsserver.Directives) does.
package main

import (
	"fmt"
	"os"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/coremain"

	// Curated standard plugins (see plugins.md).
	_ "github.com/coredns/coredns/plugin/acl"
	_ "github.com/coredns/coredns/plugin/any"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/bufsize"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/cancel"
	_ "github.com/coredns/coredns/plugin/debug"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/file"
	_ "github.com/coredns/coredns/plugin/forward"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/hosts"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/metadata"
	_ "github.com/coredns/coredns/plugin/metrics"
	_ "github.com/coredns/coredns/plugin/minimal"
	_ "github.com/coredns/coredns/plugin/pprof"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
	_ "github.com/coredns/coredns/plugin/rewrite"
	_ "github.com/coredns/coredns/plugin/template"
	_ "github.com/coredns/coredns/plugin/whoami"

	"github.com/netalias/netalias/internal/version"
	"github.com/netalias/netalias/plugin/netalias"
)

func main() {
	// netalias runs just before cache (see netalias.Before and plugins.md).
	if err := netalias.InsertDirective(); err != nil {
		fmt.Fprintln(os.Stderr, "coredns:", err)
		os.Exit(1)
	}
	// -version (and the start-up banner) prints "AppName-AppVersion" and a
	// newline: a second line names the netalias version built in.
	caddy.AppVersion = coremain.CoreVersion + "\nnetalias-" + version.String()
	coremain.Run()
}
