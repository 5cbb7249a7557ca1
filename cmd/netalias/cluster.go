package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/netalias/netalias/agent"
	"github.com/netalias/netalias/cluster"
)

// Cluster mode flags: global, because every command that changes networks
// or endpoints talks to etcd in cluster mode (network create/rm, connect,
// run) and the agent runs the host's session. Each has an environment
// variable, so a host's setting is made once.
type clusterFlags struct {
	etcd, cert, key, ca, prefix string
	host, vtep                  string
	port                        int
	leaseTTL                    time.Duration
}

// cflags is the command line being run (one per process; newRoot resets
// it through the flag defaults).
var cflags clusterFlags

func addClusterFlags(f *pflag.FlagSet) {
	env := os.Getenv
	f.StringVar(&cflags.etcd, "etcd", env("NETALIAS_ETCD"), "cluster mode: etcd client `URLs`, comma-separated ($NETALIAS_ETCD); without it, this host only")
	f.StringVar(&cflags.cert, "etcd-cert", env("NETALIAS_ETCD_CERT"), "TLS client certificate `FILE` for etcd ($NETALIAS_ETCD_CERT)")
	f.StringVar(&cflags.key, "etcd-key", env("NETALIAS_ETCD_KEY"), "TLS client key `FILE` for etcd ($NETALIAS_ETCD_KEY)")
	f.StringVar(&cflags.ca, "etcd-ca", env("NETALIAS_ETCD_CA"), "CA bundle `FILE` verifying the etcd servers ($NETALIAS_ETCD_CA)")
	f.StringVar(&cflags.prefix, "etcd-prefix", env("NETALIAS_ETCD_PREFIX"), "key `PREFIX` in etcd (default "+cluster.DefaultPrefix+")")
	f.StringVar(&cflags.host, "host", env("NETALIAS_HOST"), "this host's `NAME` in the cluster ($NETALIAS_HOST; default the hostname)")
	f.StringVar(&cflags.vtep, "vtep", env("NETALIAS_VTEP"), "this host's underlay `ADDRESS` for VXLAN ($NETALIAS_VTEP; the agent needs it)")
	f.IntVar(&cflags.port, "vxlan-port", 0, "UDP `PORT` of the VXLAN overlay of networks this host creates (default 4789)")
	f.DurationVar(&cflags.leaseTTL, "lease-ttl", 0, "TTL of this host's records in etcd: a dead host's names go this long after its death (default 10s, at least 2s)")
}

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
