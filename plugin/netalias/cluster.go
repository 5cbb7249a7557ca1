package netalias

import (
	"strconv"
	"sync/atomic"

	"github.com/coredns/caddy"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netalias/netalias/cluster"
	etcdsrc "github.com/netalias/netalias/netwatch/etcd"
)

// clusterConfig is the `cluster` property: other hosts' records from etcd.
//
//	cluster URL... {
//	    host NAME           # this host in the cluster (default: the hostname)
//	    tls CERT KEY [CA]   # client certificate, key and CA bundle
//	    tls_ca CA           # CA bundle only (server-authenticated TLS)
//	    prefix P            # key root (default /netalias/v1)
//	    stale_ttl N         # TTL of answers while etcd is unreachable (default 1)
//	}
type clusterConfig struct {
	opts     cluster.Options
	staleTTL uint32
}

func parseCluster(c *caddy.Controller) (*clusterConfig, error) {
	// Arguments, then an optional block, parsed by hand: inside the
	// netalias block, NextBlock would take the next netalias property for
	// ours when the cluster line has no block.
	var args []string
	block := false
	for c.NextArg() {
		if c.Val() == "{" {
			block = true
			break
		}
		args = append(args, c.Val())
	}
	if len(args) == 0 {
		return nil, c.Errf("cluster needs at least one etcd URL")
	}
	cc := &clusterConfig{staleTTL: 1}
	for _, a := range args {
		eps, err := cluster.ParseEndpoints(a)
		if err != nil {
			return nil, c.Errf("cluster: %v", err)
		}
		cc.opts.Endpoints = append(cc.opts.Endpoints, eps...)
	}
	for block {
		if !c.Next() {
			return nil, c.EOFErr()
		}
		prop := c.Val()
		if prop == "}" {
			break
		}
		args := c.RemainingArgs()
		switch {
		case prop == "host" && len(args) == 1:
			cc.opts.Host = args[0]
		case prop == "tls" && (len(args) == 2 || len(args) == 3):
			cc.opts.CertFile, cc.opts.KeyFile = args[0], args[1]
			if len(args) == 3 {
				cc.opts.CAFile = args[2]
			}
		case prop == "tls_ca" && len(args) == 1:
			cc.opts.CAFile = args[0]
		case prop == "prefix" && len(args) == 1:
			cc.opts.Prefix = args[0]
		case prop == "stale_ttl" && len(args) == 1:
			t, err := strconv.ParseUint(args[0], 10, 32)
			if err != nil || t > 3600 {
				return nil, c.Errf("cluster: stale_ttl must be a number of seconds from 0 to 3600, got %q", args[0])
			}
			cc.staleTTL = uint32(t)
		case prop == "host" || prop == "tls" || prop == "tls_ca" || prop == "prefix" || prop == "stale_ttl":
			return nil, c.Errf("cluster: wrong number of arguments for %s", prop)
		default:
			return nil, c.Errf("cluster: unknown property '%s'", prop)
		}
	}
	if err := cc.opts.Complete(); err != nil {
		return nil, c.Err(err.Error())
	}
	if _, err := cc.opts.TLSConfig(); err != nil {
		return nil, c.Err(err.Error())
	}
	return cc, nil
}

// source dials etcd (lazily: an unreachable cluster shows as a stale
// source, not a failed start) and returns the etcd source and its client.
func (cc *clusterConfig) source() (*etcdsrc.Source, *clientv3.Client, error) {
	cli, err := cc.opts.Client()
	if err != nil {
		return nil, nil, err
	}
	src := etcdsrc.New(cli, cc.opts.Keys(), cc.opts.Host)
	src.Log = log
	return src, cli, nil
}

// staleTTL shortens every answer's TTL while the etcd source is stale:
// remote records may be gone, so clients should ask again soon. (All
// answers, local ones too: the snapshot does not mark records by origin,
// and a shorter TTL on a still-valid local name costs only a re-query.)
type staleTTL struct {
	on  atomic.Bool
	ttl uint32
}

// ttl is the TTL to answer with now.
func (h *Netalias) ttl() uint32 {
	if h.stale != nil && h.stale.on.Load() {
		return min(h.TTL, h.stale.ttl)
	}
	return h.TTL
}
