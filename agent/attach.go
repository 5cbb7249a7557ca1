package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/netalias/netalias/agent/ipam"
	"github.com/netalias/netalias/agent/link"
	"github.com/netalias/netalias/agent/names"
	"github.com/netalias/netalias/state"
)

// Runtime attachments: what a container runtime asks for through the CNI
// plugin (cnibackend.go adapts these to cni.Backend). They differ from
// connect in three ways: the runtime names the interface and keys the
// attachment (container ID + interface name, recorded in
// Endpoint.Attachment), one namespace may hold several attachments to one
// network, and no resolver file is written (runtimes write the
// container's resolv.conf from the Result).

// AttachSpec is a runtime's request to attach a namespace.
type AttachSpec struct {
	Network    string // netalias network
	CNINetwork string // the runtime's network name: GC is scoped to it
	// ContainerID and IfName key the attachment.
	ContainerID, IfName string
	Netns               string // namespace path
	Name                string // endpoint name, a DNS label
	// Fallback is the name the front uses when Name is taken (the CNI
	// plugin's short container ID): a retried request finds its
	// attachment under it while Name is still taken.
	Fallback string
	Aliases  []string
	// Static addresses; the zero Addr allocates (sticky by Name).
	IPv4, IPv6 netip.Addr
	MAC        net.HardwareAddr // nil: derived from the IPv4 address
}

// Attached is what Attach made or CheckAttachment found.
type Attached struct {
	Endpoint     state.Endpoint
	Network      state.Network
	DefaultRoute bool // default routes via the gateways were set
}

// Errors of runtime attachments, wrapped with %w.
var (
	ErrAttachmentExists  = errors.New("already exists")
	ErrNameTaken         = errors.New("endpoint name already in use")
	ErrAddressTaken      = errors.New("address already in use")
	ErrNoFreeAddress     = errors.New("no free address")
	ErrNotAttached       = errors.New("not attached")
	ErrAttachmentDamaged = errors.New("attachment damaged")
	ErrBadNetns          = errors.New("unusable network namespace")
	ErrBadRequest        = errors.New("invalid request")
	// ErrCannotAttach: the network cannot serve an attach now;
	// ErrNetworkDegraded: and its existing attachments are impaired too.
	ErrCannotAttach    = errors.New("network cannot serve an attach")
	ErrNetworkDegraded = errors.New("network degraded")
)

// Inspector reads back what an attachment made, for CheckAttachment. The
// real kernel's Veths and the fake kernel implement it.
type Inspector interface {
	HostLinkInfo(name string) (link.HostLink, error)
	IfaceInfo(nsPath, ifname string) (link.Iface, error)
}

func (realVeths) HostLinkInfo(name string) (link.HostLink, error) { return link.HostLinkInfo(name) }
func (realVeths) IfaceInfo(nsPath, ifname string) (link.Iface, error) {
	return link.IfaceInfo(nsPath, ifname)
}

func isAttachment(ep state.Endpoint, containerID, ifname string) bool {
	return ep.Attachment != nil && ep.Attachment.Runtime == state.RuntimeCNI &&
		ep.Attachment.ID == containerID && ep.IfName == ifname
}

func attachmentIndex(f *state.File, containerID, ifname string) int {
	return slices.IndexFunc(f.Endpoints, func(ep state.Endpoint) bool { return isAttachment(ep, containerID, ifname) })
}

