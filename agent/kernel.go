package agent

import (
	"net"
	"net/netip"

	"github.com/netalias/netalias/agent/firewall"
	"github.com/netalias/netalias/agent/link"
	"github.com/netalias/netalias/agent/netns"
	"github.com/netalias/netalias/agent/resolvconf"
)

// The kernel seam. The Manager decides (plan.go, pure code) and asks the
// kernel through these small interfaces; Options.Kernel injects them (as
// libnetwork's bridge driver is handed its netlink handle). Nil fields take
// the real implementation; tests inject a fake (agent/internal/fakekernel)
// that can fail at any step.

// Links is the host side: link names, bridges, link groups.
type Links interface {
	LinkNames() (map[string]bool, error)
	HostPrefixes() ([]netip.Prefix, error)
	// UplinkMTU is the MTU of the host's default-route interface, capped
	// at max (max when there is none).
	UplinkMTU(max int) (int, error)
	CreateBridge(link.Bridge) error
	// SetBridgeMAC gives an existing bridge its own MAC (link.Bridge.MAC).
	SetBridgeMAC(name string, mac net.HardwareAddr) error
	DeleteLink(name string) error // a missing link is not an error
	GroupMembers(group uint32) ([]string, error)
	DeleteGroup(group uint32) error
}

// Veths plugs endpoints in and out: veth pairs, and the addresses and
// routes inside the namespaces.
type Veths interface {
	Attach(link.Veth) (ifname string, err error)
	Unplug(hostName, nsPath, ifname, parkName string, group uint32) error
	DefaultRoutes(nsPath string) (v4, v6 bool, err error)
	AddDefaultRoute(nsPath, ifname string, gw netip.Addr) error
}

// Sysctl sets host-wide switches.
type Sysctl interface {
	EnableForwarding(v6 bool) error
}

// Firewall applies the rules of a set of networks (firewall.Rules renders
// them; Sync applies them in one transaction).
type Firewall interface {
	Sync(table string, nets []firewall.Net) error
	Healthy(table string, nets []firewall.Net) (bool, error)
}

// Resolver keeps /etc/netns/NAME/resolv.conf.
type Resolver interface {
	Write(name, nameserver string, search []string) error
	Remove(name string) error
}

// Namespaces resolves NETNS arguments and looks after named namespaces.
type Namespaces interface {
	Resolve(arg string) (netns.Ref, error)
	Same(a, b string) bool
	Alive(pid int, startTime uint64) bool
	Delete(name string) error
}

// Kernel bundles the seam. Zero fields take the real implementation.
type Kernel struct {
	Links      Links
	Veths      Veths
	Sysctl     Sysctl
	Firewall   Firewall
	Resolver   Resolver
	Namespaces Namespaces
	Pairs      Pairs   // kernel_pairs.go
	Audit      Auditor // kernel_audit.go
}

func (k Kernel) withDefaults() Kernel {
	if k.Links == nil {
		k.Links = realLinks{}
	}
	if k.Veths == nil {
		k.Veths = realVeths{}
	}
	if k.Sysctl == nil {
		k.Sysctl = realSysctl{}
	}
	if k.Firewall == nil {
		k.Firewall = realFirewall{}
	}
	if k.Resolver == nil {
		k.Resolver = realResolver{}
	}
	if k.Namespaces == nil {
		k.Namespaces = realNamespaces{}
	}
	if k.Pairs == nil {
		k.Pairs = realPairs{}
	}
	if k.Audit == nil {
		// A fake kernel that implements the seam implements this too.
		if in, ok := k.Links.(Auditor); ok {
			k.Audit = in
		} else {
			k.Audit = realAuditor{}
		}
	}
	return k
}

type realLinks struct{}

func (realLinks) LinkNames() (map[string]bool, error)   { return link.LinkNames() }
func (realLinks) HostPrefixes() ([]netip.Prefix, error) { return link.HostPrefixes() }
func (realLinks) UplinkMTU(max int) (int, error)        { return link.UplinkMTU(max) }
func (realLinks) CreateBridge(b link.Bridge) error      { return link.CreateBridge(b) }
func (realLinks) DeleteLink(name string) error          { return link.DeleteLink(name) }
func (realLinks) SetBridgeMAC(name string, mac net.HardwareAddr) error {
	return link.SetBridgeMAC(name, mac)
}
func (realLinks) GroupMembers(group uint32) ([]string, error) { return link.GroupMembers(group) }
func (realLinks) DeleteGroup(group uint32) error              { return link.DeleteGroup(group) }

type realVeths struct{}

func (realVeths) Attach(v link.Veth) (string, error) { return link.Attach(v) }
func (realVeths) Unplug(host, nsPath, ifname, park string, group uint32) error {
	return link.Unplug(host, nsPath, ifname, park, group)
}
func (realVeths) DefaultRoutes(nsPath string) (bool, bool, error) { return link.DefaultRoutes(nsPath) }
func (realVeths) AddDefaultRoute(nsPath, ifname string, gw netip.Addr) error {
	return link.AddDefaultRoute(nsPath, ifname, gw)
}

type realSysctl struct{}

func (realSysctl) EnableForwarding(v6 bool) error { return link.EnableForwarding(v6) }

type realFirewall struct{}

func (realFirewall) Sync(table string, nets []firewall.Net) error { return firewall.Sync(table, nets) }
func (realFirewall) Healthy(table string, nets []firewall.Net) (bool, error) {
	return firewall.Healthy(table, nets)
}

type realResolver struct{}

func (realResolver) Write(name, ns string, search []string) error {
	return resolvconf.Write(name, ns, search)
}
func (realResolver) Remove(name string) error { return resolvconf.Remove(name) }

type realNamespaces struct{}

func (realNamespaces) Resolve(arg string) (netns.Ref, error) { return netns.Resolve(arg) }
func (realNamespaces) Same(a, b string) bool                 { return netns.Same(a, b) }
func (realNamespaces) Alive(pid int, start uint64) bool      { return netns.Alive(pid, start) }
func (realNamespaces) Delete(name string) error              { return netns.Delete(name) }
