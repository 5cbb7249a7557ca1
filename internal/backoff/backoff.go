// Package backoff is the one reconnect policy of netalias's watchers (the
// Docker source, the state directory, netlink subscriptions): exponential
// from Min to Max with jitter, so that several watchers that lost the same
// origin do not retry in lockstep.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Defaults: the first retry comes quickly (most losses are a burst, such as
// ENOBUFS, or a restarting engine), a dead origin costs one attempt every
// few seconds.
const (
	DefaultMin = 100 * time.Millisecond
	DefaultMax = 3 * time.Second
)

// ClusterMax is the ceiling of the cluster's own etcd loops (the host
// lease's grant, the publisher, the agent's view of the cluster): while a
// host is cut off they keep asking its own member, one cheap request a
// second, so that once the partition heals the lease, the records and the
// overlay come back within about a second of etcd answering, not after a
// 3 s back-off (issue 13: traffic within 5 s of a heal).
const ClusterMax = time.Second

// Backoff hands out growing delays. The zero value uses the defaults. Not
// safe for concurrent use.
type Backoff struct {
	Min, Max time.Duration
	next     time.Duration
}

// Next returns the delay before the next attempt (with ±20% jitter) and
// doubles the one after it, up to Max.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = DefaultMin
	}
	if hi < lo {
		hi = max(DefaultMax, lo)
	}
	if b.next < lo {
		b.next = lo
	}
	d := b.next
	b.next = min(2*b.next, hi)
	return d + time.Duration((rand.Float64()-0.5)*0.4*float64(d))
}

// Reset starts again from Min: call it once a connection proved good.
func (b *Backoff) Reset() { b.next = 0 }

// Wait sleeps for Next, or until ctx is done; it reports whether ctx is
// still live.
func (b *Backoff) Wait(ctx context.Context) bool {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
