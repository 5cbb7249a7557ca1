package main

import (
	"os"
	"time"

	"github.com/spf13/pflag"
)

// defaultEtcdPrefix is cluster.DefaultPrefix, which the light build
// cannot import (a test of the full build checks they agree).
const defaultEtcdPrefix = "/netalias/v1"

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
	f.StringVar(&cflags.prefix, "etcd-prefix", env("NETALIAS_ETCD_PREFIX"), "key `PREFIX` in etcd (default "+defaultEtcdPrefix+")")
	f.StringVar(&cflags.host, "host", env("NETALIAS_HOST"), "this host's `NAME` in the cluster ($NETALIAS_HOST; default the hostname)")
	f.StringVar(&cflags.vtep, "vtep", env("NETALIAS_VTEP"), "this host's underlay `ADDRESS` for VXLAN ($NETALIAS_VTEP; the agent needs it)")
	f.IntVar(&cflags.port, "vxlan-port", 0, "UDP `PORT` of the VXLAN overlay of networks this host creates (default 4789)")
	f.DurationVar(&cflags.leaseTTL, "lease-ttl", 0, "TTL of this host's records in etcd: a dead host's names go this long after its death (default 10s, at least 2s)")
}