// Attach makes a runtime attachment: a veth named spec.IfName inside
// spec.Netns, addresses, MTU and default routes as connect makes them. An
// existing attachment with that key fails with ErrAttachmentExists unless
// it is whole and what spec asks for (then it is returned: a retried
// ADD); so does an existing interface of that name. On any error nothing
// is left behind and the state is unchanged.
func (m *Manager) Attach(spec AttachSpec) (*Attached, error) {
	what := fmt.Sprintf("attachment %s/%s", spec.ContainerID, spec.IfName)
	if err := names.Label("endpoint name", spec.Name); err != nil {
		return nil, fmt.Errorf("%s: %w: %w", what, ErrBadRequest, err)
	}
	if _, err := m.k.Namespaces.Resolve(spec.Netns); err != nil {
		return nil, fmt.Errorf("%s: %w: %w", what, ErrBadNetns, err)
	}
	lk, snap, f, err := m.beginOn(spec.Network)
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()
	n := f.Network
	if i := attachmentIndex(f, spec.ContainerID, spec.IfName); i >= 0 && retried(f, i, spec) {
		// The runtime asks again for what it got: an ADD whose answer it
		// never read (the plugin was killed after the commit). A whole
		// attachment is the answer; a damaged one is refused below.
		if a, err := m.CheckAttachment(spec.Network, spec.ContainerID, spec.IfName); err == nil {
			// The killed ADD may have died before its event: listeners
			// (the agent daemon, a cluster publisher) hear it now; a
			// second connect event for one endpoint changes nothing.
			m.emit(epEvent("connect", a.Network, a.Endpoint, ""))
			return a, nil
		}
	}
	if err := checkAttachFree(f, spec); err != nil {
		return nil, err
	}
	var ip4, ip6 netip.Addr
	if f.Network.Cluster != nil { // from this host's blocks (cluster.go)
		ip4, err = m.allocClusterAddr(f, spec.Name, connectRequest{ip4: spec.IPv4})
		n = f.Network
	} else {
		ip4, ip6, err = allocAddrs(f, spec.Name, connectRequest{ip4: spec.IPv4, ip6: spec.IPv6})
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoFreeAddress, err)
	}
	id := newID()
	route := wantDefaultRoute(snap.Files, n, spec.Netns)
	v := planVeth(n, id, spec.Netns, ip4, ip6, route)
	v.IfName = spec.IfName
	if spec.MAC != nil {
		v.MAC = spec.MAC
	}
	ep := state.Endpoint{
		ID: id, Name: spec.Name, Aliases: spec.Aliases, IPv4: ip4, IPv6: ip6, MAC: v.MAC.String(),
		HostVeth: v.HostName, IfName: spec.IfName, Netns: spec.Netns, Container: spec.Netns, Created: now(),
		Attachment: &state.Attachment{Runtime: state.RuntimeCNI, ID: spec.ContainerID, Network: spec.CNINetwork},
	}

	old := *f
	t := newTxn(m.log, "attach", fmt.Sprintf("attach %s in %s to network %q", what, spec.Netns, n.Name))
	err = t.step("intent", func() error {
		f.PendingDelete = append(slices.Clip(f.PendingDelete), state.PendingVeth{Name: v.HostName, Since: now(), Creating: true})
		return m.files.WriteIntent(f) // no fsync: see Connect
	}, func() error {
		f.Endpoints, f.PendingDelete, f.Leases = old.Endpoints, old.PendingDelete, old.Leases
		return m.files.Write(f)
	})
	if err == nil {
		err = t.step("attach", func() error {
			_, err := m.k.Veths.Attach(v)
			if errors.Is(err, link.ErrExists) {
				return kindError{fmt.Errorf("interface %s already exists in %s", spec.IfName, spec.Netns), ErrAttachmentExists}
			}
			return err
		}, func() error { return m.k.Links.DeleteLink(v.HostName) })
	}
	if err == nil {
		err = t.step("commit", func() error {
			f.Endpoints = append(slices.Clip(f.Endpoints), ep)
			f.PendingDelete = old.PendingDelete
			f.Leases = cloneLeases(old.Leases)
			f.Leases[spec.Name] = state.Lease{IPv4: ip4, IPv6: ip6}
			return m.files.Write(f)
		}, nil)
	}
	if err != nil {
		return nil, t.rollback(err)
	}
	m.emit(epEvent("connect", n, ep, ""))
	return &Attached{Endpoint: ep, Network: n, DefaultRoute: route}, nil
}

// retried says whether attachment i of f is what spec asks for: as
// sameAttach, or made under spec.Fallback while spec.Name is taken by
// another endpoint (the first request fell back to it).
func retried(f *state.File, i int, spec AttachSpec) bool {
	ep := f.Endpoints[i]
	if sameAttach(ep, spec) {
		return true
	}
	if spec.Fallback == "" || ep.Name != spec.Fallback {
		return false
	}
	taken := slices.ContainsFunc(f.Endpoints, func(o state.Endpoint) bool { return o.Name == spec.Name })
	fb := spec
	fb.Name = spec.Fallback
	return taken && sameAttach(ep, fb)
}

// sameAttach says whether the attachment ep is what spec asks for: the
// same namespace, name, aliases, network and the static addresses and
// MAC, when spec gives them.
func sameAttach(ep state.Endpoint, spec AttachSpec) bool {
	return ep.Netns == spec.Netns && ep.Name == spec.Name && slices.Equal(ep.Aliases, spec.Aliases) &&
		ep.Attachment.Network == spec.CNINetwork &&
		(!spec.IPv4.IsValid() || spec.IPv4 == ep.IPv4) && (!spec.IPv6.IsValid() || spec.IPv6 == ep.IPv6) &&
		(spec.MAC == nil || spec.MAC.String() == ep.MAC)
}

