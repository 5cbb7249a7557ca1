package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/netalias/netalias/agent/events"
	"github.com/netalias/netalias/agent/firewall"
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

// CreateNetwork creates a bridge network. On error nothing is left behind.
//
// Steps: state file (first: if this process dies, the next reconcile
// finds a network without its bridge and completes it, rather than a
// bridge nobody knows) → bridge → firewall → IP forwarding.
func (m *Manager) CreateNetwork(spec NetworkSpec) (*state.Network, error) {
	p, err := parseNetworkSpec(spec, func() (int, error) { return m.k.Links.UplinkMTU(1500) })
	if err != nil {
		return nil, err
	}
	lk, snap, err := m.begin()
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()
	if err := nameFree(snap, spec.Name); err != nil {
		return nil, err
	}
	host, err := m.k.Links.HostPrefixes()
	if err != nil {
		return nil, err
	}
	if p, err = chooseSubnets(p, snap.Files, host, m.pools); err != nil {
		return nil, err
	}
	n := newNetwork(newID(), spec.Name, p, spec.Internal)
	// Marked until the last step: a reconcile that finds the mark finishes
	// the create of a process that died.
	f := &state.File{Version: state.Version, Network: n, Endpoints: []state.Endpoint{}, Op: state.OpCreating}

	t := newTxn(m.log, "network-create", fmt.Sprintf("create network %q", n.Name))
	err = t.step("state", func() error { return m.files.Write(f) },
		func() error { return m.files.Remove(n.Name) })
	if err == nil {
		err = t.step("bridge", func() error { return m.k.Links.CreateBridge(bridgeOf(n)) },
			func() error { return m.k.Links.DeleteLink(n.Bridge) })
	}
	if err == nil {
		err = t.step("firewall", func() error {
			snap.Files[n.Name] = f
			return m.syncFirewall(snap)
		}, func() error {
			delete(snap.Files, n.Name)
			return m.syncFirewall(snap)
		})
		if err != nil {
			delete(snap.Files, n.Name) // the failed step's own change
		}
	}
	if err == nil && !n.Internal {
		err = t.step("forwarding", func() error {
			if err := m.k.Sysctl.EnableForwarding(n.Subnet6.IsValid()); err != nil {
				return fmt.Errorf("enable IP forwarding: %w", err)
			}
			return nil
		}, nil)
	}
	if err == nil {
		// The network is complete: a failed commit is logged, not undone
		// (forwarding cannot be), and the next reconcile clears the mark.
		t.step("commit", func() error {
			f.Op = ""
			if err := m.files.Write(f); err != nil {
				m.log.Warn("network created; its file keeps the creating mark until the next command", "network", n.Name, "err", err)
			}
			return nil
		}, nil)
	}
	if err != nil {
		return nil, t.rollback(err)
	}
	m.emit(events.Event{Time: now(), Type: "network", Action: "create", Network: n.Name, Subnet: n.Subnet.String()})
	return &n, nil
}

// RemoveNetwork removes a network: its bridge, its rules, its file.
// Attached endpoints make it fail unless force, which disconnects them
// first (as Disconnect does: committed one by one).
//
// Steps for the network itself: firewall (without it) → bridge → pending
// veths → state file. A failure before the file goes undoes the firewall
// and bridge steps: the network stays as it was.
func (m *Manager) RemoveNetwork(name string, force bool) error {
	lk, snap, err := m.begin()
	if err != nil {
		return err
	}
	defer lk.Unlock()
	return m.removeNetwork(snap, name, force)
}

