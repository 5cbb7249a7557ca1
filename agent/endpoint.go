package agent

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"

	"github.com/netalias/netalias/agent/events"
	"github.com/netalias/netalias/agent/netns"
	"github.com/netalias/netalias/agent/store"
	"github.com/netalias/netalias/state"
)

// ConnectSpec is what `connect` asks for.
type ConnectSpec struct {
	Network string
	Netns   string // name under /run/netns, path, or PID
	Name    string // endpoint name; default: the namespace's name
	Aliases []string
	Links   []state.Link
	IP      string
	IP6     string
	Owner   *state.Owner // set by Run: reclaim when this process is gone
}

// Connect attaches a namespace to a network. On error nothing is left
// behind and the state is unchanged.
//
// Steps: intent (the veth name in pending_delete, written without fsync,
// before the veth exists: a crash after it leaves a veth the next
// reconcile deletes) → attach (veth, addresses, routes) → commit (the
// endpoint and its lease replace the intent) → resolver file.
func (m *Manager) Connect(spec ConnectSpec) (*state.Endpoint, error) {
	ref, err := m.k.Namespaces.Resolve(spec.Netns)
	if err != nil {
		return nil, err
	}
	name, err := endpointName(spec, ref)
	if err != nil {
		return nil, err
	}
	req, err := checkConnectSpec(spec)
	if err != nil {
		return nil, err
	}

	lk, snap, err := m.begin()
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()
	f, err := lookup(snap, spec.Network)
	if err != nil {
		if f, err = m.joinClusterNetwork(snap, spec.Network, err); err != nil {
			return nil, err
		}
	}
	if err := checkFree(f, ref.Path, name, m.k.Namespaces.Same); err != nil {
		return nil, err
	}
	var ip4, ip6 netip.Addr
	if f.Network.Cluster != nil {
		ip4, err = m.allocClusterAddr(f, name, req)
	} else {
		ip4, ip6, err = allocAddrs(f, name, req)
	}
	if err != nil {
		return nil, err
	}
	n := f.Network
	id := newID()
	v := planVeth(n, id, ref.Path, ip4, ip6, wantDefaultRoute(snap.Files, n, ref.Path))
	v.Group = m.liveGroup() // so that a veth no record names is known as ours
	ep := state.Endpoint{
		ID: id, Name: name, Aliases: spec.Aliases, Links: spec.Links,
		IPv4: ip4, IPv6: ip6, MAC: v.MAC.String(), HostVeth: v.HostName,
		Netns: ref.Path, Container: ref.Path, Created: now(), Owner: spec.Owner,
	}

	old := *f // what the rollback restores (slices are never appended in place)
	restore := func() { f.Endpoints, f.PendingDelete, f.Leases = old.Endpoints, old.PendingDelete, old.Leases }
	t := newTxn(m.log, "connect", fmt.Sprintf("connect %s to network %q", ref.Path, n.Name))
	err = t.step("intent", func() error {
		f.PendingDelete = append(slices.Clip(f.PendingDelete), state.PendingVeth{Name: v.HostName, Since: now(), Creating: true, Container: ref.Path})
		// No fsync: a killed process loses nothing, and a machine crash
		// takes the veth with it.
		return m.files.WriteIntent(f)
	}, func() error {
		restore()
		return m.files.Write(f)
	})
	if err == nil {
		err = t.step("attach", func() (err error) {
			ep.IfName, err = m.k.Veths.Attach(v)
			return err
		}, func() error { return m.k.Links.DeleteLink(v.HostName) })
	}
	if err == nil {
		err = t.step("commit", func() error {
			f.Endpoints = append(slices.Clip(f.Endpoints), ep)
			f.PendingDelete = old.PendingDelete
			f.Leases = cloneLeases(old.Leases)
			f.Leases[name] = state.Lease{IPv4: ep.IPv4, IPv6: ep.IPv6}
			return m.files.Write(f)
		}, nil) // the intent's undo rewrites the file
	}
	if err == nil {
		err = t.step("resolver", func() error {
			return m.updateResolver(snap, ref.Path)
		}, func() error {
			restore()
			return m.updateResolver(snap, ref.Path)
		})
	}
	if err != nil {
		return nil, t.rollback(err)
	}
	m.emit(epEvent("connect", n, ep, ""))
	return &ep, nil
}

func cloneLeases(m map[string]state.Lease) map[string]state.Lease {
	c := make(map[string]state.Lease, len(m)+1)
	for k, v := range m {
		c[k] = v
	}
	return c
}

// Disconnect detaches a namespace from a network. The endpoint is
// unreachable and gone from the state when it returns; the host veth's
// deletion (an RCU grace period) is left to the reaper.
func (m *Manager) Disconnect(network, nsArg string) error {
	ref, rerr := m.k.Namespaces.Resolve(nsArg)
	lk, snap, f, err := m.beginOn(network)
	if err != nil {
		return err
	}
	defer lk.Unlock()
	idx := findEndpoint(f, ref, rerr == nil, nsArg)
	if idx < 0 {
		if rerr != nil {
			return rerr
		}
		return fmt.Errorf("namespace %s is not connected to network %q", ref.Path, network)
	}
	ep := f.Endpoints[idx]
	if err := m.detach(snap, f, idx); err != nil {
		return err
	}
	lk.Unlock()
	m.emit(epEvent("disconnect", f.Network, ep, ""))
	m.afterPending()
	return nil
}

