package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/netalias/netalias/internal/etcdtest"
)

// The options' TLS path against a real member that requires client
// certificates: with cert, key and CA it works; without the client
// certificate the server refuses.
func TestOptionsTLS(t *testing.T) {
	srv, f := etcdtest.StartTLS(t)
	ok := Options{Endpoints: []string{srv.Endpoint}, Host: "h1", CertFile: f.ClientCert, KeyFile: f.ClientKey, CAFile: f.CA, DialTimeout: 2 * time.Second}
	cli, err := ok.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, ok.Keys().Host("h1"), "{}"); err != nil {
		t.Fatalf("put over TLS: %v", err)
	}
	noCert := Options{Endpoints: []string{srv.Endpoint}, Host: "h1", CAFile: f.CA, DialTimeout: 2 * time.Second}
	cli2, err := noCert.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli2.Close()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel2()
	if _, err := cli2.Get(ctx2, "x"); err == nil {
		t.Fatal("a client without a certificate was served")
	}
	if _, err := (&Options{Endpoints: []string{srv.Endpoint}, Host: "h1", CAFile: f.ServerKey}).TLSConfig(); err == nil {
		t.Fatal("a key file accepted as CA bundle")
	}
}

// An unreachable cluster must not stop a host from starting: Client
// returns at once, the first request fails.
func TestClientDoesNotWaitForEtcd(t *testing.T) {
	o := Options{Endpoints: []string{"http://127.0.0.1:1", "http://127.0.0.1:2"}, Host: "h1"}
	start := time.Now()
	cli, err := o.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Client took %v with etcd down", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := cli.Get(ctx, "x"); err == nil {
		t.Fatal("a request to a down cluster succeeded")
	}
}
