// Package etcd is the netwatch source of other hosts' endpoints in cluster
// mode: it lists the cluster's records under the netalias prefix, then
// watches from the listed revision, and publishes every network with
// remote endpoints. It skips its own host (the state directory and netlink
// are fresher there).
//
// Remote endpoints get a host-qualified container identity ("host:
// container": the same namespace path on two hosts must not make them one
// client) and no host veth (this host's netlink view must never hide
// them).
//
// When etcd is unreachable or has no leader, the source keeps its last
// records, marks itself stale (coredns_netalias_stale{source="etcd"}) and
// reconverges when etcd returns; a watch that fell behind a compaction
// lists again and replaces everything, so no deletion is missed.
package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netalias/netalias/cluster"
	"github.com/netalias/netalias/internal/backoff"
	"github.com/netalias/netalias/netwatch"
)

// SourceName is the source's name in logs and metrics.
const SourceName = "etcd"

// Source follows the cluster's records in etcd.
type Source struct {
	Client *clientv3.Client
	Keys   cluster.Keys
	Host   string // this host: its records are skipped
	Log    netwatch.Logger
	// Probe is how often the watch stream is asked for a progress
	// notification (default 1 s); StaleAfter is how long without any
	// answer on it before the source is marked stale (default 3 s).
	Probe, StaleAfter time.Duration

	afterList func() // test seam: runs between the list and the watch
}

// New returns a source for host's view of the cluster under keys.
func New(cli *clientv3.Client, keys cluster.Keys, host string) *Source {
	return &Source{Client: cli, Keys: keys, Host: host}
}

// Name implements netwatch.Source.
func (s *Source) Name() string { return SourceName }

type run struct {
	s    *Source
	log  netwatch.Logger
	sink netwatch.Sink

	nets  map[string]cluster.NetworkRecord
	eps   map[string]map[string]remoteEP // network → "host/epid" → endpoint
	stale bool
	// published: networks this source has handed to the sink.
	published map[string]bool
}

type remoteEP struct {
	host string
	rec  cluster.EndpointRecord
}

// errCompacted ends a watch that fell behind a compaction: list again.
var errCompacted = errors.New("watch fell behind a compaction")

// Run implements netwatch.Source.
func (s *Source) Run(ctx context.Context, sink netwatch.Sink) error {
	r := &run{s: s, log: netwatch.OrStd(s.Log), sink: sink, published: map[string]bool{}}
	var retry backoff.Backoff
	loaded := false
	for ctx.Err() == nil {
		rev, err := r.list(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			r.setStale(true, err)
			if !loaded {
				// Serve the local names meanwhile: an empty load makes the
				// server ready; remote names come when etcd answers.
				sink.Replace(s.Name(), nil)
				loaded = true
			}
			if !retry.Wait(ctx) {
				break
			}
			continue
		}
		loaded = true
		retry.Reset()
		r.setStale(false, nil)
		if s.afterList != nil {
			s.afterList()
		}
		err = r.watch(ctx, rev)
		if ctx.Err() != nil {
			break
		}
		if errors.Is(err, errCompacted) {
			r.log.Warningf("etcd: %v; listing again", err)
			continue
		}
		r.setStale(true, err)
		if !retry.Wait(ctx) {
			break
		}
	}
	return nil
}

func (r *run) setStale(stale bool, err error) {
	if stale == r.stale {
		return
	}
	r.stale = stale
	if stale {
		r.log.Warningf("etcd: %v; serving the last-known remote records", err)
	} else {
		r.log.Infof("etcd: reachable again; remote records are current")
	}
	r.sink.SetStale(r.s.Name(), stale)
}

// list reads everything under the prefix in one revision and replaces
// what the source published.
func (r *run) list(ctx context.Context) (int64, error) {
	lctx, cancel := context.WithTimeout(ctx, r.s.staleAfter())
	defer cancel()
	resp, err := r.s.Client.Get(lctx, r.s.Keys.Root(), clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("list %s: %w", r.s.Keys.Root(), err)
	}
	r.nets = map[string]cluster.NetworkRecord{}
	r.eps = map[string]map[string]remoteEP{}
	for _, kv := range resp.Kvs {
		r.put(string(kv.Key), kv.Value)
	}
	var all []*netwatch.Network
	pub := map[string]bool{}
	for name := range r.eps {
		if n := r.build(name); n != nil {
			all = append(all, n)
			pub[name] = true
		}
	}
	r.published = pub
	r.sink.Replace(r.s.Name(), all)
	return resp.Header.Revision, nil
}

// put records one key's value; it returns the network it touched.
func (r *run) put(key string, val []byte) string {
	p := r.s.Keys.Parse(key)
	switch p.Kind {
	case cluster.KindNetwork:
		var rec cluster.NetworkRecord
		if err := json.Unmarshal(val, &rec); err != nil {
			r.log.Errorf("etcd: %s: %v (ignored)", key, err)
			return ""
		}
		r.nets[p.Net] = rec
		return p.Net
	case cluster.KindEndpoint:
		if p.Host == r.s.Host {
			return ""
		}
		var rec cluster.EndpointRecord
		if err := json.Unmarshal(val, &rec); err != nil {
			r.log.Errorf("etcd: %s: %v (ignored)", key, err)
			return ""
		}
		m := r.eps[p.Net]
		if m == nil {
			m = map[string]remoteEP{}
			r.eps[p.Net] = m
		}
		m[p.Host+"/"+p.ID] = remoteEP{host: p.Host, rec: rec}
		return p.Net
	}
	return ""
}

