package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netalias/netalias/internal/backoff"
)

// Session keeps this host's lease alive. Every key the publisher writes
// carries it, so when the host dies all of them go in one revision. A lease
// lost while the process lives (a partition longer than the TTL, a server
// restart without the lease) is replaced by a new one, and whoever waits
// on Lease's channel (the publisher) publishes again under it.
//
// Keepalives go every TTL/3 and are answered by the leader outside raft:
// they cost no etcd writes.
type Session struct {
	cli *clientv3.Client
	ttl int64
	log *slog.Logger

	mu      sync.Mutex
	id      clientv3.LeaseID
	changed chan struct{}

	losses  atomic.Uint64
	leaving atomic.Bool
	// OnLeaseLost, when set before Run, is called on each lease loss
	// (for a metric, e.g. netalias_cluster_lease_lost_total).
	OnLeaseLost func()
}

// NewSession returns a session granting leases of ttl on cli. log may be
// nil (slog.Default()).
func NewSession(cli *clientv3.Client, ttl time.Duration, log *slog.Logger) *Session {
	if log == nil {
		log = slog.Default()
	}
	return &Session{cli: cli, ttl: int64(ttl / time.Second), log: log, changed: make(chan struct{})}
}

// Lease returns the current lease (0 while there is none) and a channel
// closed when it changes (lost, or replaced by a new one).
func (s *Session) Lease() (clientv3.LeaseID, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.id, s.changed
}

// LeaseLosses counts leases lost while the session ran.
func (s *Session) LeaseLosses() uint64 { return s.losses.Load() }

func (s *Session) set(id clientv3.LeaseID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.id == id {
		return
	}
	s.id = id
	close(s.changed)
	s.changed = make(chan struct{})
}

// Run grants a lease, keeps it alive, and grants a new one whenever it is
// lost, until ctx is done. It does not revoke the lease on return: an agent
// restart within the TTL is invisible to the other hosts (Revoke is for
// leaving the cluster).
func (s *Session) Run(ctx context.Context) error {
	retry := backoff.Backoff{Max: backoff.ClusterMax}
	for ctx.Err() == nil {
		id, ka, err := s.grant(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("cluster: cannot grant the host lease; retrying", "err", err)
			}
			if !retry.Wait(ctx) {
				break
			}
			continue
		}
		retry.Reset()
		s.set(id)
		for range ka {
		}
		// The keepalive channel closes when ctx ends, when the server says
		// the lease is gone, or when no keepalive got through for a TTL.
		s.set(0)
		if ctx.Err() != nil || s.leaving.Load() {
			break
		}
		s.losses.Add(1)
		if s.OnLeaseLost != nil {
			s.OnLeaseLost()
		}
		s.log.Warn("cluster: host lease lost; granting a new one and publishing again", "lease", fmt.Sprintf("%x", int64(id)))
	}
	return nil
}

// requestTimeout bounds each etcd request of the session and the
// publisher. A healthy member answers in milliseconds; a request whose
// message a member lost (its peer connection dying as a partition heals)
// is otherwise answered only by the server's own request timeout (7 s
// with the default election timeout), and the lease or the records come
// back that much later (issue 13). Abandoned, it is tried again within
// backoff.ClusterMax.
const requestTimeout = 2 * time.Second

func (s *Session) grant(ctx context.Context) (clientv3.LeaseID, <-chan *clientv3.LeaseKeepAliveResponse, error) {
	gctx, cancel := context.WithTimeout(ctx, min(requestTimeout, time.Duration(s.ttl)*time.Second))
	defer cancel()
	g, err := s.cli.Grant(gctx, s.ttl)
	if err != nil {
		return 0, nil, fmt.Errorf("grant lease of %ds: %w", s.ttl, err)
	}
	ka, err := s.cli.KeepAlive(ctx, g.ID)
	if err != nil {
		return 0, nil, fmt.Errorf("keep lease %x alive: %w", int64(g.ID), err)
	}
	return g.ID, ka, nil
}

// Revoke ends the current lease at once: every key under it is deleted in
// one revision (netalias agent --leave), and Run returns without granting
// another.
func (s *Session) Revoke(ctx context.Context) error {
	s.leaving.Store(true)
	id, _ := s.Lease()
	if id == 0 {
		return nil
	}
	if _, err := s.cli.Revoke(ctx, id); err != nil {
		return fmt.Errorf("cluster: revoke host lease %x: %w", int64(id), err)
	}
	return nil
}
