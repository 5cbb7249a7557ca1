package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netalias/netalias/internal/backoff"
)

// Desired is what this host should have published: its host record, its
// gateway on each network it is on, and its endpoints.
type Desired struct {
	Host      HostRecord
	Gateways  map[string]GatewayRecord      // network → this host's gateway
	Endpoints map[EndpointID]EndpointRecord // (network, endpoint id) → record
}

// EndpointID names an endpoint within a host.
type EndpointID struct{ Net, ID string }

// DesiredFunc returns the current desired set (the agent reads its state
// directory: see StateDirDesired).
type DesiredFunc func() (*Desired, error)

// maxTxnOps is etcd's default per-transaction operation limit.
const maxTxnOps = 128

// Publisher mirrors this host's records into etcd, level-triggered: after
// every change notification, every new lease and every resync period it
// compares the desired set with what this host's own prefixes hold and
// fixes the difference in one transaction (one revision), guarded so that
// a concurrent writer of the same prefixes makes it read again.
type Publisher struct {
	cli     *clientv3.Client
	keys    Keys
	host    string
	session *Session
	desired DesiredFunc
	log     *slog.Logger

	// Resync is the period of an unprompted comparison (default 1 min): a
	// safety net, not the propagation path.
	Resync time.Duration

	kick   chan struct{}
	writes atomic.Uint64

	mu          sync.Mutex          // serializes syncs
	mirror      map[string]mirrored // this host's keys as etcd holds them; nil: unknown
	mirrorRev   int64               // revision the mirror is current at
	mirrorLease clientv3.LeaseID    // lease the mirror was read under
}

// NewPublisher returns a publisher for host under keys, writing under
// session's lease. log may be nil.
func NewPublisher(cli *clientv3.Client, keys Keys, host string, session *Session, desired DesiredFunc, log *slog.Logger) *Publisher {
	if log == nil {
		log = slog.Default()
	}
	return &Publisher{cli: cli, keys: keys, host: host, session: session, desired: desired, log: log,
		Resync: time.Minute, kick: make(chan struct{}, 1)}
}

// Notify says the desired set may have changed. It never blocks; several
// notifications before the publisher runs make one sync.
func (p *Publisher) Notify() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Writes counts the transactions that changed etcd.
func (p *Publisher) Writes() uint64 { return p.writes.Load() }

// Run publishes until ctx is done. Failures are logged and retried with
// backoff; a new lease publishes everything again.
func (p *Publisher) Run(ctx context.Context) error {
	retry := backoff.Backoff{Max: backoff.ClusterMax}
	resync := time.NewTimer(p.Resync)
	defer resync.Stop()
	failing, full := false, true
	for ctx.Err() == nil {
		lease, changed := p.session.Lease()
		if lease == 0 {
			select {
			case <-ctx.Done():
			case <-changed:
			}
			continue
		}
		var wait <-chan time.Time
		// A sync under a lease that goes meanwhile is abandoned: a read
		// begun while etcd was cut off waits for the server's request
		// timeout (7 s), and would hold back publishing under the new
		// lease that much after the partition heals.
		sctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-changed:
				cancel()
			case <-sctx.Done():
			}
		}()
		_, err := p.sync(sctx, lease, full)
		cancel()
		full = false
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			select {
			case <-changed:
				full = true
				continue // again under the new lease
			default:
			}
			if !failing {
				p.log.Warn("cluster: publishing this host's records failed; retrying", "host", p.host, "err", err)
			}
			failing, full = true, true
			wait = time.After(retry.Next())
		} else {
			if failing {
				p.log.Info("cluster: publishing this host's records works again", "host", p.host)
			}
			failing = false
			retry.Reset()
		}
		if !resync.Stop() {
			select {
			case <-resync.C:
			default:
			}
		}
		resync.Reset(p.Resync)
		select {
		case <-ctx.Done():
		case <-changed:
		case <-p.kick:
		case <-resync.C:
			full = true
		case <-wait:
		}
	}
	return nil
}

