package test

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// Three hosts, each with an etcd member, form one cluster; records
// published on host 2 are seen by host 1's etcd source, one etcd revision
// per connect; when host 2 dies (its member killed, its session gone) its
// records vanish on host 1 within TTL + 2 s, all in one step. Host 2 is
// made a follower first: a leader's death adds an election and a renewal
// of every lease by the new leader (TestClusterLeaderHostDeath).
func TestClusterThreeHostsPropagationAndHostDeath(t *testing.T) {
	clHostDeath(t, false)
}

// As above, host 2 holding the etcd leader: its records go within
// TTL + 5 s, never before the TTL.
func TestClusterLeaderHostDeath(t *testing.T) {
	clHostDeath(t, true)
}

func clHostDeath(t *testing.T, leader bool) {
	c := newClusterTopo(t, 3)
	c.startEtcd()
	h1, h2, h3 := c.hosts[0], c.hosts[1], c.hosts[2]
	const ttl = 2 * time.Second
	// Leadership settles before any lease exists: a new leader extends
	// every lease once (by its election timeout), which would blur the
	// follower case.
	bound := ttl + 2*time.Second
	if leader {
		c.moveLeader(h2)
		bound = ttl + 5*time.Second
	} else {
		c.moveLeader(h3)
	}
	cli1, cli2 := c.client(h1), c.client(h2)
	st1 := clStartSource(t, cli1, h1.name)
	pub2 := clStartPublisher(t, cli2, h2.name, ttl)

	n := 200
	if leader {
		n = 20
	}
	rev := func() int64 {
		r, err := cli1.Get(context.Background(), "rev-probe")
		if err != nil {
			t.Fatal(err)
		}
		return r.Header.Revision
	}
	// Let the first publish (the host record) land before counting.
	for pub2.pub.Writes() == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	rev0 := rev()
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
	if d := rev() - rev0; d != int64(n) {
		t.Errorf("%d connects took %d etcd revisions, want one each", n, d)
	}
	t.Logf("propagation publisher(h2) → etcd(h2 → raft) → source(h1) over %d connects: p50 %v, p99 %v, max %v",
		n, clPercentile(lat, 0.5).Round(10*time.Microsecond), clPercentile(lat, 0.99).Round(10*time.Microsecond), clPercentile(lat, 1).Round(10*time.Microsecond))

	if l := c.leader(cli1); (l == h2) != leader {
		t.Fatalf("etcd leader moved to %v during the test", l.name)
	}
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
	t.Logf("h2 (etcd leader: %v) dead: its %d records gone on h1 after %v (TTL %v, bound %v)", leader, n, gone.Round(time.Millisecond), ttl, bound)
	if gone > bound {
		t.Fatalf("records gone after %v, want within %v", gone, bound)
	}
	// The last keepalive (every TTL/3) may precede the death by TTL/3.
	if gone < ttl*2/3-200*time.Millisecond {
		t.Fatalf("records gone after %v, before the %v TTL could expire", gone, ttl)
	}
}

// Host 2 cut off from the others (a silent drop on its underlay) longer
// than the TTL: the others drop its records as if it died; it keeps
// changing locally; after the heal it grants a new lease and publishes
// everything again, and host 1 has all its names back within 5 s.
func TestClusterPartitionHeals(t *testing.T) {
	c := newClusterTopo(t, 3)
	c.startEtcd()
	h1, h2, h3 := c.hosts[0], c.hosts[1], c.hosts[2]
	c.moveLeader(h3)
	const ttl = 2 * time.Second
	st1 := clStartSource(t, c.client(h1), h1.name)
	pub2 := clStartPublisher(t, c.client(h2), h2.name, ttl)
	for i := 0; i < 10; i++ {
		pub2.connect("testnet", fmt.Sprintf("ep%d", i), fmt.Sprintf("c%d", i), fmt.Sprintf("10.212.1.%d", 2+i))
	}
	deadline := time.Now().Add(5 * time.Second)
	for !clHas(st1, "testnet", "c9", "10.212.1.11") {
		if time.Now().After(deadline) {
			t.Fatal("h2's records never reached h1")
		}
		time.Sleep(5 * time.Millisecond)
	}

	heal := c.partition(h2)
	cut := time.Now()
	for clHas(st1, "testnet", "c0", "10.212.1.2") {
		if time.Since(cut) > ttl+5*time.Second {
			t.Fatalf("h2's records still on h1 %v into its partition", time.Since(cut))
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("partitioned h2's records gone on h1 after %v (TTL %v)", time.Since(cut).Round(time.Millisecond), ttl)
	// A connect on h2 during the partition: local only for now.
	pub2.connect("testnet", "ep10", "late", "10.212.1.12")
	time.Sleep(ttl)
	heal()
	healed := time.Now()
	for !(clHas(st1, "testnet", "c0", "10.212.1.2") && clHas(st1, "testnet", "late", "10.212.1.12")) {
		if time.Since(healed) > 5*time.Second {
			t.Fatalf("h2's records not back on h1 5s after the heal (lease losses on h2: %d)", pub2.session.LeaseLosses())
		}
		time.Sleep(5 * time.Millisecond)
	}
	back := time.Since(healed)
	if v := st1.Snapshot().Network("testnet"); v == nil || v.Endpoints() != 11 {
		t.Fatalf("after the heal h1 has %v endpoints of h2, want 11", v.Endpoints())
	}
	if pub2.session.LeaseLosses() == 0 {
		t.Error("h2 never noticed it lost its lease")
	}
	t.Logf("after the heal all 11 names of h2 back on h1 in %v (h2 lost its lease %d time(s))", back.Round(time.Millisecond), pub2.session.LeaseLosses())
}
