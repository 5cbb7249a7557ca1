//go:build netalias_lite

package agent

import (
	"context"
	"net/netip"
	"time"

	"github.com/netalias/netalias/agent/store"
	"github.com/netalias/netalias/state"
)

// The light build (-tags netalias_lite: bin/netalias, the hot commands and
// the CNI plugin) links no etcd client: a process that starts for one
// connect pays for every package it links (etcd's gRPC and protobuf
// registration alone took 5 ms of a 14 ms connect). Cluster mode is in
// the full build (bin/netalias-full), which the light command runs for
// --etcd. Here a cluster network already on this host still attaches
// containers from the address blocks it holds, as a host cut off from
// etcd does.

// ClusterOptions turn cluster mode on; the light build has none.
type ClusterOptions struct{}

type clusterMode struct{}

func newClusterMode(*ClusterOptions) *clusterMode { return nil }

// Clustered reports whether the Manager runs in cluster mode: never here.
func (m *Manager) Clustered() bool { return false }

func (m *Manager) allocClusterAddr(f *state.File, name string, req connectRequest) (netip.Addr, error) {
	a, _, err := allocFromHeld(f, name, req)
	if !a.IsValid() && err == nil {
		err = errBlocksFull(f.Network.Name)
	}
	return a, err
}

func (m *Manager) joinClusterNetwork(_ *store.Snapshot, _ string, notFound error) (*state.File, error) {
	return nil, notFound
}

// CreateClusterNetwork is CreateNetwork without cluster mode.
func (m *Manager) CreateClusterNetwork(spec NetworkSpec) (*state.Network, error) {
	return m.CreateNetwork(spec)
}

// RemoveClusterNetwork is RemoveNetwork without cluster mode.
func (m *Manager) RemoveClusterNetwork(name string, force bool) error {
	return m.RemoveNetwork(name, force)
}

// runCluster is never called: Manager.cl is always nil here.
func (d *Daemon) runCluster(context.Context, time.Duration) {}