// detach removes endpoint idx of f from the state (its veth recorded as
// pending deletion), then unplugs it and refreshes the container's
// resolver file and default routes. The state is written first: it is the
// commit point. What fails after it is logged, not undone: the endpoint is
// gone from the state and the reaper deletes its veth whatever state the
// unplug left it in.
func (m *Manager) detach(snap *store.Snapshot, f *state.File, idx int) error {
	ep := f.Endpoints[idx]
	oldEps, oldPending := f.Endpoints, f.PendingDelete
	f.Endpoints = slices.Delete(slices.Clone(f.Endpoints), idx, idx+1)
	f.PendingDelete = append(slices.Clip(f.PendingDelete), state.PendingVeth{Name: ep.HostVeth, Since: now(), Container: ep.Container})
	if err := point("disconnect", "state", func() error { return m.files.Write(f) }); err != nil {
		f.Endpoints, f.PendingDelete = oldEps, oldPending
		return err
	}
	point("disconnect", "unplug", func() error {
		if err := m.k.Veths.Unplug(ep.HostVeth, ep.Netns, ep.IfName, parkName(ep.ID), m.group); err != nil {
			m.deleteUnplugged(ep.Name, f.Network.Name, ep.HostVeth, err)
		}
		return nil
	})
	point("disconnect", "resolver", func() error {
		if ep.Attachment != nil {
			return nil // runtime attachments have no resolver file
		}
		if err := m.updateResolver(snap, ep.Container); err != nil {
			m.log.Warn("resolver file not updated", "container", ep.Container, "err", err)
		}
		return nil
	})
	point("disconnect", "routes", func() error {
		if err := m.fixDefaultRoute(snap, ep.Container); err != nil {
			m.log.Warn("default route not restored", "container", ep.Container, "err", err)
		}
		return nil
	})
	return nil
}

// updateResolver rewrites (or removes) /etc/netns/NAME/resolv.conf of a
// named container from its current networks.
func (m *Manager) updateResolver(snap *store.Snapshot, container string) error {
	if filepath.Dir(container) != netns.RunDir {
		return nil // only named namespaces have an /etc/netns directory
	}
	name := filepath.Base(container)
	eps, all := containerEndpoints(snap.Files, container)
	var nets []state.Network
	for i, n := range all {
		if eps[i].Attachment == nil { // the runtime writes resolv.conf for its own
			nets = append(nets, n)
		}
	}
	if len(nets) == 0 {
		return m.k.Resolver.Remove(name)
	}
	search := make([]string, 0, len(nets))
	for _, n := range nets {
		search = append(search, n.Name)
	}
	return m.k.Resolver.Write(name, nets[0].Gateway.String(), search)
}

// fixDefaultRoute gives a container that just lost the network carrying
// its default routes new ones via its next non-internal network, for each
// family (IPv4, IPv6) it has an address in there.
func (m *Manager) fixDefaultRoute(snap *store.Snapshot, container string) error {
	eps, nets := containerEndpoints(snap.Files, container)
	i := routeCarrier(nets)
	if i < 0 {
		return nil
	}
	has4, has6, err := m.k.Veths.DefaultRoutes(eps[i].Netns)
	if err != nil {
		return err
	}
	for _, gw := range missingRoutes(nets[i], eps[i], has4, has6) {
		if err := m.k.Veths.AddDefaultRoute(eps[i].Netns, eps[i].IfName, gw); err != nil {
			return err
		}
	}
	return nil
}

func epEvent(action string, n state.Network, ep state.Endpoint, reason string) events.Event {
	return events.Event{Time: now(), Type: "endpoint", Action: action, Network: n.Name,
		Endpoint: ep.Name, Aliases: ep.Aliases, IPv4: addrString(ep.IPv4), IPv6: addrString(ep.IPv6), Netns: ep.Netns, Reason: reason}
}

// addrString is a's text, "" for the zero address (events omit it).
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// afterPending hands veths pending deletion to the reaper.
func (m *Manager) afterPending() {
	if m.reap != nil {
		m.reap()
		return
	}
	if err := m.Reap(); err != nil {
		m.log.Warn("reap", "err", err)
	}
}

// deleteUnplugged handles an unplug that failed after a detach committed:
// the endpoint may still be reachable, so its pair is deleted now rather
// than left to the reaper (which still deletes it if this fails too).
func (m *Manager) deleteUnplugged(endpoint, network, veth string, err error) {
	m.log.Warn("unplug failed; deleting the veth at once", "endpoint", endpoint, "network", network, "veth", veth, "err", err)
	if derr := m.k.Links.DeleteLink(veth); derr != nil {
		m.log.Error("veth left for the reaper", "veth", veth, "err", derr)
	}
}
