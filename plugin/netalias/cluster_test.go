package netalias

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/coredns/caddy"
	"github.com/miekg/dns"

	"github.com/netalias/netalias/cluster"
	"github.com/netalias/netalias/internal/etcdtest"
	"github.com/netalias/netalias/state"
)

func TestParseCluster(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string
		check   func(*testing.T, *config)
	}{
		{in: "netalias {\n cluster http://127.0.0.1:2379,http://127.0.0.1:3379 http://10.0.0.1:2379\n}", check: func(t *testing.T, c *config) {
			o := c.cluster.opts
			if len(o.Endpoints) != 3 || o.Host == "" || o.Prefix != "/netalias/v1" || c.cluster.staleTTL != 1 {
				t.Errorf("defaults: %+v", c.cluster)
			}
		}},
		{in: "netalias {\n cluster https://e1:2379 {\n  host h1\n  prefix /x/v1\n  stale_ttl 2\n }\n ttl 7\n}", check: func(t *testing.T, c *config) {
			o := c.cluster.opts
			if o.Host != "h1" || o.Prefix != "/x/v1" || c.cluster.staleTTL != 2 || c.ttl != 7 {
				t.Errorf("got %+v ttl %d", c.cluster, c.ttl)
			}
		}},
		{in: "netalias {\n state off\n cluster http://e1:2379 {\n  host h1\n }\n}", check: func(t *testing.T, c *config) {
			if c.stateDir != "" || c.cluster == nil {
				t.Errorf("got %+v", c)
			}
		}},
		{in: "netalias {\n cluster\n}", wantErr: "at least one etcd URL"},
		{in: "netalias {\n cluster e1:2379\n}", wantErr: `"e1:2379" is not an etcd client URL`},
		{in: "netalias {\n cluster http://e1:2379 {\n  host a/b\n }\n}", wantErr: `host name "a/b"`},
		{in: "netalias {\n cluster http://e1:2379 {\n  stale_ttl x\n }\n}", wantErr: "stale_ttl"},
		{in: "netalias {\n cluster http://e1:2379 {\n  tls /nonexistent.pem /nonexistent.key\n }\n}", wantErr: "/nonexistent.pem"},
		{in: "netalias {\n cluster http://e1:2379 {\n  tls one\n }\n}", wantErr: "wrong number of arguments for tls"},
		{in: "netalias {\n cluster http://e1:2379 {\n  bogus 1\n }\n}", wantErr: "unknown property 'bogus'"},
		{in: "netalias {\n cluster http://e1:2379 {\n  prefix x\n }\n}", wantErr: "prefix"},
		{in: "netalias {\n cluster http://e1:2379\n cluster http://e2:2379\n}", wantErr: "twice"},
	}
	for _, tt := range tests {
		c, err := parse(caddy.NewTestController("dns", tt.in))
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: error %v, want one containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		tt.check(t, c)
	}
}

// A real server in cluster mode answers another host's names from etcd,
// with the short stale TTL while etcd is unreachable, and the normal TTL
// again once it is back.
func TestServerClusterRemoteNamesAndStaleTTL(t *testing.T) {
	srv := etcdtest.Start(t)
	proxy := etcdtest.NewProxy(t, srv)
	w := srv.Client(t)
	keys := cluster.Keys{Prefix: cluster.DefaultPrefix}
	rec := `{"name":"remote1","ipv4":"10.202.9.70","container":"/run/netns/c1"}`
	if _, err := w.Put(context.Background(), keys.Endpoint("h2", "clnet", "e1"), rec); err != nil {
		t.Fatal(err)
	}
	local := &state.File{Network: state.Network{ID: state.NewID(), Name: "clnet", Subnet: netip.MustParsePrefix("10.202.9.0/24"), Gateway: netip.MustParseAddr("10.202.9.1")},
		Endpoints: []state.Endpoint{{ID: state.NewID(), Name: "local1", IPv4: netip.MustParseAddr("10.202.9.2"), Container: "/run/netns/c1"}}}
	addr, _ := startServer(t, fmt.Sprintf("cluster %s {\n host h1\n stale_ttl 1\n }", proxy.Endpoint), local)
	waitAnswer(t, addr, "remote1.clnet.", 1)
	if r := exchange(t, "udp", addr, "remote1.clnet.", dns.TypeA); r.Answer[0].Header().Ttl != 5 {
		t.Fatalf("TTL %d while etcd is up, want 5", r.Answer[0].Header().Ttl)
	}
	proxy.Cut()
	deadline := time.Now().Add(8 * time.Second)
	for {
		r := exchange(t, "udp", addr, "remote1.clnet.", dns.TypeA)
		if len(r.Answer) != 1 {
			t.Fatalf("remote name lost while etcd is unreachable: %v", r)
		}
		if r.Answer[0].Header().Ttl == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("TTL never dropped to stale_ttl while etcd is unreachable")
		}
		time.Sleep(50 * time.Millisecond)
	}
	proxy.Heal()
	deadline = time.Now().Add(10 * time.Second)
	for exchange(t, "udp", addr, "remote1.clnet.", dns.TypeA).Answer[0].Header().Ttl != 5 {
		if time.Now().After(deadline) {
			t.Fatal("TTL not back to 5 after etcd returned")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestParseClusterBlockThenMore(t *testing.T) {
	c, err := parse(caddy.NewTestController("dns", "netalias {\n cluster http://e1:2379 {\n  host h1\n }\n netlink off\n ttl 3\n}"))
	if err != nil || c.netlink || c.ttl != 3 || c.cluster.opts.Host != "h1" {
		t.Fatalf("%v %+v", err, c)
	}
	if _, err := parse(caddy.NewTestController("dns", "netalias {\n cluster http://e1:2379 {\n  host h1\n")); err == nil {
		t.Fatal("unclosed cluster block accepted")
	}
}

// etcd down when CoreDNS starts: the server still becomes ready and
// answers this host's names.
func TestServerClusterStartsWithEtcdDown(t *testing.T) {
	local := &state.File{Network: state.Network{ID: state.NewID(), Name: "clnet2", Subnet: netip.MustParsePrefix("10.202.10.0/24"), Gateway: netip.MustParseAddr("10.202.10.1")},
		Endpoints: []state.Endpoint{{ID: state.NewID(), Name: "local1", IPv4: netip.MustParseAddr("10.202.10.2"), Container: "/run/netns/c1"}}}
	start := time.Now()
	addr, _ := startServer(t, "cluster http://127.0.0.1:1 {\n host h1\n }", local)
	waitAnswer(t, addr, "local1.clnet2.", 1)
	t.Logf("ready and answering local names %v after start with etcd down", time.Since(start).Round(time.Millisecond))
}
