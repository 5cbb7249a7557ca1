// Package etcdtest starts a real single-member etcd server inside a test
// process (go.etcd.io/etcd/server/v3/embed), on loopback ports of its own
// and a data directory under t.TempDir(). Only tests import it: the server
// is never linked into the netalias or coredns binaries.
package etcdtest

import (
	"fmt"
	"net"
	"net/url"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// Server is a running embedded member.
type Server struct {
	Etcd     *embed.Etcd
	Endpoint string // client URL, http://127.0.0.1:PORT
}

// Start starts a member and stops it when the test ends.
func Start(t testing.TB) *Server { return start(t, nil) }

func start(t testing.TB, tlsInfo *transport.TLSInfo) *Server {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = "test"
	cfg.Dir = t.TempDir()
	// Quiet: at "error" a normal Close logs its listeners closing.
	cfg.LogLevel = "fatal"
	// fsync off would be faster but the tests measure what users get.
	cu, pu := freeURL(t), freeURL(t)
	if tlsInfo != nil {
		cu.Scheme = "https"
		cfg.ClientTLSInfo = *tlsInfo
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("start embedded etcd: %v", err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		t.Fatalf("embedded etcd: %v", err)
	case <-time.After(30 * time.Second):
		e.Close()
		t.Fatal("embedded etcd not ready after 30s")
	}
	return &Server{Etcd: e, Endpoint: cu.String()}
}

// Client returns a client of s, closed when the test ends.
func (s *Server) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.Endpoint}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// freeURL picks a free loopback port. Another process may take it before
// etcd binds it; on this test machine that race has not shown.
func freeURL(t testing.TB) url.URL {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	u, _ := url.Parse(fmt.Sprintf("http://%s", l.Addr()))
	return *u
}
