package agent

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/netalias/netalias/agent/ipam"
	"github.com/netalias/netalias/agent/link"
	"github.com/netalias/netalias/state"
)

// The agent side of the Docker network driver (package dockerdriver).
//
// Docker endpoints are recorded in the network file like any other, but
// nameless, with a state.Attachment of runtime "docker" (netwatch's
// state-dir source skips them: their names come from its Docker source).
// Docker asks the IPAM driver for an address before it creates the
// endpoint, so an address lives in a record of its own first:
//
//   - a reservation is a Docker record without a veth (HostVeth ""),
//     holding one or two addresses: made by DockerReserve, freed by
//     DockerRelease, never published, never pruned;
//   - an endpoint is a Docker record with its veth pair (both ends made in
//     the host namespace, the peer for Docker to move in) and Docker's
//     endpoint ID in Attachment.ID; Join records its sandbox path.
//
// DockerCreateEndpoint turns the reservations of its addresses into the
// endpoint; DockerDeleteEndpoint turns the endpoint back into a
// reservation of its addresses (Docker releases them next) and leaves the
// veth to the reaper. Every address on a network, Docker's or not, is in
// f.Endpoints, so allocAddrs (connect, CNI) and DockerReserve never hand
// out one address twice.
//
// Reconcile never drops a Docker record: Docker owns their lifetime. An
// endpoint whose veth vanished (its container's namespace died, a reboot)
// becomes a reservation until Docker's DeleteEndpoint and ReleaseAddress,
// which dockerd sends for stale endpoints when it starts. Records a
// vanished dockerd never releases are leaked: the plugin's collector finds
// them against the Docker API (DockerCollect), never from a driver
// callback, which would deadlock dockerd.

// DockerEndpointSpec asks for a Docker endpoint.
type DockerEndpointSpec struct {
	Network       string
	EndpointID    string // Docker's
	DockerNetwork string // Docker's network ID
	IPv4, IPv6    netip.Addr
	MAC           net.HardwareAddr // nil: 02:42 + the IPv4 address
}

// isDocker says whether ep is a Docker record (reservation or endpoint).
func isDocker(ep state.Endpoint) bool {
	return ep.Attachment != nil && ep.Attachment.Runtime == state.RuntimeDocker
}

// isReservation says whether ep is a Docker address reservation.
func isReservation(ep state.Endpoint) bool { return isDocker(ep) && ep.HostVeth == "" }

// dockerPeerName is the peer Docker moves into the container: "nap" + 12
// hex of the record's ID (Docker renames it ethN inside).
func dockerPeerName(id string) string { return "nap" + id[:12] }

// demoteVanished turns a Docker endpoint whose veth vanished into a
// reservation of its addresses (reconcile). It reports whether it did.
func demoteVanished(ep *state.Endpoint, links map[string]bool) bool {
	if ep.HostVeth == "" || links[ep.HostVeth] {
		return false
	}
	*ep = reservationOf(*ep)
	return true
}

// reservationOf is the reservation an endpoint leaves behind.
func reservationOf(ep state.Endpoint) state.Endpoint {
	return state.Endpoint{ID: ep.ID, IPv4: ep.IPv4, IPv6: ep.IPv6, Created: ep.Created,
		Attachment: &state.Attachment{Runtime: state.RuntimeDocker, Network: ep.Attachment.Network}}
}

// findDocker is the index of Docker endpoint endpointID on f, or -1.
func findDocker(f *state.File, endpointID string) int {
	return slices.IndexFunc(f.Endpoints, func(ep state.Endpoint) bool {
		return isDocker(ep) && ep.HostVeth != "" && ep.Attachment.ID == endpointID
	})
}

// DockerNetwork returns network name (without the lock: files are
// replaced atomically).
func (m *Manager) DockerNetwork(name string) (*state.Network, error) {
	snap, err := m.store.Load()
	if err != nil {
		return nil, err
	}
	f, err := lookup(snap, name)
	if err != nil {
		return nil, err
	}
	n := f.Network
	return &n, nil
}