// Sync reads this host's records from etcd, compares them with the
// desired set and writes the difference under lease. It reports whether
// it wrote anything.
func (p *Publisher) Sync(ctx context.Context, lease clientv3.LeaseID) (bool, error) {
	return p.sync(ctx, lease, true)
}

// sync compares the desired set with what etcd holds. With full false it
// compares with its mirror of etcd (what the last read or write left
// there) after checking, in one round trip that returns no values, that
// etcd still holds exactly the mirror: no key under this
// host's prefixes modified since the mirror's revision, and as many keys
// as the mirror has (so nothing deleted either). Otherwise, and on a new
// lease, after an error and at the periodic resync, it reads every key.
// Each write is also guarded by "nothing changed since the mirror's
// revision".
func (p *Publisher) sync(ctx context.Context, lease clientv3.LeaseID, full bool) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d, err := p.desired()
	if err != nil {
		return false, fmt.Errorf("cluster: desired records of host %s: %w", p.host, err)
	}
	want := p.encode(d)
	if p.mirror == nil || p.mirrorLease != lease {
		full = true
	}
	if !full {
		ok, err := p.verify(ctx)
		if err != nil {
			p.mirror = nil
			return false, err
		}
		full = !ok
	}
	for attempt := 0; attempt < 10; attempt++ {
		if full {
			if err := p.read(ctx); err != nil {
				p.mirror = nil
				return false, err
			}
			p.mirrorLease = lease
		}
		ops, changes := p.diff(want, lease)
		if len(ops) == 0 {
			return false, nil
		}
		ok, err := p.apply(ctx, ops, changes)
		if err != nil {
			p.mirror = nil
			return false, err
		}
		if ok {
			return true, nil
		}
		// Someone else wrote this host's prefixes meanwhile: read again.
		full = true
	}
	return false, fmt.Errorf("cluster: host %s: records changed under the publisher 10 times in a row (two agents with one --host?)", p.host)
}

func (p *Publisher) encode(d *Desired) map[string]string {
	want := make(map[string]string, len(d.Endpoints)+len(d.Gateways)+1)
	want[p.keys.Host(p.host)] = mustJSON(d.Host)
	for net, g := range d.Gateways {
		want[p.keys.Gateway(p.host, net)] = mustJSON(g)
	}
	for id, e := range d.Endpoints {
		want[p.keys.Endpoint(p.host, id.Net, id.ID)] = mustJSON(e)
	}
	return want
}

// mirrored is one key of this host as etcd holds it.
type mirrored struct {
	value string
	lease clientv3.LeaseID
}

// read loads this host's keys, in one revision, into the mirror.
func (p *Publisher) read(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := p.cli.Txn(ctx).Then(
		clientv3.OpGet(p.keys.Host(p.host)),
		clientv3.OpGet(p.keys.HostGateways(p.host), clientv3.WithPrefix()),
		clientv3.OpGet(p.keys.HostEndpoints(p.host), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return fmt.Errorf("cluster: read host %s's records: %w", p.host, err)
	}
	p.mirror = map[string]mirrored{}
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			p.mirror[string(kv.Key)] = mirrored{string(kv.Value), clientv3.LeaseID(kv.Lease)}
		}
	}
	p.mirrorRev = resp.Header.Revision
	return nil
}

// verify reports whether etcd holds exactly the mirror, without reading
// the keys.
func (p *Publisher) verify(ctx context.Context) (bool, error) {
	ranges := [][]clientv3.OpOption{nil, {clientv3.WithPrefix()}, {clientv3.WithPrefix()}}
	keys := []string{p.keys.Host(p.host), p.keys.HostGateways(p.host), p.keys.HostEndpoints(p.host)}
	var ops []clientv3.Op
	for i, k := range keys {
		ops = append(ops,
			clientv3.OpGet(k, append([]clientv3.OpOption{clientv3.WithCountOnly()}, ranges[i]...)...),
			// Keys only: etcd counts before it filters by revision.
			clientv3.OpGet(k, append([]clientv3.OpOption{clientv3.WithKeysOnly(), clientv3.WithMinModRev(p.mirrorRev + 1)}, ranges[i]...)...))
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := p.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return false, fmt.Errorf("cluster: check host %s's records: %w", p.host, err)
	}
	var total int64
	for i, r := range resp.Responses {
		rr := r.GetResponseRange()
		if i%2 == 1 && len(rr.Kvs) > 0 {
			return false, nil // modified since the mirror
		}
		if i%2 == 0 {
			total += rr.Count
		}
	}
	return total == int64(len(p.mirror)), nil
}