// checkAttachFree refuses a key, a name or a static address already taken
// on f, and static addresses outside the subnets.
func checkAttachFree(f *state.File, spec AttachSpec) error {
	n := f.Network
	for _, ep := range f.Endpoints {
		if isAttachment(ep, spec.ContainerID, spec.IfName) {
			return fmt.Errorf("attachment %s/%s already exists on network %q: %w", spec.ContainerID, spec.IfName, n.Name, ErrAttachmentExists)
		}
		if ep.Name != "" && ep.Name == spec.Name {
			return fmt.Errorf("endpoint name %q on network %q is used by %s: %w", spec.Name, n.Name, ep.Netns, ErrNameTaken)
		}
		for _, a := range []netip.Addr{spec.IPv4, spec.IPv6} {
			if a.IsValid() && (a == ep.IPv4 || a == ep.IPv6) {
				return fmt.Errorf("address %s on network %q is used by endpoint %q: %w", a, n.Name, ep.Name, ErrAddressTaken)
			}
		}
	}
	for _, s := range []struct {
		a   netip.Addr
		sub netip.Prefix
		gw  netip.Addr
	}{{spec.IPv4, n.Subnet, n.Gateway}, {spec.IPv6, n.Subnet6, n.Gateway6}} {
		if !s.a.IsValid() {
			continue
		}
		if !s.sub.IsValid() {
			return fmt.Errorf("address %s: network %q has no IPv6 subnet: %w", s.a, n.Name, ErrBadRequest)
		}
		if err := ipam.CheckHost("address", s.sub, s.a); err != nil {
			return fmt.Errorf("network %q: %w: %w", n.Name, ErrBadRequest, err)
		}
		if s.a == s.gw {
			return fmt.Errorf("address %s is the gateway of network %q: %w", s.a, n.Name, ErrAddressTaken)
		}
	}
	return nil
}

