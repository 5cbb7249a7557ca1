package docker

import (
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"

	"github.com/netalias/netalias/netwatch"
)

// ComposeServiceLabel names the Compose service a container belongs to;
// the service name resolves to every replica.
const ComposeServiceLabel = "com.docker.compose.service"

// ctr is what DNS needs from one running container.
type ctr struct {
	id        string
	name      string
	endpoints map[string]endpoint // by network name
	health    netwatch.Health
}

type endpoint struct {
	aliases  []string
	links    []netwatch.Link
	ipv4     netip.Addr
	ipv6     netip.Addr
	gateway  netip.Addr
	gateway6 netip.Addr
}

// netInfo is the network-level part of a record, from network inspect.
type netInfo struct {
	subnet, subnet6   netip.Prefix
	gateway, gateway6 netip.Addr
}

// fromInspect turns an inspect result into the container's records; nil
// when the container does not run (and so resolves nowhere).
func fromInspect(c container.InspectResponse) *ctr {
	if c.ContainerJSONBase == nil || c.State == nil || !c.State.Running || c.NetworkSettings == nil {
		return nil
	}
	out := &ctr{id: c.ID, name: strings.TrimPrefix(c.Name, "/"), endpoints: map[string]endpoint{}}
	if c.State.Health != nil {
		// An unknown status (a newer engine's) counts as no healthcheck:
		// health never takes a member out on a guess.
		out.health, _ = netwatch.ParseHealth(c.State.Health.Status)
	}
	var service string
	if c.Config != nil {
		service = c.Config.Labels[ComposeServiceLabel]
	}
	// Legacy links on the default bridge live in HostConfig as
	// "/target:/linker/alias"; on user-defined networks Docker keeps them
	// per endpoint as "target:alias".
	var hostLinks []netwatch.Link
	if c.HostConfig != nil {
		hostLinks = parseLinks(c.HostConfig.Links)
	}
	for netName, es := range c.NetworkSettings.Networks {
		if es == nil {
			continue
		}
		ep := endpoint{
			ipv4:     parseAddr(es.IPAddress),
			ipv6:     parseAddr(es.GlobalIPv6Address),
			gateway:  parseAddr(es.Gateway),
			gateway6: parseAddr(es.IPv6Gateway),
		}
		if !ep.ipv4.IsValid() && !ep.ipv6.IsValid() {
			continue // host, none, or not wired yet
		}
		names := append(slices.Clone(es.Aliases), shortID(c.ID))
		if service != "" {
			names = append(names, service)
		}
		ep.aliases = cleanAliases(names, out.name)
		ep.links = mergeLinks(parseLinks(es.Links), hostLinks)
		out.endpoints[netName] = ep
	}
	return out
}

// shortID is the 12-character id Docker resolves as a name too.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func parseAddr(s string) netip.Addr {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