// change is one operation's effect on the mirror (deleted: value unused).
type change struct {
	key     string
	value   string
	deleted bool
}

// diff returns the operations that make the mirror equal to want, all
// under lease, and their effect on the mirror: the host record first,
// then the gateways, then the endpoints. The order matters when apply
// needs several transactions (more than maxTxnOps keys, as when a host
// publishes everything again under a new lease after a partition): the
// other hosts' overlays skip the endpoints of a host without its record
// (no VTEP to send to), so its names would be back in DNS while traffic
// to them waited for the last transaction, or for a retry after it
// failed (issue 13: a heal with names back and traffic seconds later).
func (p *Publisher) diff(want map[string]string, lease clientv3.LeaseID) ([]clientv3.Op, []change) {
	var changes []change
	for k, m := range p.mirror {
		w, ok := want[k]
		switch {
		case !ok:
			changes = append(changes, change{key: k, deleted: true})
		case w != m.value || m.lease != lease:
			changes = append(changes, change{key: k, value: w})
		}
	}
	for k, w := range want {
		if _, ok := p.mirror[k]; !ok {
			changes = append(changes, change{key: k, value: w})
		}
	}
	rank := func(k string) int {
		switch {
		case k == p.keys.Host(p.host):
			return 0
		case strings.HasPrefix(k, p.keys.HostGateways(p.host)):
			return 1
		}
		return 2
	}
	sort.Slice(changes, func(i, j int) bool {
		ri, rj := rank(changes[i].key), rank(changes[j].key)
		if ri != rj {
			return ri < rj
		}
		return changes[i].key < changes[j].key
	})
	ops := make([]clientv3.Op, 0, len(changes))
	for _, c := range changes {
		if c.deleted {
			ops = append(ops, clientv3.OpDelete(c.key))
		} else {
			ops = append(ops, clientv3.OpPut(c.key, c.value, clientv3.WithLease(lease)))
		}
	}
	return ops, changes
}

// apply writes ops in as few transactions as etcd allows (one unless more
// than maxTxnOps keys differ), each guarded by "nothing under this host's
// prefixes changed since the mirror's revision", and keeps the mirror in
// step. false: a guard failed.
func (p *Publisher) apply(ctx context.Context, ops []clientv3.Op, changes []change) (bool, error) {
	for len(ops) > 0 {
		n := min(len(ops), maxTxnOps)
		rev := p.mirrorRev
		tctx, cancel := context.WithTimeout(ctx, requestTimeout)
		resp, err := p.cli.Txn(tctx).If(
			clientv3.Compare(clientv3.ModRevision(p.keys.Host(p.host)), "<", rev+1),
			clientv3.Compare(clientv3.ModRevision(p.keys.HostGateways(p.host)), "<", rev+1).WithPrefix(),
			clientv3.Compare(clientv3.ModRevision(p.keys.HostEndpoints(p.host)), "<", rev+1).WithPrefix(),
		).Then(ops[:n]...).Commit()
		cancel()
		if err != nil {
			return false, fmt.Errorf("cluster: write host %s's records: %w", p.host, err)
		}
		if !resp.Succeeded {
			return false, nil
		}
		p.writes.Add(1)
		for _, c := range changes[:n] {
			if c.deleted {
				delete(p.mirror, c.key)
			} else {
				p.mirror[c.key] = mirrored{c.value, p.mirrorLease}
			}
		}
		p.mirrorRev = resp.Header.Revision
		ops, changes = ops[n:], changes[n:]
	}
	return true, nil
}
