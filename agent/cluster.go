//go:build !netalias_lite

package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netalias/netalias/agent/events"
	"github.com/netalias/netalias/agent/ipam"
	"github.com/netalias/netalias/agent/store"
	"github.com/netalias/netalias/cluster"
	"github.com/netalias/netalias/overlay"
	"github.com/netalias/netalias/state"
)

// Cluster mode (issues 12 and 13): networks, address blocks and names
// shared across hosts through etcd. Off unless Options.Cluster is set; then
//
//   - `network create` is one compare-and-swap transaction in etcd (the
//     network exists there first, then here), and joins a network another
//     host made;
//   - `connect` to a network this host lacks materialises it from etcd;
//   - addresses come from blocks this host claims by compare-and-swap and
//     allocates from locally; the blocks are recorded in the network file
//     (state.Cluster) so a host cut off from etcd still attaches
//     containers;
//   - each host has its own gateway on the network: the first address of
//     its first block;
//   - `network rm` removes the network cluster-wide (refused while another
//     host has endpoints on it).
//
// The daemon side (publisher, overlay programming) is in clusterd.go.

// ClusterOptions turn cluster mode on.
type ClusterOptions struct {
	Member *cluster.Member
	// VTEP is this host's underlay address: the VXLAN source, and the
	// device whose MTU the overlay MTU derives from. The daemon needs it;
	// one-shot commands without it take the uplink's MTU.
	VTEP netip.Addr
	// Port is the VXLAN UDP port of networks this host creates (0: 4789).
	Port int
	// Overlay programs the VXLAN devices (nil: this namespace's kernel).
	Overlay OverlayPlane
	// Timeout bounds each etcd operation of a command (default 10 s).
	Timeout time.Duration
}

// OverlayPlane is the seam to package overlay (tests inject a fake).
type OverlayPlane interface {
	MTU(spec overlay.NetworkSpec) (int, error)
	Ensure(spec overlay.NetworkSpec, peers []overlay.Peer, remotes []overlay.Remote) error
	Remove(network string) error
	Networks() ([]string, error)
}

// lazyOverlay opens the real overlay on first use (single-host mode never
// does).
type lazyOverlay struct{ o *overlay.Overlay }

func (l *lazyOverlay) get() (*overlay.Overlay, error) {
	if l.o == nil {
		o, err := overlay.OpenAt("")
		if err != nil {
			return nil, err
		}
		l.o = o
	}
	return l.o, nil
}

func (l *lazyOverlay) MTU(s overlay.NetworkSpec) (int, error) {
	o, err := l.get()
	if err != nil {
		return 0, err
	}
	return o.MTU(s)
}

func (l *lazyOverlay) Ensure(s overlay.NetworkSpec, p []overlay.Peer, r []overlay.Remote) error {
	o, err := l.get()
	if err != nil {
		return err
	}
	return o.Ensure(s, p, r)
}

func (l *lazyOverlay) Remove(n string) error {
	o, err := l.get()
	if err != nil {
		return err
	}
	return o.Remove(n)
}

func (l *lazyOverlay) Networks() ([]string, error) {
	o, err := l.get()
	if err != nil {
		return nil, err
	}
	return o.Networks()
}

// clusterMode is the Manager's cluster wiring.
type clusterMode struct {
	ClusterOptions
}

func newClusterMode(o *ClusterOptions) *clusterMode {
	if o == nil || o.Member == nil {
		return nil
	}
	c := &clusterMode{ClusterOptions: *o}
	if c.Overlay == nil {
		c.Overlay = &lazyOverlay{}
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	return c
}

func (c *clusterMode) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.Timeout)
}

// Clustered reports whether the Manager runs in cluster mode.
func (m *Manager) Clustered() bool { return m.cl != nil }

// overlayMTU is the MTU of a new cluster network on this host: asked for,
// else the VTEP device's MTU minus the VXLAN encapsulation, else the
// uplink's minus it.
func (m *Manager) overlayMTU(net string, asked int) (int, error) {
	if asked != 0 {
		return asked, nil
	}
	if m.cl.VTEP.IsValid() {
		return m.cl.Overlay.MTU(overlay.NetworkSpec{Name: net, Local: m.cl.VTEP})
	}
	u, err := m.k.Links.UplinkMTU(1500)
	if err != nil {
		return 0, err
	}
	return overlay.MTUFor(u, false), nil
}