// DockerChooseSubnet picks a subnet for a network Docker is about to
// create: IPv4 from the address pools, IPv6 a random ULA /64, overlapping
// no network, no host prefix and none of avoid. It reserves nothing.
func (m *Manager) DockerChooseSubnet(v6 bool, avoid []netip.Prefix) (netip.Prefix, error) {
	snap, err := m.store.Load()
	if err != nil {
		return netip.Prefix{}, err
	}
	host, err := m.k.Links.HostPrefixes()
	if err != nil {
		return netip.Prefix{}, err
	}
	taken := append(slices.Clone(host), avoid...)
	for _, f := range snap.Files {
		for _, q := range []netip.Prefix{f.Network.Subnet, f.Network.Subnet6} {
			if q.IsValid() {
				taken = append(taken, q)
			}
		}
	}
	if !v6 {
		return ipam.AllocSubnet(m.pools, taken)
	}
	for range 100 {
		p := ipam.RandomULA64()
		if !slices.ContainsFunc(taken, p.Overlaps) {
			return p, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("no free IPv6 /64 found")
}

// DockerRemoveNetwork removes a network the Docker driver created, with
// its Docker records. It fails, changing nothing, while endpoints that are
// not Docker's (connect, run, CNI) are attached.
func (m *Manager) DockerRemoveNetwork(name string) error {
	lk, snap, f, err := m.beginOn(name)
	if err != nil {
		return err
	}
	defer lk.Unlock()
	g, others := withoutDocker(f)
	if len(others) > 0 {
		return fmt.Errorf("network %q has %d endpoint(s) that are not Docker's attached (%s): disconnect them first", name, len(others), strings.Join(others, ", "))
	}
	// In memory only: removeNetwork deletes these veths with the network,
	// and a failure leaves the file (and Docker's records) as they were.
	snap.Files[name] = g
	if err := m.removeNetwork(snap, name, false); err != nil {
		snap.Files[name] = f
		return err
	}
	return nil
}

// withoutDocker is a copy of f without its Docker records, their veths
// added to the pending ones, and the names of the other endpoints.
func withoutDocker(f *state.File) (*state.File, []string) {
	g := *f
	g.Endpoints, g.PendingDelete = nil, slices.Clip(f.PendingDelete)
	var others []string
	for _, ep := range f.Endpoints {
		switch {
		case !isDocker(ep):
			others = append(others, ep.Name)
			g.Endpoints = append(g.Endpoints, ep)
		case ep.HostVeth != "":
			g.PendingDelete = append(g.PendingDelete, state.PendingVeth{Name: ep.HostVeth, Since: now()})
		}
	}
	return &g, others
}

// endpointLabel names an endpoint in messages: its name, or for Docker's
// nameless records the Docker endpoint or the addresses reserved.
func endpointLabel(ep state.Endpoint) string {
	switch {
	case !isDocker(ep):
		return ep.Name
	case ep.HostVeth != "":
		return fmt.Sprintf("docker endpoint %.12s", ep.Attachment.ID)
	}
	return fmt.Sprintf("docker reservation %s", strings.TrimSpace(addrString(ep.IPv4)+" "+addrString(ep.IPv6)))
}

// DockerReserve reserves an address on network for a Docker endpoint to
// come: want when valid (an error if it is taken, the gateway or outside
// the subnet), else the first free one of the family v6 says. Addresses
// remembered for connect's names (leases) are avoided while others are
// free.
func (m *Manager) DockerReserve(network string, v6 bool, want netip.Addr) (netip.Addr, error) {
	lk, _, f, err := m.beginOn(network)
	if err != nil {
		return netip.Addr{}, err
	}
	defer lk.Unlock()
	a, err := reserveAddr(f, v6, want)
	if err != nil {
		return a, err
	}
	r := state.Endpoint{ID: newID(), Created: now(), Attachment: &state.Attachment{Runtime: state.RuntimeDocker}}
	if v6 {
		r.IPv6 = a
	} else {
		r.IPv4 = a
	}
	old := f.Endpoints
	f.Endpoints = append(slices.Clip(f.Endpoints), r)
	if err := m.files.Write(f); err != nil {
		f.Endpoints = old
		return netip.Addr{}, fmt.Errorf("network %q: reserve %s: %w", network, a, err)
	}
	return a, nil
}

// reserveAddr chooses (or checks) an address of one family on f.
func reserveAddr(f *state.File, v6 bool, want netip.Addr) (netip.Addr, error) {
	n := f.Network
	sub, gw, what := n.Subnet, n.Gateway, "address"
	if v6 {
		sub, gw, what = n.Subnet6, n.Gateway6, "IPv6 address"
		if !sub.IsValid() {
			return netip.Addr{}, fmt.Errorf("network %q has no IPv6 subnet", n.Name)
		}
	}
	used := map[netip.Addr]bool{gw: true}
	for _, ep := range f.Endpoints {
		used[ep.IPv4], used[ep.IPv6] = true, true
	}
	if want.IsValid() {
		if err := ipam.CheckHost(what, sub, want); err != nil {
			return want, fmt.Errorf("network %q: %w", n.Name, err)
		}
		if want == gw {
			return want, fmt.Errorf("%s %s is the gateway of network %q", what, want, n.Name)
		}
		if used[want] {
			return want, fmt.Errorf("%s %s is already in use on network %q", what, want, n.Name)
		}
		return want, nil
	}
	mem := map[netip.Addr]bool{}
	for _, l := range f.Leases {
		mem[l.IPv4], mem[l.IPv6] = true, true
	}
	a, err := ipam.AllocAddr(sub, used, mem, netip.Addr{})
	if err != nil {
		return a, fmt.Errorf("network %q: %w", n.Name, err)
	}
	return a, nil
}

// DockerRelease frees a reservation. An address that is not reserved (or
// belongs to an endpoint in a sandbox), or a network that is gone, is not
// an error.
//
// An address of a Docker endpoint that is in no sandbox is released with
// the endpoint: Docker releases an endpoint's addresses after a failed
// CreateEndpoint and sends no DeleteEndpoint (libnetwork's
// Network.createEndpoint), so an endpoint whose answer Docker never got
// (the plugin was killed after the commit) is known to Docker no more.
// Its veth goes to the reaper, as with DockerDeleteEndpoint.
func (m *Manager) DockerRelease(network string, addr netip.Addr) error {
	lk, snap, err := m.begin()
	if err != nil {
		return err
	}
	defer lk.Unlock()
	f, ok := snap.Files[network]
	if !ok {
		return nil
	}
	eps, changed := releaseAddr(f.Endpoints, addr)
	var orphan state.Endpoint
	if i := slices.IndexFunc(f.Endpoints, func(ep state.Endpoint) bool {
		return isDocker(ep) && ep.HostVeth != "" && ep.Netns == "" && addr.IsValid() && (ep.IPv4 == addr || ep.IPv6 == addr)
	}); !changed && i >= 0 {
		orphan = f.Endpoints[i]
		eps = slices.Clone(f.Endpoints)
		eps[i] = reservationOf(orphan)
		eps, changed = releaseAddr(eps, addr)
	}
	if !changed {
		return nil
	}
	oldEps, oldPending := f.Endpoints, f.PendingDelete
	f.Endpoints = eps
	if orphan.HostVeth != "" {
		f.PendingDelete = append(slices.Clip(f.PendingDelete), state.PendingVeth{Name: orphan.HostVeth, Since: now()})
	}
	if err := m.files.Write(f); err != nil {
		f.Endpoints, f.PendingDelete = oldEps, oldPending
		return fmt.Errorf("network %q: release %s: %w", network, addr, err)
	}
	if orphan.HostVeth == "" {
		return nil
	}
	m.log.Info("docker released the address of an endpoint it never joined: endpoint removed", "network", network,
		"endpoint", orphan.Attachment.ID, "address", addr, "veth", orphan.HostVeth)
	if err := m.k.Pairs.UnplugHost(orphan.HostVeth, m.group); err != nil {
		m.deleteUnplugged(orphan.Attachment.ID, network, orphan.HostVeth, err)
	}
	lk.Unlock()
	m.afterPending()
	return nil
}

// releaseAddr drops addr from the reservation holding it (and the
// reservation when it holds nothing more). It never changes eps in place.
func releaseAddr(eps []state.Endpoint, addr netip.Addr) ([]state.Endpoint, bool) {
	i := slices.IndexFunc(eps, func(ep state.Endpoint) bool {
		return isReservation(ep) && (ep.IPv4 == addr || ep.IPv6 == addr)
	})
	if i < 0 || !addr.IsValid() {
		return eps, false
	}
	r := eps[i]
	if r.IPv4 == addr {
		r.IPv4 = netip.Addr{}
	} else {
		r.IPv6 = netip.Addr{}
	}
	out := slices.Clone(eps)
	if !r.IPv4.IsValid() && !r.IPv6.IsValid() {
		return slices.Delete(out, i, i+1), true
	}
	out[i] = r
	return out, true
}

// DockerCreateEndpoint records Docker endpoint spec.EndpointID on its
// addresses (normally reserved by DockerReserve) and makes its veth pair
// in the host namespace: the host end up on the bridge, the peer down for
// Docker to move in. On error nothing is left behind.
//
// Steps, as Connect's: intent (the host veth in pending_delete) → pair →
// commit (the endpoint replaces the intent and its reservations).
func (m *Manager) DockerCreateEndpoint(spec DockerEndpointSpec) (*state.Endpoint, error) {
	if err := state.ValidID(spec.EndpointID); err != nil {
		return nil, fmt.Errorf("docker endpoint: %w", err)
	}
	lk, _, f, err := m.beginOn(spec.Network)
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()
	n := f.Network
	if i := findDocker(f, spec.EndpointID); i >= 0 {
		ep := f.Endpoints[i]
		if ep.IPv4 == spec.IPv4 && ep.IPv6 == spec.IPv6 && (spec.MAC == nil || spec.MAC.String() == ep.MAC) && ep.Netns == "" {
			// The same request again, its answer lost (the plugin was
			// killed after the commit): the endpoint is the answer (its
			// veth is there: reconcile demotes one whose veth vanished).
			return &ep, nil
		}
		return nil, fmt.Errorf("docker endpoint %.12s already exists on network %q", spec.EndpointID, n.Name)
	}
	eps := f.Endpoints
	for _, a := range []netip.Addr{spec.IPv4, spec.IPv6} {
		if !a.IsValid() {
			continue
		}
		var claimed bool
		if eps, claimed = releaseAddr(eps, a); claimed {
			continue
		}
		// Not reserved (Docker's state outlived ours): it must be free.
		if _, err := reserveAddr(&state.File{Network: n, Endpoints: eps}, a.Is6(), a); err != nil {
			return nil, err
		}
	}
	if !spec.IPv4.IsValid() {
		return nil, fmt.Errorf("docker endpoint %.12s on network %q has no IPv4 address", spec.EndpointID, n.Name)
	}
	id := newID()
	mac := spec.MAC
	if mac == nil {
		mac = macFor(spec.IPv4)
	}
	p := link.Pair{HostName: vethName(id), PeerName: dockerPeerName(id), Bridge: n.Bridge, MTU: n.MTU, MAC: mac}
	ep := state.Endpoint{ID: id, IPv4: spec.IPv4, IPv6: spec.IPv6, MAC: mac.String(), HostVeth: p.HostName, Created: now(),
		Attachment: &state.Attachment{Runtime: state.RuntimeDocker, ID: spec.EndpointID, Network: spec.DockerNetwork}}

	old := *f
	restore := func() { f.Endpoints, f.PendingDelete = old.Endpoints, old.PendingDelete }
	t := newTxn(m.log, "docker-endpoint", fmt.Sprintf("create docker endpoint %.12s on network %q", spec.EndpointID, n.Name))
	err = t.step("intent", func() error {
		f.PendingDelete = append(slices.Clip(f.PendingDelete), state.PendingVeth{Name: p.HostName, Since: now(), Creating: true})
		return m.files.WriteIntent(f)
	}, func() error {
		restore()
		return m.files.Write(f)
	})
	if err == nil {
		err = t.step("pair", func() error { return m.k.Pairs.CreatePair(p) },
			func() error { return m.k.Links.DeleteLink(p.HostName) })
	}
	if err == nil {
		err = t.step("commit", func() error {
			f.Endpoints = append(slices.Clip(eps), ep)
			f.PendingDelete = old.PendingDelete
			return m.files.Write(f)
		}, nil) // the intent's undo rewrites the file
	}
	if err != nil {
		return nil, t.rollback(err)
	}
	return &ep, nil
}

// DockerDeleteEndpoint removes Docker endpoint endpointID: its record
// becomes a reservation of its addresses (until DockerRelease), its veth
// goes down, off the bridge, and to the reaper. ErrNotFound when it is
// already gone.
func (m *Manager) DockerDeleteEndpoint(network, endpointID string) error {
	lk, _, f, err := m.beginOn(network)
	if err != nil {
		return err
	}
	defer lk.Unlock()
	i := findDocker(f, endpointID)
	if i < 0 {
		return fmt.Errorf("docker endpoint %.12s on network %q %w", endpointID, network, ErrNotFound)
	}
	ep := f.Endpoints[i]
	oldEps, oldPending := f.Endpoints, f.PendingDelete
	f.Endpoints = slices.Clone(f.Endpoints)
	f.Endpoints[i] = reservationOf(ep)
	f.PendingDelete = append(slices.Clip(f.PendingDelete), state.PendingVeth{Name: ep.HostVeth, Since: now()})
	if err := m.files.Write(f); err != nil {
		f.Endpoints, f.PendingDelete = oldEps, oldPending
		return fmt.Errorf("docker endpoint %.12s on network %q: %w", endpointID, network, err)
	}
	// Committed: what fails now is the reaper's to finish.
	if err := m.k.Pairs.UnplugHost(ep.HostVeth, m.group); err != nil {
		m.deleteUnplugged(endpointID, network, ep.HostVeth, err)
	}
	lk.Unlock()
	m.afterPending()
	return nil
}

// DockerJoin records the sandbox (the container's namespace path, which
// may not exist yet) of Docker endpoint endpointID and returns the name
// of its veth peer for Docker to move in.
func (m *Manager) DockerJoin(network, endpointID, sandboxKey string) (string, error) {
	var peer string
	err := m.updateDocker(network, endpointID, func(ep *state.Endpoint) {
		ep.Netns, ep.Container = sandboxKey, sandboxKey
		peer = dockerPeerName(ep.ID)
	})
	return peer, err
}

// DockerLeave forgets the sandbox of Docker endpoint endpointID; the veth
// stays until DockerDeleteEndpoint.
func (m *Manager) DockerLeave(network, endpointID string) error {
	return m.updateDocker(network, endpointID, func(ep *state.Endpoint) { ep.Netns, ep.Container = "", "" })
}

func (m *Manager) updateDocker(network, endpointID string, change func(*state.Endpoint)) error {
	lk, _, f, err := m.beginOn(network)
	if err != nil {
		return err
	}
	defer lk.Unlock()
	i := findDocker(f, endpointID)
	if i < 0 {
		return fmt.Errorf("docker endpoint %.12s on network %q %w", endpointID, network, ErrNotFound)
	}
	ep := f.Endpoints[i]
	change(&ep)
	if ep.Netns == f.Endpoints[i].Netns {
		return nil
	}
	old := f.Endpoints
	f.Endpoints = slices.Clone(f.Endpoints)
	f.Endpoints[i] = ep
	if err := m.files.Write(f); err != nil {
		f.Endpoints = old
		return fmt.Errorf("docker endpoint %.12s on network %q: %w", endpointID, network, err)
	}
	return nil
}

// DockerCollect removes the Docker records of network that leaked says
// are leaked (their dockerd died or lost its state and will never delete
// them): endpoints go with their veth, reservations free their address.
// It is for a caller that asked the Docker API first, outside any driver
// callback (`netalias docker-plugin`'s collector); it returns how many it
// removed.
func (m *Manager) DockerCollect(network string, leaked func(state.Endpoint) bool) (int, error) {
	lk, _, f, err := m.beginOn(network)
	if err != nil {
		return 0, err
	}
	defer lk.Unlock()
	var keep []state.Endpoint
	var veths []string
	for _, ep := range f.Endpoints {
		if isDocker(ep) && leaked(ep) {
			if ep.HostVeth != "" {
				veths = append(veths, ep.HostVeth)
			}
			continue
		}
		keep = append(keep, ep)
	}
	removed := len(f.Endpoints) - len(keep)
	if removed == 0 {
		return 0, nil
	}
	oldEps, oldPending := f.Endpoints, f.PendingDelete
	f.Endpoints = keep
	for _, v := range veths {
		f.PendingDelete = append(slices.Clip(f.PendingDelete), state.PendingVeth{Name: v, Since: now()})
	}
	if err := m.files.Write(f); err != nil {
		f.Endpoints, f.PendingDelete = oldEps, oldPending
		return 0, err
	}
	for _, v := range veths {
		if err := m.k.Pairs.UnplugHost(v, m.group); err != nil {
			m.log.Warn("unplug of a leaked docker endpoint failed; the reaper deletes its veth", "veth", v, "err", err)
		}
	}
	lk.Unlock()
	if len(veths) > 0 {
		m.afterPending()
	}
	return removed, nil
}
