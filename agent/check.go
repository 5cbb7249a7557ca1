package agent

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/netalias/netalias/agent/link"
	"github.com/netalias/netalias/agent/netns"
	"github.com/netalias/netalias/agent/resolvconf"
	"github.com/netalias/netalias/agent/store"
	"github.com/netalias/netalias/state"
)

// Check compares the state with the kernel and the resolver files and
// returns one line per place they disagree (the invariant, README), each
// naming its object: a network, endpoint, namespace, interface or file.
// It takes the lock (a running command finishes first) and changes
// nothing.
func (m *Manager) Check() ([]string, error) {
	slk, err := m.store.Lock()
	if err != nil {
		return nil, err
	}
	defer slk.Unlock()
	snap, err := m.store.Load()
	if err != nil {
		return nil, err
	}
	return m.inspect(snap)
}

// Repair fixes what a reconcile fixes (every command's first step), and
// rules and default routes that went missing, then checks again. It
// returns what is still wrong.
func (m *Manager) Repair() ([]string, error) {
	lk, snap, err := m.begin()
	if err != nil {
		return nil, err
	}
	if ok, err := m.k.Firewall.Healthy(m.table, fwNets(snap.Files)); err == nil && !ok {
		if err := m.syncFirewall(snap); err != nil {
			m.log.Warn("firewall not repaired", "err", err)
		}
	}
	for _, c := range containers(snap) {
		if err := m.fixDefaultRoute(snap, c); err != nil {
			m.log.Warn("default route not repaired", "container", c, "err", err)
		}
	}
	lk.Unlock()
	return m.Check()
}

// containers lists the containers with an endpoint, sorted.
func containers(snap *store.Snapshot) []string {
	seen := map[string]bool{}
	for _, f := range snap.Files {
		for _, ep := range f.Endpoints {
			seen[ep.Container] = true
		}
	}
	out := make([]string, 0, len(seen))
	for c := range seen {
		out = append(out, c)
	}
	sort.Strings(out)
	return out
}

// wantsResolver: named namespaces get a resolver file, unless a container
// runtime attached them (it keeps its own resolv.conf).
func wantsResolver(eps []state.Endpoint) bool {
	for _, ep := range eps {
		if ep.Attachment != nil {
			return false
		}
	}
	return true
}

// inspect lists the inconsistencies of snap (held under the lock).
func (m *Manager) inspect(snap *store.Snapshot) ([]string, error) {
	var bad []string
	report := func(format string, a ...any) { bad = append(bad, fmt.Sprintf(format, a...)) }
	for _, p := range snap.Temp {
		report("file %s: stray temp file of an interrupted write", p)
	}
	for _, c := range snap.Corrupt {
		report("file %s: corrupt: %v", c.Path, c.Err)
	}
	host, err := m.k.Audit.HostLinks()
	if err != nil {
		return nil, err
	}
	known := recordedVeths(snap)
	byNetns := map[string][]epOn{} // namespace path → its endpoints
	for _, name := range snap.Names() {
		f := snap.Files[name]
		n := f.Network
		switch f.Op {
		case state.OpCreating:
			report("network %s: interrupted network create", n.Name)
		case state.OpRemoving:
			report("network %s: interrupted network rm", n.Name)
		}
		if br, ok := host[n.Bridge]; !ok {
			report("network %s: bridge %s missing", n.Name, n.Bridge)
		} else if br.Kind != "bridge" {
			report("network %s: %s is a %s, not a bridge", n.Name, n.Bridge, br.Kind)
		}
		for _, p := range f.PendingDelete {
			l, ok := host[p.Name]
			switch {
			case !ok:
			case p.Creating:
				report("network %s: veth %s: interrupted connect (intent record left)", n.Name, p.Name)
			case l.Group != m.group:
				report("network %s: veth %s: interrupted disconnect (not unplugged)", n.Name, p.Name)
			}
		}
		addrs := map[netip.Addr]string{}
		for _, ep := range f.Endpoints {
			for _, a := range []netip.Addr{ep.IPv4, ep.IPv6} {
				if other, dup := addrs[a]; a.IsValid() && dup {
					report("network %s: address %s held by endpoints %s and %s", n.Name, a, other, ep.Name)
				}
				addrs[a] = ep.Name
			}
			if ep.HostVeth == "" {
				continue // a Docker reservation: an address, no interface
			}
			what := fmt.Sprintf("endpoint %s on network %s", ep.Name, n.Name)
			switch l, ok := host[ep.HostVeth]; {
			case !ok:
				report("%s: host veth %s missing", what, ep.HostVeth)
			case l.Master != n.Bridge:
				report("%s: host veth %s is on %q, not on bridge %s", what, ep.HostVeth, l.Master, n.Bridge)
			}
			if ep.Owner != nil && !m.k.Namespaces.Alive(ep.Owner.PID, ep.Owner.StartTime) {
				report("%s: owner process %d exited", what, ep.Owner.PID)
			}
			byNetns[ep.Netns] = append(byNetns[ep.Netns], epOn{ep, n})
		}
	}
	for name, l := range host {
		if m.ours(name, l) && !known[name] && len(snap.Corrupt) == 0 {
			report("veth %s: ours (name, link group %#x) but no endpoint or pending entry records it", name, l.Group)
		}
	}
	paths := make([]string, 0, len(byNetns))
	for p := range byNetns {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		bad = append(bad, m.inspectNetns(snap, p, byNetns[p], host, known)...)
	}
	bad = append(bad, m.inspectResolvers(snap)...)
	if ok, err := m.k.Firewall.Healthy(m.table, fwNets(snap.Files)); err != nil {
		report("firewall table %s: %v", m.table, err)
	} else if !ok {
		report("firewall table %s: rules missing or out of date", m.table)
	}
	sort.Strings(bad)
	return bad, nil
}

