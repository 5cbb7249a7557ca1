//go:build !netalias_lite

package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netalias/netalias/cluster"
	"github.com/netalias/netalias/internal/backoff"
	"github.com/netalias/netalias/overlay"
	"github.com/netalias/netalias/state"
)

// The daemon in cluster mode (issue 12 req 4, issue 13): it keeps the host
// session and publishes this host's cluster endpoints (cluster.Member),
// follows the cluster's records in etcd (clusterView) and programs the
// VXLAN overlay of every cluster network this host carries from them, on
// every change and every resync. A network removed from the cluster goes
// here too when nothing of this host is on it.

// ClusterDesired is the publisher's desired set: this host's record (its
// VTEP) and the gateway and endpoints of every cluster network in the
// state directory. Single-host networks are never published.
func ClusterDesired(dir string, vtep netip.Addr) cluster.DesiredFunc {
	host := cluster.HostRecord{}
	if vtep.IsValid() {
		host.VTEP = vtep.String()
	}
	return cluster.StateDirDesired(dir, host, func(f *state.File) bool { return f.Network.Cluster != nil })
}

// clusterView is this host's copy of the cluster's records that the
// overlay needs: live hosts, gateways, endpoints, networks. Kept while
// etcd is unreachable (last known); replaced whole by every listing.
type clusterView struct {
	keys cluster.Keys
	self string

	mu       sync.Mutex
	hosts    map[string]cluster.HostRecord
	gateways map[string]map[string]bool                   // net → hosts with a gateway on it
	eps      map[string]map[string]cluster.EndpointRecord // net → "host/epid" → record
	epHost   map[string]map[string]string                 // net → "host/epid" → host
	nets     map[string]cluster.NetworkRecord             // cluster networks
	gone     map[string]bool                              // networks whose deletion was seen
	listed   time.Time                                    // when the last listing began
}

func newClusterView(keys cluster.Keys, self string) *clusterView {
	v := &clusterView{keys: keys, self: self}
	v.reset()
	return v
}

func (v *clusterView) reset() {
	v.hosts = map[string]cluster.HostRecord{}
	v.gateways = map[string]map[string]bool{}
	v.eps = map[string]map[string]cluster.EndpointRecord{}
	v.epHost = map[string]map[string]string{}
	v.nets = map[string]cluster.NetworkRecord{}
	v.gone = map[string]bool{}
}

func (v *clusterView) put(key string, val []byte) {
	p := v.keys.Parse(key)
	switch p.Kind {
	case cluster.KindHost:
		var r cluster.HostRecord
		if json.Unmarshal(val, &r) == nil {
			v.hosts[p.Host] = r
		}
	case cluster.KindGateway:
		if v.gateways[p.Net] == nil {
			v.gateways[p.Net] = map[string]bool{}
		}
		v.gateways[p.Net][p.Host] = true
	case cluster.KindEndpoint:
		var r cluster.EndpointRecord
		if json.Unmarshal(val, &r) != nil {
			return
		}
		if v.eps[p.Net] == nil {
			v.eps[p.Net], v.epHost[p.Net] = map[string]cluster.EndpointRecord{}, map[string]string{}
		}
		v.eps[p.Net][p.Host+"/"+p.ID] = r
		v.epHost[p.Net][p.Host+"/"+p.ID] = p.Host
	case cluster.KindNetwork:
		var r cluster.NetworkRecord
		if json.Unmarshal(val, &r) == nil {
			v.nets[p.Net] = r
			delete(v.gone, p.Net)
		}
	}
}

func (v *clusterView) del(key string) {
	p := v.keys.Parse(key)
	switch p.Kind {
	case cluster.KindHost:
		delete(v.hosts, p.Host)
	case cluster.KindGateway:
		delete(v.gateways[p.Net], p.Host)
	case cluster.KindEndpoint:
		delete(v.eps[p.Net], p.Host+"/"+p.ID)
		delete(v.epHost[p.Net], p.Host+"/"+p.ID)
	case cluster.KindNetwork:
		delete(v.nets, p.Net)
		v.gone[p.Net] = true
	}
}