// removeNetwork is RemoveNetwork under the lock.
func (m *Manager) removeNetwork(snap *store.Snapshot, name string, force bool) error {
	f, err := lookup(snap, name)
	if err != nil {
		return err
	}
	if len(f.Endpoints) > 0 && !force {
		var eps []string
		for _, e := range f.Endpoints {
			eps = append(eps, endpointLabel(e))
		}
		return fmt.Errorf("network %q has %d endpoint(s) attached (%s): disconnect them first or use --force", name, len(eps), strings.Join(eps, ", "))
	}
	if force {
		// Docker's records go with the network, their veths with its
		// pending ones (docker.go).
		f, _ = withoutDocker(f)
		snap.Files[name] = f
	}
	var evs []events.Event
	for i := len(f.Endpoints) - 1; i >= 0; i-- {
		ep := f.Endpoints[i]
		if err := m.detach(snap, f, i); err != nil {
			return fmt.Errorf("network %q: disconnect %q: %w", name, ep.Name, err)
		}
		evs = append(evs, epEvent("disconnect", f.Network, ep, "network removed"))
	}
	t := newTxn(m.log, "network-rm", fmt.Sprintf("remove network %q", name))
	// Marked first: a reconcile that finds the mark finishes the removal
	// of a process that died (rules, bridge, file).
	err = t.step("mark", func() error {
		f.Op = state.OpRemoving
		if err := m.files.Write(f); err != nil {
			f.Op = ""
			return err
		}
		return nil
	}, func() error {
		f.Op = ""
		return m.files.Write(f)
	})
	if err == nil {
		err = t.step("firewall", func() error {
			delete(snap.Files, name)
			return m.syncFirewall(snap)
		}, func() error {
			snap.Files[name] = f
			return m.syncFirewall(snap)
		})
		if err != nil {
			snap.Files[name] = f
		}
	}
	if err == nil {
		err = t.step("bridge", func() error { return m.k.Links.DeleteLink(f.Network.Bridge) },
			func() error { return m.k.Links.CreateBridge(bridgeOf(f.Network)) })
	}
	if err == nil {
		// Irreversible but harmless: these were to be deleted anyway (the
		// state file still lists them if a later step fails).
		err = t.step("pending", func() error {
			for _, p := range f.PendingDelete {
				if err := m.k.Links.DeleteLink(p.Name); err != nil {
					return err
				}
			}
			return nil
		}, nil)
	}
	if err == nil {
		err = t.step("state", func() error {
			if err := m.files.Remove(name); err != nil {
				return fmt.Errorf("remove state of network %q: %w", name, err)
			}
			return nil
		}, nil)
	}
	if err != nil {
		for _, ev := range evs {
			m.emit(ev)
		}
		return t.rollback(err)
	}
	for _, ev := range evs {
		m.emit(ev)
	}
	m.emit(events.Event{Time: now(), Type: "network", Action: "remove", Network: name, Subnet: f.Network.Subnet.String()})
	return nil
}

// nameFree says whether a network may be created under name: no file of
// that name, readable or corrupt.
func nameFree(snap *store.Snapshot, name string) error {
	if _, ok := snap.Files[name]; ok {
		return fmt.Errorf("network %q already exists", name)
	}
	if err := snap.CorruptFor(name); err != nil {
		return fmt.Errorf("network %q cannot be created: %w", name, err)
	}
	return nil
}

// beginOn is begin for an operation on one network: it also finds the
// network's file. On error nothing is held.
func (m *Manager) beginOn(network string) (*opLock, *store.Snapshot, *state.File, error) {
	lk, snap, err := m.begin()
	if err != nil {
		return nil, nil, nil, err
	}
	f, err := lookup(snap, network)
	if err != nil {
		lk.Unlock()
		return nil, nil, nil, err
	}
	return lk, snap, f, nil
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
	return m.k.Firewall.Sync(m.table, nets)
}

// EnsureFirewall re-syncs the rules if something outside removed them (a
// Docker restart rewrites the FORWARD chain).
func (m *Manager) EnsureFirewall() error {
	snap, err := m.store.Load()
	if err != nil {
		return err
	}
	if ok, err := m.k.Firewall.Healthy(m.table, fwNets(snap.Files)); err != nil || ok {
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
func (m *Manager) begin() (*opLock, *store.Snapshot, error) {
	slk, err := m.store.Lock()
	if err != nil {
		return nil, nil, err
	}
	lk := &opLock{lk: slk, m: m}
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