type epOn struct {
	ep state.Endpoint
	n  state.Network
}

// inspectNetns checks the interfaces inside one namespace against its
// endpoints: each holds its address on its interface, no other interface
// holds an address of one of its networks, no address is held twice, and
// every veth paired with one of ours is recorded.
func (m *Manager) inspectNetns(snap *store.Snapshot, path string, eps []epOn, host map[string]link.Info, known map[string]bool) []string {
	var bad []string
	report := func(format string, a ...any) {
		bad = append(bad, fmt.Sprintf("namespace %s: ", path)+fmt.Sprintf(format, a...))
	}
	links, err := m.k.Audit.NetnsLinks(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || strings.Contains(err.Error(), "no such file") {
			return nil // gone: its host veths are gone too (reported above)
		}
		return []string{fmt.Sprintf("namespace %s: %v", path, err)}
	}
	byName := map[string]link.Info{}
	holders := map[netip.Addr][]string{}
	for _, l := range links {
		byName[l.Name] = l
		for _, a := range l.Addrs {
			holders[a.Addr()] = append(holders[a.Addr()], l.Name)
		}
		if l.Peer != "" {
			if hl, ok := host[l.Peer]; ok && m.ours(l.Peer, hl) && !known[l.Peer] {
				report("interface %s: host peer %s has no record", l.Name, l.Peer)
			}
		}
	}
	for a, ifs := range holders {
		if len(ifs) > 1 {
			report("address %s on %d interfaces %s", a, len(ifs), strings.Join(ifs, ", "))
		}
	}
	for _, e := range eps {
		l, ok := byName[e.ep.IfName]
		if !ok {
			report("interface %s (endpoint %s on network %s) missing", e.ep.IfName, e.ep.Name, e.n.Name)
			continue
		}
		if l.Peer != "" && l.Peer != e.ep.HostVeth {
			report("interface %s (endpoint %s on network %s) is paired with %s, not %s", l.Name, e.ep.Name, e.n.Name, l.Peer, e.ep.HostVeth)
		}
		for _, a := range []netip.Addr{e.ep.IPv4, e.ep.IPv6} {
			if a.IsValid() && !slices.ContainsFunc(l.Addrs, func(p netip.Prefix) bool { return p.Addr() == a }) {
				report("interface %s (endpoint %s on network %s) does not hold %s", l.Name, e.ep.Name, e.n.Name, a)
			}
		}
		for _, o := range links {
			if o.Name == l.Name {
				continue
			}
			for _, a := range o.Addrs {
				if e.n.Subnet.Contains(a.Addr()) || e.n.Subnet6.IsValid() && e.n.Subnet6.Contains(a.Addr()) {
					report("interface %s holds %s of network %s but is not its endpoint %s's (%s): a leftover", o.Name, a.Addr(), e.n.Name, e.ep.Name, l.Name)
				}
			}
		}
	}
	// Default routes via the carrier network (the first non-internal one).
	ceps, nets := containerEndpoints(snap.Files, eps[0].ep.Container)
	if i := routeCarrier(nets); i >= 0 && ceps[i].Netns == path {
		has4, has6, err := m.k.Veths.DefaultRoutes(path)
		if err != nil {
			report("default routes: %v", err)
		}
		for _, gw := range missingRoutes(nets[i], ceps[i], has4, has6) {
			report("no default route via %s (network %s)", gw, nets[i].Name)
		}
	}
	return bad
}

// inspectResolvers checks the resolver file of every named namespace the
// state names: present and current while it has endpoints, gone (if ours)
// once it has none.
func (m *Manager) inspectResolvers(snap *store.Snapshot) []string {
	names := map[string]bool{}
	for _, f := range snap.Files {
		for _, ep := range f.Endpoints {
			names[ep.Container] = true
		}
		for _, p := range f.PendingDelete {
			if p.Container != "" {
				names[p.Container] = true
			}
		}
	}
	var bad []string
	for c := range names {
		if filepath.Dir(c) != netns.RunDir {
			continue
		}
		ns := filepath.Base(c)
		file := resolvconf.Path(ns)
		eps, _ := containerEndpoints(snap.Files, c)
		cur, err := m.k.Audit.ReadResolver(ns)
		if err != nil {
			bad = append(bad, fmt.Sprintf("namespace %s: resolver file %s: %v", c, file, err))
			continue
		}
		want, search := wantResolver(snap, c)
		switch {
		case len(eps) > 0 && !wantsResolver(eps):
		case search == nil:
			if cur.Exists && cur.Ours {
				bad = append(bad, fmt.Sprintf("namespace %s: resolver file %s left behind with no network", c, file))
			}
		case !cur.Exists:
			bad = append(bad, fmt.Sprintf("namespace %s: resolver file %s missing", c, file))
		case !cur.Ours:
		case cur.Nameserver != want || !slices.Equal(cur.Search, search):
			bad = append(bad, fmt.Sprintf("namespace %s: resolver file %s says nameserver %s search %s, want nameserver %s search %s",
				c, file, cur.Nameserver, strings.Join(cur.Search, " "), want, strings.Join(search, " ")))
		}
	}
	return bad
}
