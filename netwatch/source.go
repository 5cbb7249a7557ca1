// Package netwatch turns what the agent and container runtimes know into
// DNS records. Each origin of records (the agent's state directory, a
// runtime's event stream, later etcd) is a Source; sources push whole
// networks into a Sink, which merges them by network name and publishes an
// immutable snapshot for lock-free lookups.
//
// Layout: the Sink side and readiness (store.go), the immutable snapshot
// (snapshot.go), building it (build.go) with copy-on-write address shards
// (shard.go), the members' health and the per-name views it selects
// (health.go), and the host's links (linkstate.go), which netwatch/links
// feeds from netlink. The state-directory source (statedir.go) also serves
// read-your-writes: package syncack lets the agent wait, bounded by
// syncack.DefaultTimeout (200 ms), until every running server publishes
// what it just wrote.
package netwatch

import (
	"context"
	"net/netip"
)

// Endpoint is one container's presence on one network, as DNS sees it.
type Endpoint struct {
	Name    string   // resolves as NAME.NETWORK
	Aliases []string // each resolves as ALIAS.NETWORK
	Links   []Link   // legacy links: resolve for this endpoint's container only
	IPv4    netip.Addr
	IPv6    netip.Addr
	// Container groups endpoints of one container across networks (agent:
	// the namespace path; Docker: the container id). A client's "networks"
	// are the networks of every endpoint with its Container value.
	Container string
	// HostVeth is the host-side interface name, when known. When it
	// vanishes from the kernel, the endpoint's records go at once.
	HostVeth string
	// Health is the runtime's healthcheck state; the zero value (no
	// healthcheck, as for the agent's own endpoints) counts as ready.
	Health Health
}

// Link is a legacy --link: Alias resolves, for the linking container only,
// to the endpoint named Target on a network the two share.
type Link struct {
	Target string
	Alias  string
}

// Network is everything one source knows about one network.
type Network struct {
	Name      string
	Subnet    netip.Prefix // may be invalid (zero) when unknown
	Subnet6   netip.Prefix
	Gateway   netip.Addr
	Gateway6  netip.Addr
	Endpoints []Endpoint
}

// Sink receives records from sources. Implementations must be safe for
// concurrent use by several sources. A source never mutates a *Network
// after handing it over.
type Sink interface {
	// Replace sets the complete set of networks known to source, dropping
	// any it published before and does not name now. The first Replace of a
	// source marks it loaded (readiness).
	Replace(source string, networks []*Network)
	// Update replaces one network of source.
	Update(source string, network *Network)
	// Remove drops one network of source.
	Remove(source string, network string)
	// SetStale marks source's records as possibly out of date (its origin
	// is unreachable); they keep being served.
	SetStale(source string, stale bool)
}

// Source is an origin of records.
type Source interface {
	// Name identifies the source in logs and metrics ("state", "docker").
	Name() string
	// Run publishes into sink until ctx is done. It returns nil on
	// cancellation; transient failures are retried inside, not returned.
	Run(ctx context.Context, sink Sink) error
}