// cleanAliases lower-cases, drops empties, duplicates and the name itself,
// and sorts, so equal containers compare equal.
func cleanAliases(in []string, name string) []string {
	var out []string
	for _, a := range in {
		a = strings.ToLower(strings.TrimSpace(a))
		if a == "" || a == strings.ToLower(name) || slices.Contains(out, a) {
			continue
		}
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// parseLinks reads both link spellings: "/centos-1:/c2/db" (HostConfig)
// and "centos-1:db" (endpoint settings); "centos-1" alone links under its
// own name.
func parseLinks(in []string) []netwatch.Link {
	var out []netwatch.Link
	for _, l := range in {
		target, alias, ok := strings.Cut(l, ":")
		target = strings.TrimPrefix(target, "/")
		if !ok {
			alias = target
		}
		if i := strings.LastIndex(alias, "/"); i >= 0 {
			alias = alias[i+1:]
		}
		if target == "" || alias == "" {
			continue
		}
		out = append(out, netwatch.Link{Target: target, Alias: alias})
	}
	return out
}

func mergeLinks(a, b []netwatch.Link) []netwatch.Link {
	out := slices.Clone(a)
	for _, l := range b {
		if !slices.Contains(out, l) {
			out = append(out, l)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Alias != out[j].Alias {
			return out[i].Alias < out[j].Alias
		}
		return out[i].Target < out[j].Target
	})
	return out
}

// netInfoFrom reads subnets and gateways from a network inspect.
func netInfoFrom(n network.Inspect) netInfo {
	var ni netInfo
	for _, c := range n.IPAM.Config {
		p, err := netip.ParsePrefix(c.Subnet)
		if err != nil {
			continue
		}
		gw := parseAddr(c.Gateway)
		if p.Addr().Is4() && !ni.subnet.IsValid() {
			ni.subnet, ni.gateway = p.Masked(), gw
		} else if p.Addr().Is6() && !ni.subnet6.IsValid() {
			ni.subnet6, ni.gateway6 = p.Masked(), gw
		}
	}
	return ni
}

// model is the source's own picture of the engine: running containers
// and the engine's networks. Only the event goroutine touches it.
type model struct {
	containers map[string]*ctr
	// nets are the networks the engine has (listed, inspected or
	// announced by an event), even without containers: a name under an
	// existing network that nothing answers to is NXDOMAIN, not someone
	// else's to answer.
	nets      map[string]netInfo
	published map[string]bool // networks the sink holds from us
	// inspected is when (engine clock = ours, one host; Unix ns) the
	// last inspect of each container was asked for: a health event older
	// than that is already in what the inspect returned.
	inspected map[string]int64
}

func newModel() *model {
	return &model{containers: map[string]*ctr{}, nets: map[string]netInfo{}, published: map[string]bool{}, inspected: map[string]int64{}}
}

// setHealth records a health change of a running container without an
// inspect; known is false when the model does not have it running.
func (m *model) setHealth(id string, h netwatch.Health) (touched []string, known bool) {
	c := m.containers[id]
	if c == nil {
		return nil, false
	}
	if c.health == h {
		return nil, true
	}
	nc := *c // a new value: set compares the old with the new
	nc.health = h
	return m.set(id, &nc), true
}

// set records c (nil: container id is gone or stopped) and returns the
// networks whose records changed.
func (m *model) set(id string, c *ctr) []string {
	old := m.containers[id]
	if c == nil {
		delete(m.containers, id)
		delete(m.inspected, id)
	} else {
		m.containers[id] = c
	}
	if reflect.DeepEqual(old, c) {
		return nil
	}
	var touched []string
	for _, x := range []*ctr{old, c} {
		if x == nil {
			continue
		}
		for n := range x.endpoints {
			if !slices.Contains(touched, n) {
				touched = append(touched, n)
			}
		}
	}
	sort.Strings(touched)
	return touched
}

// disconnect drops container id's endpoint on network; returns the
// touched networks (none when it was not there).
func (m *model) disconnect(id, network string) []string {
	c := m.containers[id]
	if c == nil {
		return nil
	}
	if _, ok := c.endpoints[network]; !ok {
		return nil
	}
	nc := &ctr{id: c.id, name: c.name, endpoints: make(map[string]endpoint, len(c.endpoints)), health: c.health}
	for n, ep := range c.endpoints {
		if n != network {
			nc.endpoints[n] = ep
		}
	}
	return m.set(id, nc)
}

// networkNames lists every known network and every network some running
// container is on.
func (m *model) networkNames() []string {
	var names []string
	for n := range m.nets {
		names = append(names, n)
	}
	for _, c := range m.containers {
		for n := range c.endpoints {
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	sort.Strings(names)
	return names
}

// network builds the record of one network; nil when the engine does not
// have it (any more) and no running container is on it.
func (m *model) network(name string) *netwatch.Network {
	n := &netwatch.Network{Name: name}
	ni, known := m.nets[name]
	for _, c := range m.containers {
		ep, ok := c.endpoints[name]
		if !ok {
			continue
		}
		n.Endpoints = append(n.Endpoints, netwatch.Endpoint{
			Name:      c.name,
			Aliases:   slices.Clone(ep.aliases),
			Links:     slices.Clone(ep.links),
			IPv4:      ep.ipv4,
			IPv6:      ep.ipv6,
			Container: c.id,
			Health:    c.health,
		})
		// Docker's default bridge reports no IPAM gateway; the
		// endpoints know it.
		if !ni.gateway.IsValid() && ep.gateway.IsValid() {
			ni.gateway = ep.gateway
		}
		if !ni.gateway6.IsValid() && ep.gateway6.IsValid() {
			ni.gateway6 = ep.gateway6
		}
	}
	if len(n.Endpoints) == 0 && !known {
		return nil
	}
	n.Subnet, n.Subnet6, n.Gateway, n.Gateway6 = ni.subnet, ni.subnet6, ni.gateway, ni.gateway6
	sort.Slice(n.Endpoints, func(i, j int) bool {
		a, b := n.Endpoints[i], n.Endpoints[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		return a.Container < b.Container
	})
	return n
}

// all is every network's record, for Replace.
func (m *model) all() []*netwatch.Network {
	var out []*netwatch.Network
	for _, name := range m.networkNames() {
		if n := m.network(name); n != nil {
			out = append(out, n)
			m.published[name] = true
		}
	}
	return out
}

// hasDNS tells whether a network of this driver carries container
// addresses at all (host and none do not).
func hasDNS(driver string) bool { return driver != "host" && driver != "null" && driver != "none" }