// Detach removes a runtime attachment: its veth, addresses and state
// record (its lease stays, as with disconnect). No such attachment is not
// an error; the namespace may be gone. An unknown network is ErrNotFound.
func (m *Manager) Detach(network, containerID, ifname string) error {
	lk, snap, f, err := m.beginOn(network)
	if err != nil {
		return err
	}
	defer lk.Unlock()
	idx := attachmentIndex(f, containerID, ifname)
	if idx < 0 {
		return nil
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

// GCAttachments removes every runtime attachment of network made through
// cniNetwork whose key keep refuses, continuing past errors (joined).
func (m *Manager) GCAttachments(network, cniNetwork string, keep func(containerID, ifname string) bool) error {
	lk, snap, err := m.begin()
	if err != nil {
		return err
	}
	f, err := lookup(snap, network)
	if err != nil {
		lk.Unlock()
		return err
	}
	var doomed []state.Endpoint
	for _, ep := range f.Endpoints {
		if a := ep.Attachment; a != nil && a.Runtime == state.RuntimeCNI && a.Network == cniNetwork && !keep(a.ID, ep.IfName) {
			doomed = append(doomed, ep)
		}
	}
	var errs []error
	var gone []state.Endpoint
	for _, ep := range doomed {
		idx := slices.IndexFunc(f.Endpoints, func(e state.Endpoint) bool { return e.ID == ep.ID })
		if err := m.detach(snap, f, idx); err != nil {
			errs = append(errs, fmt.Errorf("attachment %s/%s: %w", ep.Attachment.ID, ep.IfName, err))
			continue
		}
		gone = append(gone, ep)
	}
	lk.Unlock()
	for _, ep := range gone {
		m.emit(epEvent("disconnect", f.Network, ep, "garbage collected"))
	}
	if len(gone) > 0 {
		m.afterPending()
	}
	return errors.Join(errs...)
}

// CheckAttachment verifies that a runtime attachment is whole: its
// record, its host veth (on the bridge, up), the container interface's
// addresses and MAC, its default routes when it carries the container's,
// and the firewall rules. It reads without the lock. Errors: ErrNotFound
// (network), ErrNotAttached (no record), ErrAttachmentDamaged naming every
// missing part.
func (m *Manager) CheckAttachment(network, containerID, ifname string) (*Attached, error) {
	snap, err := m.store.Load()
	if err != nil {
		return nil, err
	}
	f, err := lookup(snap, network)
	if err != nil {
		return nil, err
	}
	idx := attachmentIndex(f, containerID, ifname)
	if idx < 0 {
		return nil, fmt.Errorf("network %q has no attachment %s/%s: %w", network, containerID, ifname, ErrNotAttached)
	}
	n, ep := f.Network, f.Endpoints[idx]
	a := &Attached{Endpoint: ep, Network: n}
	insp, ok := m.k.Veths.(Inspector)
	if !ok {
		return nil, fmt.Errorf("check attachment %s/%s: this kernel cannot be inspected", containerID, ifname)
	}
	var missing []string
	hl, err := insp.HostLinkInfo(ep.HostVeth)
	switch {
	case link.NotFound(err):
		missing = append(missing, fmt.Sprintf("host veth %s is gone", ep.HostVeth))
	case err != nil:
		return nil, err
	case hl.Master != n.Bridge:
		missing = append(missing, fmt.Sprintf("host veth %s is not on bridge %s", ep.HostVeth, n.Bridge))
	case !hl.Up:
		missing = append(missing, fmt.Sprintf("host veth %s is down", ep.HostVeth))
	}
	in, err := insp.IfaceInfo(ep.Netns, ep.IfName)
	if err != nil {
		missing = append(missing, fmt.Sprintf("interface %s in %s is gone (%v)", ep.IfName, ep.Netns, err))
	} else {
		for _, p := range epPrefixes(n, ep) {
			if !slices.Contains(in.Addrs, p) {
				missing = append(missing, fmt.Sprintf("address %s is missing on %s in %s", p, ep.IfName, ep.Netns))
			}
		}
		if in.MAC.String() != ep.MAC {
			missing = append(missing, fmt.Sprintf("%s in %s has MAC %s, recorded %s", ep.IfName, ep.Netns, in.MAC, ep.MAC))
		}
		eps, nets := containerEndpoints(snap.Files, ep.Container)
		if i := routeCarrier(nets); i >= 0 && eps[i].ID == ep.ID {
			a.DefaultRoute = true
			for _, gw := range missingRoutes(n, ep, false, false) {
				if !slices.Contains(in.Routes, gw) {
					missing = append(missing, fmt.Sprintf("default route via %s is missing on %s in %s", gw, ep.IfName, ep.Netns))
				}
			}
		}
	}
	if ok, err := m.k.Firewall.Healthy(m.table, fwNets(snap.Files)); err != nil {
		return nil, fmt.Errorf("check the firewall rules of network %q: %w", network, err)
	} else if !ok {
		missing = append(missing, fmt.Sprintf("the firewall rules of network %q (table %s) are missing", network, m.table))
	}
	if len(missing) > 0 {
		return a, fmt.Errorf("network %q, attachment %s/%s: %s: %w", network, containerID, ifname, strings.Join(missing, "; "), ErrAttachmentDamaged)
	}
	return a, nil
}

// epPrefixes are an endpoint's addresses with the subnets' lengths.
func epPrefixes(n state.Network, ep state.Endpoint) []netip.Prefix {
	var out []netip.Prefix
	if ep.IPv4.IsValid() {
		out = append(out, netip.PrefixFrom(ep.IPv4, n.Subnet.Bits()))
	}
	if ep.IPv6.IsValid() {
		out = append(out, netip.PrefixFrom(ep.IPv6, n.Subnet6.Bits()))
	}
	return out
}

// AttachStatus tells whether an Attach to network could be served now:
// ErrNotFound for an unknown network; ErrCannotAttach when the state
// directory is not writable or the bridge is gone and cannot be restored
// (ErrNetworkDegraded when endpoints are on it); ErrNoFreeAddress.
func (m *Manager) AttachStatus(network string) error {
	probe, err := os.CreateTemp(state.NetworksPath(m.store.Dir), ".status-*")
	if err != nil {
		return fmt.Errorf("state directory %s is not writable: %w: %w", m.store.Dir, ErrCannotAttach, err)
	}
	probe.Close()
	os.Remove(probe.Name())
	lk, snap, err := m.begin() // restores a missing bridge if it can
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCannotAttach, err)
	}
	defer lk.Unlock()
	f, err := lookup(snap, network)
	if err != nil {
		return err
	}
	links, err := m.k.Links.LinkNames()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCannotAttach, err)
	}
	if !links[f.Network.Bridge] {
		kind := ErrCannotAttach
		if len(f.Endpoints) > 0 {
			kind = ErrNetworkDegraded
		}
		return fmt.Errorf("bridge %s of network %q is gone and could not be restored: %w", f.Network.Bridge, network, kind)
	}
	if _, _, err := allocAddrs(f, "", connectRequest{}); err != nil {
		return fmt.Errorf("%w: %w", ErrNoFreeAddress, err)
	}
	return nil
}
