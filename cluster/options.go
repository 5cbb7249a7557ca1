// Package cluster is netalias's control plane across hosts, built on etcd
// (go.etcd.io/etcd/client/v3): a host session (one lease carrying all of a
// host's records, so a dead host's records go in one revision), the
// publisher (this host's endpoints mirrored into etcd, level-triggered),
// cluster networks (create/remove as single compare-and-swap
// transactions, VNI included) and address blocks (a host claims blocks by
// compare-and-swap and allocates addresses from them locally).
//
// Without etcd endpoints nothing here runs: single-host mode does not import
// this package's behaviour. The key layout is in keys.go.
package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	grpcbackoff "google.golang.org/grpc/backoff"
)

// DefaultPrefix is the root of every key netalias writes.
const DefaultPrefix = "/netalias/v1"

// DefaultLeaseTTL is the host lease's TTL: a dead host's records vanish
// this long after its last keepalive.
const DefaultLeaseTTL = 10 * time.Second

// MinLeaseTTL is etcd's smallest honoured TTL with default election
// timeouts (1.5 × 1 s, rounded up): a shorter TTL is silently raised by
// the server, so it is refused here instead.
const MinLeaseTTL = 2 * time.Second

// DefaultIPAMLeaseTTL is the TTL of the lease holding a host's address
// blocks. Much longer than the host lease, so a partition shorter than it
// never lets another host take addresses still in use.
const DefaultIPAMLeaseTTL = 10 * time.Minute

// Options says how to reach etcd and who this host is.
type Options struct {
	Endpoints []string // client URLs; empty means cluster mode is off
	CertFile  string   // client certificate (TLS), with KeyFile
	KeyFile   string
	CAFile    string        // CA bundle verifying the servers
	Host      string        // this host's name in the cluster; default os.Hostname()
	Prefix    string        // key root; default DefaultPrefix
	LeaseTTL  time.Duration // host lease TTL; default DefaultLeaseTTL
	// IPAMLeaseTTL is the TTL of the address-block lease; default
	// DefaultIPAMLeaseTTL.
	IPAMLeaseTTL time.Duration
	DialTimeout  time.Duration // default 5 s
}

// Enabled reports whether cluster mode is on.
func (o *Options) Enabled() bool { return len(o.Endpoints) > 0 }

// ParseEndpoints splits the --etcd flag value "URL,URL,…" and checks each
// URL.
func ParseEndpoints(s string) ([]string, error) {
	var out []string
	for _, e := range strings.Split(s, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		u, err := url.Parse(e)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "unix" && u.Scheme != "unixs") || u.Host == "" {
			return nil, fmt.Errorf("--etcd: %q is not an etcd client URL (want http://HOST:PORT or https://HOST:PORT)", e)
		}
		out = append(out, e)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--etcd: %q names no endpoint", s)
	}
	return out, nil
}

// Complete fills defaults and validates o. It names the offending option.
func (o *Options) Complete() error {
	if !o.Enabled() {
		return errors.New("cluster: no etcd endpoints (--etcd URL,…)")
	}
	if o.Host == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("cluster: --host not given and the hostname is unknown: %w", err)
		}
		o.Host = h
	}
	if err := CheckName("host", o.Host); err != nil {
		return err
	}
	if o.Prefix == "" {
		o.Prefix = DefaultPrefix
	}
	if !strings.HasPrefix(o.Prefix, "/") || strings.HasSuffix(o.Prefix, "/") {
		return fmt.Errorf("cluster: prefix %q must start with / and not end with /", o.Prefix)
	}
	if o.LeaseTTL == 0 {
		o.LeaseTTL = DefaultLeaseTTL
	}
	if o.LeaseTTL < MinLeaseTTL {
		return fmt.Errorf("cluster: lease TTL %v is below etcd's minimum of %v (the server would silently raise it)", o.LeaseTTL, MinLeaseTTL)
	}
	if o.LeaseTTL%time.Second != 0 {
		return fmt.Errorf("cluster: lease TTL %v is not a whole number of seconds", o.LeaseTTL)
	}
	if o.IPAMLeaseTTL == 0 {
		o.IPAMLeaseTTL = DefaultIPAMLeaseTTL
	}
	if o.IPAMLeaseTTL < o.LeaseTTL {
		return fmt.Errorf("cluster: IPAM lease TTL %v is shorter than the host lease TTL %v", o.IPAMLeaseTTL, o.LeaseTTL)
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = 5 * time.Second
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return errors.New("cluster: TLS needs both a certificate and a key")
	}
	return nil
}

// CheckName refuses names that would break the key layout (a "/" would
// move a key into another host's or network's prefix).
func CheckName(what, s string) error {
	if s == "" || strings.ContainsAny(s, "/\x00 ") || s == "." || s == ".." {
		return fmt.Errorf("cluster: %s name %q is not usable in etcd keys (no /, space or NUL)", what, s)
	}
	return nil
}

// TLSConfig returns the client TLS configuration, or nil when no TLS
// option is set.
func (o *Options) TLSConfig() (*tls.Config, error) {
	if o.CertFile == "" && o.CAFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CertFile != "" {
		c, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cluster: TLS certificate %s / key %s: %w", o.CertFile, o.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("cluster: TLS CA %s: %w", o.CAFile, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("cluster: TLS CA %s: no PEM certificate in it", o.CAFile)
		}
		cfg.RootCAs = pool
	}
	return cfg, nil
}

// Client dials etcd. Dialling does not wait for a server: an unreachable
// cluster shows on the first request.
func (o *Options) Client() (*clientv3.Client, error) {
	if err := o.Complete(); err != nil {
		return nil, err
	}
	tc, err := o.TLSConfig()
	if err != nil {
		return nil, err
	}
	// The client logs every retry at warn level; only errors matter here.
	lc := zap.NewProductionConfig()
	lc.Level = zap.NewAtomicLevelAt(zap.ErrorLevel)
	cli, err := clientv3.New(clientv3.Config{
		LogConfig:            &lc,
		Endpoints:            o.Endpoints,
		TLS:                  tc,
		DialTimeout:          o.DialTimeout,
		DialKeepAliveTime:    o.LeaseTTL / 3,
		DialKeepAliveTimeout: o.LeaseTTL / 3,
		// Not RejectOldCluster: it asks every endpoint at once and fails
		// when one is down, which must not stop a host from starting.
		//
		// Reconnect within a second once an endpoint answers again: gRPC's
		// default backoff grows to two minutes, so after a partition of
		// 30 s a host would wait up to ~20 s more for its names to return.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           grpcbackoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: 2 * time.Second,
		})},
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: etcd %s: %w", strings.Join(o.Endpoints, ","), err)
	}
	return cli, nil
}

// Keys returns the key layout under o.Prefix.
func (o *Options) Keys() Keys { return Keys{Prefix: o.Prefix} }