// overlayInput is network net's peers (live hosts other than this one
// with a gateway or endpoints on it) and remote endpoints (those of the
// peers).
func (v *clusterView) overlayInput(net string) ([]overlay.Peer, []overlay.Remote) {
	v.mu.Lock()
	defer v.mu.Unlock()
	on := map[string]bool{}
	for h := range v.gateways[net] {
		on[h] = true
	}
	for _, h := range v.epHost[net] {
		on[h] = true
	}
	var peers []overlay.Peer
	live := map[string]bool{}
	for h := range on {
		rec, ok := v.hosts[h]
		if !ok || h == v.self {
			continue
		}
		a, err := netip.ParseAddr(rec.VTEP)
		if err != nil {
			continue
		}
		peers = append(peers, overlay.Peer{Host: h, VTEP: a})
		live[h] = true
	}
	sort.Slice(peers, func(i, j int) bool { return peers[i].Host < peers[j].Host })
	var remotes []overlay.Remote
	for id, r := range v.eps[net] {
		h := v.epHost[net][id]
		if !live[h] {
			continue
		}
		mac, err := net2mac(r.MAC)
		if err != nil {
			continue
		}
		rm := overlay.Remote{Host: h, MAC: mac}
		rm.IPv4, _ = netip.ParseAddr(r.IPv4)
		rm.IPv6, _ = netip.ParseAddr(r.IPv6)
		remotes = append(remotes, rm)
	}
	sort.Slice(remotes, func(i, j int) bool { return remotes[i].MAC.String() < remotes[j].MAC.String() })
	return peers, remotes
}

func net2mac(s string) (net.HardwareAddr, error) { return net.ParseMAC(s) }

// removed reports whether cluster network name is known to be gone: its
// deletion was seen, or a listing that began after created lacked it.
func (v *clusterView) removed(name string, created time.Time) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.gone[name] {
		return true
	}
	_, ok := v.nets[name]
	return !ok && !v.listed.IsZero() && created.Before(v.listed)
}

// follow lists and watches the cluster's records until ctx is done,
// calling changed after every listing and every batch of events. While
// etcd is unreachable the view keeps its last records.
func (v *clusterView) follow(ctx context.Context, cli *clientv3.Client, changed func(), logf func(string, ...any)) {
	retry := backoff.Backoff{Max: backoff.ClusterMax}
	for ctx.Err() == nil {
		start := time.Now()
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := cli.Get(lctx, v.keys.Root(), clientv3.WithPrefix())
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				logf("cluster view: list: %v; keeping the last-known records", err)
			}
			retry.Wait(ctx)
			continue
		}
		v.mu.Lock()
		v.reset()
		for _, kv := range resp.Kvs {
			v.put(string(kv.Key), kv.Value)
		}
		v.listed = start
		v.mu.Unlock()
		// A listing proves etcd good again: the next loss retries at once
		// (without it the delay stayed at its ceiling for the agent's life).
		retry.Reset()
		changed()
		err = v.watch(ctx, cli, resp.Header.Revision+1, changed)
		if ctx.Err() != nil {
			return
		}
		logf("cluster view: watch: %v; listing again", err)
		retry.Wait(ctx)
	}
}

func (v *clusterView) watch(ctx context.Context, cli *clientv3.Client, rev int64, changed func()) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := cli.Watch(wctx, v.keys.Root(), clientv3.WithPrefix(), clientv3.WithRev(rev))
	for wr := range wch {
		if wr.CompactRevision != 0 {
			return fmt.Errorf("compacted at revision %d", wr.CompactRevision)
		}
		if err := wr.Err(); err != nil {
			return err
		}
		if len(wr.Events) == 0 {
			continue
		}
		v.mu.Lock()
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete {
				v.del(string(ev.Kv.Key))
			} else {
				v.put(string(ev.Kv.Key), ev.Kv.Value)
			}
		}
		v.mu.Unlock()
		changed()
	}
	return errors.New("watch closed")
}

// runCluster is the daemon's cluster part; it returns when ctx is done.
func (d *Daemon) runCluster(ctx context.Context, resync time.Duration) {
	m := d.m
	mem := m.cl.Member
	kick := make(chan struct{}, 1)
	poke := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	view := newClusterView(mem.Opts.Keys(), mem.Opts.Host)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); mem.Run(ctx) }()
	go func() {
		defer wg.Done()
		cluster.WatchStateDir(ctx, m.StateDir(), func() {
			if mem.Publisher != nil {
				mem.Publisher.Notify()
			}
			poke()
		}, m.log)
	}()
	go func() {
		defer wg.Done()
		view.follow(ctx, mem.Client, poke, func(f string, a ...any) { m.log.Warn(fmt.Sprintf(f, a...)) })
	}()
	t := time.NewTicker(resync)
	defer t.Stop()
	blocks := time.NewTicker(reclaimEvery)
	defer blocks.Stop()
	failing := map[string]string{}
	m.reclaimBlocks(ctx)
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-kick:
		case <-t.C:
		case <-blocks.C:
			m.reclaimBlocks(ctx)
		}
		m.syncOverlay(view, failing)
	}
}

