package test

import (
	"fmt"
	"testing"
	"time"
)

// Three hosts, each with an etcd member, form one cluster; a record
// published on host 2 is seen by host 1's etcd source; when host 2 dies
// (its member killed, its session gone) its records vanish on host 1
// within TTL + 2 s. Host 2 is made a follower first: a leader's death adds
// an election and a renewal of every lease by the new leader (TTL + 5 s,
// a case of its own).
func TestClusterThreeHostsPropagationAndHostDeath(t *testing.T) {
	c := newClusterTopo(t, 3)
	c.startEtcd()
	h1, h2 := c.hosts[0], c.hosts[1]
	const ttl = 2 * time.Second
	cli1, cli2 := c.client(h1), c.client(h2)
	st1 := clStartSource(t, cli1, h1.name)
	pub2 := clStartPublisher(t, cli2, h2.name, ttl)

	// Propagation: connect on host 2 → record in host 1's store.
	const n = 200
	var lat []time.Duration
	for i := 0; i < n; i++ {
		name, ip := fmt.Sprintf("c%d", i), fmt.Sprintf("10.212.%d.%d", 1+i/250, 2+i%250)
		start := time.Now()
		pub2.connect("testnet", fmt.Sprintf("ep%d", i), name, ip)
		for !clHas(st1, "testnet", name, ip) {
			if time.Since(start) > 5*time.Second {
				t.Fatalf("%s.testnet published on h2 not seen on h1 after 5s", name)
			}
			time.Sleep(200 * time.Microsecond)
		}
		lat = append(lat, time.Since(start))
	}
	t.Logf("propagation publisher(h2) → source(h1) over %d connects: p50 %v, p99 %v, max %v",
		n, clPercentile(lat, 0.5).Round(10*time.Microsecond), clPercentile(lat, 0.99).Round(10*time.Microsecond), clPercentile(lat, 1).Round(10*time.Microsecond))
	if w := pub2.pub.Writes(); w > n+1 {
		t.Errorf("%d etcd writes for %d connects", w, n)
	}

	// Host 2 dies.
	c.moveLeader(c.hosts[2])
	bound := ttl + 2*time.Second
	died := time.Now()
	c.killEtcd(h2)
	pub2.stop()
	for clHas(st1, "testnet", "c0", "10.212.1.2") {
		if time.Since(died) > bound+5*time.Second {
			t.Fatalf("h2's records still on h1 %v after its death", time.Since(died))
		}
		time.Sleep(10 * time.Millisecond)
	}
	gone := time.Since(died)
	if v := st1.Snapshot().Network("testnet"); v != nil {
		t.Fatalf("h2's records went in more than one step: %d endpoints left", v.Endpoints())
	}
	t.Logf("h2 dead: its %d records gone on h1 after %v (TTL %v, bound %v)", n, gone.Round(time.Millisecond), ttl, bound)
	if gone > bound {
		t.Fatalf("records gone after %v, want within %v", gone, bound)
	}
	if gone < ttl-500*time.Millisecond {
		t.Fatalf("records gone after %v, before the %v TTL could expire", gone, ttl)
	}
}