func (r *run) del(key string) string {
	p := r.s.Keys.Parse(key)
	switch p.Kind {
	case cluster.KindNetwork:
		delete(r.nets, p.Net)
		return p.Net
	case cluster.KindEndpoint:
		if p.Host == r.s.Host {
			return ""
		}
		if m := r.eps[p.Net]; m != nil {
			delete(m, p.Host+"/"+p.ID)
			if len(m) == 0 {
				delete(r.eps, p.Net)
			}
		}
		return p.Net
	}
	return ""
}

// build makes the network's remote view, or nil when it has no remote
// endpoint. The gateway is left out: each host has its own, and the local
// one (from the state directory) is the one that matters here.
func (r *run) build(name string) *netwatch.Network {
	m := r.eps[name]
	if len(m) == 0 {
		return nil
	}
	n := &netwatch.Network{Name: name}
	if rec, ok := r.nets[name]; ok {
		n.Subnet, _ = netip.ParsePrefix(rec.Subnet)
		n.Subnet6, _ = netip.ParsePrefix(rec.Subnet6)
	}
	ids := make([]string, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	n.Endpoints = make([]netwatch.Endpoint, 0, len(ids))
	for _, id := range ids {
		e := m[id]
		ep := netwatch.Endpoint{Name: e.rec.Name, Aliases: e.rec.Aliases}
		ep.IPv4, _ = netip.ParseAddr(e.rec.IPv4)
		ep.IPv6, _ = netip.ParseAddr(e.rec.IPv6)
		c := e.rec.Container
		if c == "" {
			c = name + "/" + id // its own client
		}
		ep.Container = e.host + ":" + c
		for _, l := range e.rec.Links {
			ep.Links = append(ep.Links, netwatch.Link{Target: l.Target, Alias: l.Alias})
		}
		n.Endpoints = append(n.Endpoints, ep)
	}
	return n
}

// watch follows changes after rev until an error. A response carries
// every change of its revisions (a dead host's lease expiry is one), and
// each network it touched is published once.
func (r *run) watch(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	// From rev, not rev+1: etcd answers a progress request only when no
	// watcher starts beyond the current revision, and an idle cluster
	// stays at rev. Events of rev itself are in the listing: skipped.
	// Watch blocks while the client (re)connects: open it aside so the
	// probe below still notices an unreachable etcd.
	opened := make(chan clientv3.WatchChan, 1)
	go func() {
		opened <- r.s.Client.Watch(wctx, r.s.Keys.Root(), clientv3.WithPrefix(), clientv3.WithRev(rev),
			clientv3.WithPrevKV(), clientv3.WithProgressNotify())
	}()
	var wch clientv3.WatchChan // nil (blocks) until opened
	probe := time.NewTicker(r.s.probe())
	defer probe.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case wch = <-opened:
		case <-probe.C:
			if time.Since(last) > r.s.staleAfter() {
				r.setStale(true, fmt.Errorf("no answer from etcd for %v", time.Since(last).Round(time.Millisecond)))
			}
			if wch != nil {
				// Ask for a progress notification: its arrival proves the
				// stream (and, with WithRequireLeader, a leader) is there.
				pctx, pc := context.WithTimeout(wctx, r.s.probe())
				r.s.Client.RequestProgress(pctx)
				pc()
			}
		case wr, ok := <-wch:
			if !ok {
				return errors.New("watch closed")
			}
			if wr.CompactRevision != 0 {
				return fmt.Errorf("%w (compacted at revision %d)", errCompacted, wr.CompactRevision)
			}
			if err := wr.Err(); err != nil {
				return fmt.Errorf("watch: %w", err)
			}
			last = time.Now()
			r.setStale(false, nil)
			r.apply(wr.Events, rev)
		}
	}
}

func (r *run) apply(evs []*clientv3.Event, listed int64) {
	if len(evs) == 0 {
		return
	}
	dirty := map[string]bool{}
	for _, ev := range evs {
		if ev.Kv.ModRevision <= listed {
			continue
		}
		var n string
		if ev.Type == clientv3.EventTypeDelete {
			n = r.del(string(ev.Kv.Key))
		} else {
			n = r.put(string(ev.Kv.Key), ev.Kv.Value)
		}
		if n != "" {
			dirty[n] = true
		}
	}
	for name := range dirty {
		if n := r.build(name); n != nil {
			r.sink.Update(r.s.Name(), n)
			r.published[name] = true
		} else if r.published[name] {
			r.sink.Remove(r.s.Name(), name)
			delete(r.published, name)
		}
	}
}

func (s *Source) probe() time.Duration {
	if s.Probe > 0 {
		return s.Probe
	}
	return time.Second
}

func (s *Source) staleAfter() time.Duration {
	if s.StaleAfter > 0 {
		return s.StaleAfter
	}
	return 3 * time.Second
}
