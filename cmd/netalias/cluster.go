//go:build !netalias_lite

package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strings"

	"github.com/netalias/netalias/agent"
	"github.com/netalias/netalias/cluster"
)

// The full build's cluster mode: these join etcd. The light build
// (full_lite.go) runs the full one instead whenever --etcd is given.

// options returns the cluster options, or nil without --etcd.
func (c *clusterFlags) options() (*cluster.Options, error) {
	if c.etcd == "" {
		return nil, nil
	}
	eps, err := cluster.ParseEndpoints(c.etcd)
	if err != nil {
		return nil, err
	}
	o := &cluster.Options{Endpoints: eps, CertFile: c.cert, KeyFile: c.key, CAFile: c.ca,
		Host: c.host, Prefix: c.prefix, LeaseTTL: c.leaseTTL}
	if err := o.Complete(); err != nil {
		return nil, fmt.Errorf("--etcd: %w", err)
	}
	return o, nil
}

// agentCluster returns the Manager's cluster options (nil without
// --etcd); desired is the publisher's source (nil for one-shot commands).
func (c *clusterFlags) agentCluster(desired func(vtep netip.Addr) cluster.DesiredFunc) (*agent.ClusterOptions, error) {
	o, err := c.options()
	if o == nil || err != nil {
		return nil, err
	}
	vtep, err := c.vtepAddr()
	if err != nil {
		return nil, err
	}
	if c.port < 0 || c.port > 65535 {
		return nil, fmt.Errorf("invalid --vxlan-port %d: must be between 1 and 65535", c.port)
	}
	var d cluster.DesiredFunc
	if desired != nil {
		d = desired(vtep)
	}
	mem, err := cluster.Join(*o, d, slog.Default())
	if err != nil {
		return nil, err
	}
	return &agent.ClusterOptions{Member: mem, VTEP: vtep, Port: c.port}, nil
}

// daemonCluster is the agent command's cluster options: the one-shot
// commands' plus the publisher of this host's endpoints.
func (c *clusterFlags) daemonCluster(dir string) (*agent.ClusterOptions, error) {
	return c.agentCluster(func(vtep netip.Addr) cluster.DesiredFunc { return agent.ClusterDesired(dir, vtep) })
}

// describeCluster is the agent's start-up line about its cluster.
func describeCluster(cl *agent.ClusterOptions) string {
	return fmt.Sprintf("cluster host %s, VTEP %s, etcd %s", cl.Member.Opts.Host, cl.VTEP, strings.Join(cl.Member.Opts.Endpoints, ","))
}

// lacksVTEP: the agent's cluster mode needs this host's underlay address.
func lacksVTEP(cl *agent.ClusterOptions) bool { return cl != nil && !cl.VTEP.IsValid() }

func (c *clusterFlags) vtepAddr() (netip.Addr, error) {
	if c.vtep == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(c.vtep)
	if err != nil || a.IsUnspecified() {
		return netip.Addr{}, fmt.Errorf("invalid --vtep %q: want this host's underlay IP address", c.vtep)
	}
	return a, nil
}
