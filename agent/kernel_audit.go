package agent

import (
	"github.com/netalias/netalias/agent/link"
	"github.com/netalias/netalias/agent/resolvconf"
)

// Auditor is what reconcile and `netalias check` need beyond the rest
// of the seam: the read side (link kinds, bridges and groups on the host,
// interfaces and addresses inside namespaces, resolver files) and the one
// repair no operation makes (a live veth back onto its bridge). A fake
// kernel given as Kernel.Links that implements it is used for it.
type Auditor interface {
	HostLinks() (map[string]link.Info, error)
	NetnsLinks(nsPath string) ([]link.Info, error)
	ReadResolver(name string) (resolvconf.Content, error)
	Plug(veth, bridge string) error
}

type realAuditor struct{}

func (realAuditor) HostLinks() (map[string]link.Info, error)      { return link.HostLinks() }
func (realAuditor) NetnsLinks(nsPath string) ([]link.Info, error) { return link.NetnsLinks(nsPath) }
func (realAuditor) Plug(veth, bridge string) error                { return link.Plug(veth, bridge) }
func (realAuditor) ReadResolver(name string) (resolvconf.Content, error) {
	return resolvconf.Read(name)
}