// CreateClusterNetwork creates network spec.Name in the cluster (one
// compare-and-swap transaction in etcd) and here, or joins it when another
// host made it with compatible properties. On error nothing is left behind
// here, and a network this call created in etcd is removed again.
func (m *Manager) CreateClusterNetwork(spec NetworkSpec) (*state.Network, error) {
	if m.cl == nil {
		return m.CreateNetwork(spec)
	}
	if spec.IPv6 || spec.Subnet6 != "" {
		return nil, fmt.Errorf("network %q: IPv6 is not supported on cluster networks yet", spec.Name)
	}
	if spec.Gateway != "" {
		return nil, fmt.Errorf("network %q: --gateway cannot be given on a cluster network: each host's gateway is the first address of its first address block", spec.Name)
	}
	p, err := parseNetworkSpec(spec, func() (int, error) { return 1500, nil })
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
	taken := append([]netip.Prefix(nil), host...)
	for _, f := range snap.Files {
		if f.Network.Cluster == nil { // cluster networks are in etcd's list
			taken = append(taken, f.Network.Subnet)
		}
	}
	if p.sub.IsValid() {
		if err := overlapError("--subnet", p.sub, localOnly(snap.Files), host); err != nil {
			return nil, err
		}
	}
	ctx, cancel := m.cl.ctx()
	defer cancel()
	rec, created, err := m.cl.Member.Networks.Create(ctx, cluster.NetworkSpec{
		Name: spec.Name, Subnet: p.sub, MTU: spec.MTU, Internal: spec.Internal,
		ChooseSubnet: func(t []netip.Prefix) (netip.Prefix, error) { return ipam.AllocSubnet(m.pools, t) },
		LocalTaken:   taken,
	})
	if err != nil {
		return nil, fmt.Errorf("network %q: %w", spec.Name, err)
	}
	if !created && rec.Internal != spec.Internal {
		return nil, fmt.Errorf("network %q exists in the cluster with internal=%v", spec.Name, rec.Internal)
	}
	n, err := m.materialise(snap, spec.Name, rec)
	if err != nil && created {
		rctx, rcancel := m.cl.ctx()
		defer rcancel()
		if rerr := m.cl.Member.Networks.Remove(rctx, spec.Name); rerr != nil {
			err = errors.Join(err, fmt.Errorf("undo: remove cluster network %q: %w", spec.Name, rerr))
		}
	}
	return n, err
}

// localOnly is the single-host networks of files (cluster ones are
// checked against etcd).
func localOnly(files map[string]*state.File) map[string]*state.File {
	out := map[string]*state.File{}
	for k, f := range files {
		if f.Network.Cluster == nil {
			out[k] = f
		}
	}
	return out
}

// materialise makes cluster network name (record rec) on this host: its
// first address block (whose first address is this host's gateway), state
// file, bridge, firewall, forwarding. The caller holds the lock. On error
// nothing is left here (a claimed block is released).
func (m *Manager) materialise(snap *store.Snapshot, name string, rec cluster.NetworkRecord) (*state.Network, error) {
	sub, err := netip.ParsePrefix(rec.Subnet)
	if err != nil {
		return nil, fmt.Errorf("cluster network %q: bad subnet %q in etcd", name, rec.Subnet)
	}
	mtu, err := m.overlayMTU(name, rec.MTU)
	if err != nil {
		return nil, fmt.Errorf("cluster network %q: MTU: %w", name, err)
	}
	ctx, cancel := m.cl.ctx()
	defer cancel()
	held, err := m.cl.Member.Blocks.Held(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("cluster network %q: %w", name, err)
	}
	gw, claimed, err := m.cl.Member.Blocks.Allocate(ctx, name, rec, held, map[netip.Addr]bool{})
	if err != nil {
		return nil, fmt.Errorf("cluster network %q: gateway address: %w", name, err)
	}
	if claimed.IsValid() {
		held = append(held, claimed)
	}
	release := func() {
		if claimed.IsValid() {
			rctx, rcancel := m.cl.ctx()
			defer rcancel()
			if err := m.cl.Member.Blocks.Release(rctx, name, claimed); err != nil {
				m.log.Warn("address block not released", "network", name, "block", claimed, "err", err)
			}
		}
	}
	id := newID()
	n := state.Network{ID: id, Name: name, Bridge: bridgeName(id), Subnet: sub, Gateway: gw,
		Internal: rec.Internal, MTU: mtu, Created: now(),
		Cluster: &state.Cluster{VNI: rec.VNI, Port: m.cl.Port, Blocks: held}}
	// The steps of CreateNetwork (same names, same crash recovery: the
	// creating mark until the commit).
	f := &state.File{Version: state.Version, Network: n, Endpoints: []state.Endpoint{}, Op: state.OpCreating}
	t := newTxn(m.log, "network-create", fmt.Sprintf("materialise cluster network %q", name))
	err = t.step("state", func() error { return m.files.Write(f) },
		func() error { return m.files.Remove(name) })
	if err == nil {
		err = t.step("bridge", func() error { return m.k.Links.CreateBridge(bridgeOf(n)) },
			func() error { return m.k.Links.DeleteLink(n.Bridge) })
	}
	if err == nil {
		err = t.step("firewall", func() error {
			snap.Files[name] = f
			return m.syncFirewall(snap)
		}, func() error {
			delete(snap.Files, name)
			return m.syncFirewall(snap)
		})
		if err != nil {
			delete(snap.Files, name)
		}
	}
	if err == nil && !n.Internal {
		err = t.step("forwarding", func() error { return m.k.Sysctl.EnableForwarding(false) }, nil)
	}
	if err == nil {
		t.step("commit", func() error {
			f.Op = ""
			if err := m.files.Write(f); err != nil {
				m.log.Warn("network created; its file keeps the creating mark until the next command", "network", name, "err", err)
			}
			return nil
		}, nil)
	}
	if err != nil {
		err = t.rollback(err)
		release()
		return nil, err
	}
	m.emit(events.Event{Time: now(), Type: "network", Action: "create", Network: name, Subnet: sub.String()})
	return &f.Network, nil
}

