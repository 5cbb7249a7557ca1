package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"

	"github.com/netalias/netalias/agent/events"
	"github.com/netalias/netalias/agent/firewall"
	"github.com/netalias/netalias/agent/ipam"
	"github.com/netalias/netalias/agent/link"
	"github.com/netalias/netalias/agent/names"
	"github.com/netalias/netalias/agent/store"
	"github.com/netalias/netalias/state"
)

// NetworkSpec is what `network create` asks for. Empty fields are chosen.
type NetworkSpec struct {
	Name     string
	Subnet   string
	Gateway  string
	IPv6     bool
	Subnet6  string
	Gateway6 string
	Internal bool
	MTU      int
}

// ErrNotFound marks unknown networks and endpoints.
var ErrNotFound = errors.New("not found")

// bridgeOf describes network n's bridge: its gateways carry the subnets'
// prefix lengths.
func bridgeOf(n state.Network) link.Bridge {
	br := link.Bridge{Name: n.Bridge, MTU: n.MTU}
	if n.Subnet.IsValid() && n.Gateway.IsValid() {
		br.Gateway = netip.PrefixFrom(n.Gateway, n.Subnet.Bits())
	}
	if n.Subnet6.IsValid() && n.Gateway6.IsValid() {
		br.Gateway6 = netip.PrefixFrom(n.Gateway6, n.Subnet6.Bits())
	}
	return br
}

// CreateNetwork creates a bridge network. On error nothing is left behind.
func (m *Manager) CreateNetwork(spec NetworkSpec) (*state.Network, error) {
	if err := names.Label("network name", spec.Name); err != nil {
		return nil, err
	}
	if spec.MTU == 0 {
		// Like the uplink: a bridge MTU above the host's default-route
		// interface breaks large outbound packets (cloud VMs run 1400-1460).
		spec.MTU = link.UplinkMTU(1500)
	}
	if spec.MTU < 68 || spec.MTU > 65535 {
		return nil, fmt.Errorf("invalid --mtu %d: must be between 68 and 65535", spec.MTU)
	}
	if (spec.Subnet6 != "" || spec.Gateway6 != "") && !spec.IPv6 {
		spec.IPv6 = true
	}
	if spec.Gateway != "" && spec.Subnet == "" {
		return nil, errors.New("--gateway needs --subnet")
	}
	if spec.Gateway6 != "" && spec.Subnet6 == "" {
		return nil, errors.New("--gateway6 needs --subnet6")
	}
	var sub, sub6 netip.Prefix
	var gw, gw6 netip.Addr
	var err error
	if spec.Subnet != "" {
		if sub, err = netip.ParsePrefix(spec.Subnet); err != nil {
			return nil, fmt.Errorf("invalid --subnet %q: not a CIDR like 10.77.0.0/24", spec.Subnet)
		}
		gw = ipam.FirstHost(sub)
		if spec.Gateway != "" {
			if gw, err = netip.ParseAddr(spec.Gateway); err != nil {
				return nil, fmt.Errorf("invalid --gateway %q: not an IP address", spec.Gateway)
			}
		}
		if err := ipam.CheckSubnet("--subnet", sub, gw, true); err != nil {
			return nil, err
		}
	}
	if spec.Subnet6 != "" {
		if sub6, err = netip.ParsePrefix(spec.Subnet6); err != nil {
			return nil, fmt.Errorf("invalid --subnet6 %q: not a CIDR like fd00:1::/64", spec.Subnet6)
		}
		gw6 = ipam.FirstHost(sub6)
		if spec.Gateway6 != "" {
			if gw6, err = netip.ParseAddr(spec.Gateway6); err != nil {
				return nil, fmt.Errorf("invalid --gateway6 %q: not an IP address", spec.Gateway6)
			}
		}
		if err := ipam.CheckSubnet("--subnet6", sub6, gw6, false); err != nil {
			return nil, err
		}
	} else if spec.IPv6 {
		sub6 = ipam.RandomULA64()
		gw6 = ipam.FirstHost(sub6)
	}

	lk, snap, err := m.begin()
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()
	if _, ok := snap.Files[spec.Name]; ok {
		return nil, fmt.Errorf("network %q already exists", spec.Name)
	}
	if err := snap.CorruptFor(spec.Name); err != nil {
		return nil, fmt.Errorf("network %q cannot be created: %w", spec.Name, err)
	}
	host, err := link.HostPrefixes()
	if err != nil {
		return nil, err
	}
	taken := append([]netip.Prefix(nil), host...)
	for _, f := range snap.Files {
		for _, p := range []netip.Prefix{f.Network.Subnet, f.Network.Subnet6} {
			if p.IsValid() {
				taken = append(taken, p)
			}
		}
	}
	if sub.IsValid() {
		if err := overlapError("--subnet", sub, snap, host); err != nil {
			return nil, err
		}
	} else {
		if sub, err = ipam.AllocSubnet(m.pools, taken); err != nil {
			return nil, err
		}
		gw = ipam.FirstHost(sub)
	}
	if sub6.IsValid() {
		if err := overlapError("--subnet6", sub6, snap, host); err != nil {
			return nil, err
		}
	}

	id := newID()
	n := state.Network{
		ID: id, Name: spec.Name, Bridge: bridgeName(id),
		Subnet: sub, Gateway: gw, Subnet6: sub6, Gateway6: gw6,
		Internal: spec.Internal, MTU: spec.MTU, Created: now(),
	}
	if !sub6.IsValid() {
		n.Gateway6 = netip.Addr{}
	}
	br := bridgeOf(n)
	// The file comes first: if this process dies before the end, the next
	// reconcile finds a network without its bridge and completes it
	// (restoreBridge, firewall), rather than a bridge nobody knows.
	f := &state.File{Version: state.Version, Network: n, Endpoints: []state.Endpoint{}}
	if err := m.store.Write(f); err != nil {
		m.store.Remove(n.Name)
		return nil, err
	}
	bridgeMade := false
	rollback := func(err error) (*state.Network, error) {
		delete(snap.Files, n.Name)
		if bridgeMade {
			link.DeleteLink(n.Bridge)
		}
		m.syncFirewall(snap)
		m.store.Remove(n.Name)
		return nil, err
	}
	if err := link.CreateBridge(br); err != nil {
		return rollback(err)
	}
	bridgeMade = true
	snap.Files[n.Name] = f
	if err := m.syncFirewall(snap); err != nil {
		return rollback(err)
	}
	if err := failpoint("create:firewall " + n.Bridge); err != nil {
		return rollback(err)
	}
	if !n.Internal {
		if err := link.EnableForwarding(sub6.IsValid()); err != nil {
			return rollback(fmt.Errorf("enable IP forwarding: %w", err))
		}
	}
	m.emit(events.Event{Time: now(), Type: "network", Action: "create", Network: n.Name, Subnet: n.Subnet.String()})
	return &n, nil
}

