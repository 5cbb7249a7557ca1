package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
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
	synced atomic.Int64 // revision of the last successful sync
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
	var retry backoff.Backoff
	resync := time.NewTimer(p.Resync)
	defer resync.Stop()
	failing := false
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
		if _, err := p.Sync(ctx, lease); err != nil {
			if ctx.Err() != nil {
				break
			}
			if !failing {
				p.log.Warn("cluster: publishing this host's records failed; retrying", "host", p.host, "err", err)
			}
			failing = true
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
		case <-wait:
		}
	}
	return nil
}

// Sync compares once and writes the difference under lease. It reports
// whether it wrote anything.
func (p *Publisher) Sync(ctx context.Context, lease clientv3.LeaseID) (bool, error) {
	d, err := p.desired()
	if err != nil {
		return false, fmt.Errorf("cluster: desired records of host %s: %w", p.host, err)
	}
	want := p.encode(d)
	for attempt := 0; attempt < 10; attempt++ {
		ops, rev, err := p.diff(ctx, want, lease)
		if err != nil {
			return false, err
		}
		if len(ops) == 0 {
			p.synced.Store(rev)
			return false, nil
		}
		ok, err := p.apply(ctx, ops, rev)
		if err != nil {
			return false, err
		}
		if ok {
			return true, nil
		}
		// Someone else wrote this host's prefixes meanwhile: read again.
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

// diff reads this host's keys in one revision and returns the operations
// that make them equal to want, all under lease.
func (p *Publisher) diff(ctx context.Context, want map[string]string, lease clientv3.LeaseID) ([]clientv3.Op, int64, error) {
	resp, err := p.cli.Txn(ctx).Then(
		clientv3.OpGet(p.keys.Host(p.host)),
		clientv3.OpGet(p.keys.HostGateways(p.host), clientv3.WithPrefix()),
		clientv3.OpGet(p.keys.HostEndpoints(p.host), clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, 0, fmt.Errorf("cluster: read host %s's records: %w", p.host, err)
	}
	have := map[string]bool{}
	var ops []clientv3.Op
	for _, r := range resp.Responses {
		for _, kv := range r.GetResponseRange().Kvs {
			k := string(kv.Key)
			have[k] = true
			w, ok := want[k]
			switch {
			case !ok:
				ops = append(ops, clientv3.OpDelete(k))
			case w != string(kv.Value) || clientv3.LeaseID(kv.Lease) != lease:
				ops = append(ops, clientv3.OpPut(k, w, clientv3.WithLease(lease)))
			}
		}
	}
	keys := make([]string, 0, len(want))
	for k := range want {
		if !have[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		ops = append(ops, clientv3.OpPut(k, want[k], clientv3.WithLease(lease)))
	}
	return ops, resp.Header.Revision, nil
}

// apply writes ops in as few transactions as etcd allows (one unless more
// than maxTxnOps keys differ), each guarded by "nothing under this host's
// prefixes changed since rev".
func (p *Publisher) apply(ctx context.Context, ops []clientv3.Op, rev int64) (bool, error) {
	for len(ops) > 0 {
		n := min(len(ops), maxTxnOps)
		resp, err := p.cli.Txn(ctx).If(
			clientv3.Compare(clientv3.ModRevision(p.keys.Host(p.host)), "<", rev+1),
			clientv3.Compare(clientv3.ModRevision(p.keys.HostGateways(p.host)), "<", rev+1).WithPrefix(),
			clientv3.Compare(clientv3.ModRevision(p.keys.HostEndpoints(p.host)), "<", rev+1).WithPrefix(),
		).Then(ops[:n]...).Commit()
		if err != nil {
			return false, fmt.Errorf("cluster: write host %s's records: %w", p.host, err)
		}
		if !resp.Succeeded {
			return false, nil
		}
		p.writes.Add(1)
		rev = resp.Header.Revision
		p.synced.Store(rev)
		ops = ops[n:]
	}
	return true, nil
}