// joinClusterNetwork is Connect's way to a network this host lacks: when
// the cluster has it, it is materialised here. The caller holds the lock.
func (m *Manager) joinClusterNetwork(snap *store.Snapshot, name string, notFound error) (*state.File, error) {
	if m.cl == nil || !errors.Is(notFound, ErrNotFound) {
		return nil, notFound
	}
	ctx, cancel := m.cl.ctx()
	defer cancel()
	rec, err := m.cl.Member.Networks.Get(ctx, name)
	if errors.Is(err, cluster.ErrNoNetwork) {
		return nil, notFound
	}
	if err != nil {
		return nil, fmt.Errorf("network %q is not on this host and the cluster cannot be asked: %w", name, err)
	}
	if _, err := m.materialise(snap, name, rec); err != nil {
		return nil, err
	}
	return snap.Files[name], nil
}

// allocClusterAddr chooses an endpoint's IPv4 address on cluster network
// f: one from the blocks this host holds (allocFromHeld), else one from a
// block claimed now (recorded in f, written with the endpoint).
func (m *Manager) allocClusterAddr(f *state.File, name string, req connectRequest) (netip.Addr, error) {
	a, used, err := allocFromHeld(f, name, req)
	if a.IsValid() || err != nil {
		return a, err
	}
	n := f.Network
	if m.cl == nil {
		return netip.Addr{}, errBlocksFull(n.Name)
	}
	ctx, cancel := m.cl.ctx()
	defer cancel()
	rec, err := m.cl.Member.Networks.Get(ctx, n.Name)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("network %q: every address block this host holds is full, and a new one needs etcd: %w", n.Name, err)
	}
	a, claimed, err := m.cl.Member.Blocks.Allocate(ctx, n.Name, rec, nil, used)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("network %q: %w", n.Name, err)
	}
	if claimed.IsValid() {
		c := *n.Cluster
		c.Blocks = append(slices.Clip(c.Blocks), claimed)
		f.Network.Cluster = &c
	}
	return a, nil
}

// RemoveClusterNetwork removes a cluster network everywhere: refused
// while another host has endpoints on it (nothing changed); else this
// host's copy goes (with force, its endpoints first), its overlay, then
// the network in etcd with its VNI and address blocks. A network this
// host has but the cluster no longer knows goes here only.
func (m *Manager) RemoveClusterNetwork(name string, force bool) error {
	if m.cl == nil {
		return m.RemoveNetwork(name, force)
	}
	snap, err := m.store.Load()
	if err != nil {
		return err
	}
	f, lerr := lookup(snap, name)
	if lerr == nil && f.Network.Cluster == nil {
		return m.RemoveNetwork(name, force)
	}
	ctx, cancel := m.cl.ctx()
	defer cancel()
	others, err := m.remoteEndpoints(ctx, name)
	if err != nil {
		return err
	}
	if len(others) > 0 {
		return fmt.Errorf("network %q: endpoints on other hosts: %v: %w", name, others, cluster.ErrNetworkInUse)
	}
	if lerr == nil {
		if err := m.RemoveNetwork(name, force); err != nil {
			return err
		}
		if err := m.cl.Overlay.Remove(name); err != nil {
			m.log.Warn("overlay device not removed", "network", name, "err", err)
		}
	}
	// This host's own endpoint records may still be there until its
	// publisher catches up (or its lease expires): retry a while.
	deadline := time.Now().Add(m.cl.Member.Opts.LeaseTTL + 2*time.Second)
	for {
		err = m.cl.Member.Networks.Remove(ctx, name)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, cluster.ErrNoNetwork):
			if lerr != nil {
				return lerr
			}
			return nil
		case errors.Is(err, cluster.ErrNetworkInUse) && time.Now().Before(deadline):
			time.Sleep(100 * time.Millisecond)
			continue
		}
		return fmt.Errorf("network %q removed on this host, not in the cluster: %w", name, err)
	}
}

// remoteEndpoints lists "host (n)" for each other host with endpoints on
// net.
func (m *Manager) remoteEndpoints(ctx context.Context, net string) ([]string, error) {
	k := m.cl.Member.Opts.Keys()
	resp, err := m.cl.Member.Client.Get(ctx, k.Endpoints(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("network %q: list endpoints in etcd: %w", net, err)
	}
	count := map[string]int{}
	for _, kv := range resp.Kvs {
		p := k.Parse(string(kv.Key))
		if p.Kind == cluster.KindEndpoint && p.Net == net && p.Host != m.cl.Member.Opts.Host {
			count[p.Host]++
		}
	}
	var out []string
	for h, c := range count {
		out = append(out, fmt.Sprintf("%s (%d)", h, c))
	}
	slices.Sort(out)
	return out, nil
}