// overlapError names what a requested subnet collides with.
func overlapError(flag string, p netip.Prefix, snap *store.Snapshot, host []netip.Prefix) error {
	for _, name := range snap.Names() {
		n := snap.Files[name].Network
		for _, q := range []netip.Prefix{n.Subnet, n.Subnet6} {
			if q.IsValid() && q.Overlaps(p) {
				return fmt.Errorf("%s %s overlaps network %q (%s)", flag, p, name, q)
			}
		}
	}
	for _, q := range host {
		if q.Overlaps(p) {
			return fmt.Errorf("%s %s overlaps %s, already in use on this host (address or route)", flag, p, q)
		}
	}
	return nil
}

// RemoveNetwork removes a network: its bridge, its rules, its file.
// Attached endpoints make it fail unless force, which disconnects them.
func (m *Manager) RemoveNetwork(name string, force bool) error {
	lk, snap, err := m.begin()
	if err != nil {
		return err
	}
	defer lk.Unlock()
	f, err := lookup(snap, name)
	if err != nil {
		return err
	}
	if len(f.Endpoints) > 0 && !force {
		var eps []string
		for _, e := range f.Endpoints {
			eps = append(eps, e.Name)
		}
		return fmt.Errorf("network %q has %d endpoint(s) attached (%s): disconnect them first or use --force", name, len(eps), strings.Join(eps, ", "))
	}
	// Endpoints go first (their pairs die with the delete), then the bridge.
	var evs []events.Event
	for _, ep := range f.Endpoints {
		if err := link.DeleteLink(ep.HostVeth); err != nil {
			return err
		}
		evs = append(evs, epEvent("disconnect", f.Network, ep, "network removed"))
	}
	for _, p := range f.PendingDelete {
		if err := link.DeleteLink(p.Name); err != nil {
			return err
		}
	}
	if err := link.DeleteLink(f.Network.Bridge); err != nil {
		return err
	}
	containers := containersOf(f)
	delete(snap.Files, name)
	if err := m.syncFirewall(snap); err != nil {
		return err
	}
	if err := m.store.Remove(name); err != nil {
		return fmt.Errorf("remove state of network %q: %w", name, err)
	}
	for _, c := range containers {
		m.updateResolver(snap, c)
	}
	for _, ev := range evs {
		m.emit(ev)
	}
	m.emit(events.Event{Time: now(), Type: "network", Action: "remove", Network: name, Subnet: f.Network.Subnet.String()})
	return nil
}

func lookup(snap *store.Snapshot, name string) (*state.File, error) {
	if f, ok := snap.Files[name]; ok {
		return f, nil
	}
	if err := snap.CorruptFor(name); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("network %q %w", name, ErrNotFound)
}

// syncFirewall regenerates the rules from the snapshot. Networks whose file
// is corrupt keep their rules if their network record can still be read.
func (m *Manager) syncFirewall(snap *store.Snapshot) error {
	nets := fwNets(snap.Files)
	for _, c := range snap.Corrupt {
		var partial struct{ Network state.Network }
		if b, err := os.ReadFile(c.Path); err == nil && json.Unmarshal(b, &partial) == nil && strings.HasPrefix(partial.Network.Bridge, firewall.BridgePrefix) {
			nets = append(nets, toFW(partial.Network))
		}
	}
	sort.Slice(nets, func(i, j int) bool { return nets[i].Bridge < nets[j].Bridge })
	return firewall.Sync(m.table, nets)
}

// EnsureFirewall re-syncs the rules if something outside removed them (a
// Docker restart rewrites the FORWARD chain).
func (m *Manager) EnsureFirewall() error {
	snap, err := m.store.Load()
	if err != nil {
		return err
	}
	if ok, err := firewall.Healthy(m.table, fwNets(snap.Files)); err != nil || ok {
		return err
	}
	lk, snap, err := m.begin()
	if err != nil {
		return err
	}
	defer lk.Unlock()
	return m.syncFirewall(snap)
}

// begin takes the lock, loads the state and reconciles it.
func (m *Manager) begin() (*store.Lock, *store.Snapshot, error) {
	lk, err := m.store.Lock()
	if err != nil {
		return nil, nil, err
	}
	snap, err := m.store.Load()
	if err != nil {
		lk.Unlock()
		return nil, nil, err
	}
	if err := m.reconcile(snap); err != nil {
		lk.Unlock()
		return nil, nil, err
	}
	return lk, snap, nil
}