// reclaimEvery is how often the daemon checks that etcd still shows this
// host's address blocks as its own.
const reclaimEvery = 30 * time.Second

// reclaimBlocks claims again the blocks this host's network files hold
// that etcd no longer shows as its own (the IPAM lease expired while the
// agent was down longer than its TTL). A block another host took
// meanwhile is logged with the endpoints whose addresses are now doubly
// held: they need reconnecting.
func (m *Manager) reclaimBlocks(ctx context.Context) {
	snap, err := m.store.Load()
	if err != nil {
		return
	}
	for _, name := range snap.Names() {
		f := snap.Files[name]
		if f.Network.Cluster == nil || len(f.Network.Cluster.Blocks) == 0 {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, m.cl.Timeout)
		held, err := m.cl.Member.Blocks.Held(cctx, name)
		if err != nil {
			cancel()
			continue // etcd unreachable: try again later
		}
		var missing []netip.Prefix
		for _, b := range f.Network.Cluster.Blocks {
			found := false
			for _, h := range held {
				found = found || h == b.Masked()
			}
			if !found {
				missing = append(missing, b)
			}
		}
		if len(missing) > 0 {
			conflicts, err := m.cl.Member.Blocks.Reclaim(cctx, name, missing)
			switch {
			case err != nil:
				m.log.Warn("cluster: address blocks not claimed again", "network", name, "blocks", missing, "err", err)
			case len(conflicts) > 0:
				var eps []string
				for _, ep := range f.Endpoints {
					for _, c := range conflicts {
						if c.Contains(ep.IPv4) {
							eps = append(eps, ep.Name)
						}
					}
				}
				m.log.Error("cluster: address blocks taken by another host while this one's IPAM lease was gone; reconnect these endpoints", "network", name, "blocks", conflicts, "endpoints", eps)
			default:
				m.log.Info("cluster: address blocks claimed again", "network", name, "blocks", missing)
			}
		}
		cancel()
	}
}

// syncOverlay programs the overlay of every cluster network in the state
// directory from the view, removes devices of networks this host no
// longer carries, and the local copy of networks the cluster removed.
// failing remembers the last error per network, so a lasting one is
// logged once.
func (m *Manager) syncOverlay(view *clusterView, failing map[string]string) {
	snap, err := m.store.Load()
	if err != nil {
		m.log.Error("cluster: overlay: load state", "err", err)
		return
	}
	carried := map[string]bool{}
	for _, name := range snap.Names() {
		f := snap.Files[name]
		c := f.Network.Cluster
		if c == nil {
			continue
		}
		if view.removed(name, f.Network.Created) && len(f.Endpoints) == 0 {
			if err := m.RemoveNetwork(name, false); err != nil {
				m.log.Warn("cluster: network removed from the cluster; local copy not removed", "network", name, "err", err)
				carried[name] = true
			} else {
				m.log.Info("cluster: network removed from the cluster; removed here", "network", name)
			}
			continue
		}
		carried[name] = true
		peers, remotes := view.overlayInput(name)
		spec := overlay.NetworkSpec{Name: name, Bridge: f.Network.Bridge, VNI: c.VNI, Port: c.Port, MTU: f.Network.MTU, Local: m.cl.VTEP}
		err := m.cl.Overlay.Ensure(spec, peers, remotes)
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		if msg != failing[name] {
			if err != nil {
				m.log.Warn("cluster: overlay", "network", name, "err", err)
			} else {
				m.log.Info("cluster: overlay works again", "network", name)
			}
		}
		if err != nil {
			failing[name] = msg
		} else {
			delete(failing, name)
		}
	}
	have, err := m.cl.Overlay.Networks()
	if err != nil {
		m.log.Warn("cluster: overlay: list devices", "err", err)
		return
	}
	for _, n := range have {
		if !carried[n] {
			if err := m.cl.Overlay.Remove(n); err != nil {
				m.log.Warn("cluster: overlay: remove device", "network", n, "err", err)
			}
		}
	}
}
