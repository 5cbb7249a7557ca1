package agent

import (
	"github.com/netalias/netalias/agent/link"
	"github.com/netalias/netalias/agent/resolvconf"
)

// Auditor is the read side of the kernel seam that reconcile and
// `netalias check` need beyond LinkNames: link kinds, bridges and groups
// on the host, interfaces and addresses inside namespaces, resolver files.
// A fake kernel given as Kernel.Links that implements it is used for it.
type Auditor interface {
	HostLinks() (map[string]link.Info, error)
	NetnsLinks(nsPath string) ([]link.Info, error)
	ReadResolver(name string) (resolvconf.Content, error)
}

type realAuditor struct{}

func (realAuditor) HostLinks() (map[string]link.Info, error)      { return link.HostLinks() }
func (realAuditor) NetnsLinks(nsPath string) ([]link.Info, error) { return link.NetnsLinks(nsPath) }
func (realAuditor) ReadResolver(name string) (resolvconf.Content, error) {
	return resolvconf.Read(name)
}
