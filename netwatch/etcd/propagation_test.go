package etcd

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/netalias/netalias/cluster"
	"github.com/netalias/netalias/internal/etcdtest"
)

// Publisher on one host → etcd → this source on another, on loopback with
// one member: the time from a connect's notification to the name being in
// the other host's store, with 0 and 1,000 other remote endpoints.
func TestPropagationPublisherToSource(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("a measurement: not under -short or the race detector")
	}
	srv := etcdtest.Start(t)
	var mu sync.Mutex
	d := &cluster.Desired{Gateways: map[string]cluster.GatewayRecord{}, Endpoints: map[cluster.EndpointID]cluster.EndpointRecord{}}
	get := func() (*cluster.Desired, error) {
		mu.Lock()
		defer mu.Unlock()
		c := &cluster.Desired{Gateways: d.Gateways, Endpoints: make(map[cluster.EndpointID]cluster.EndpointRecord, len(d.Endpoints))}
		for k, v := range d.Endpoints {
			c.Endpoints[k] = v
		}
		return c, nil
	}
	pcli := srv.Client(t)
	sess := cluster.NewSession(pcli, 5*time.Second, nil)
	pub := cluster.NewPublisher(pcli, keys, "h2", sess, get, nil)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); sess.Run(ctx) }()
	go func() { defer wg.Done(); pub.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	sink := start(t, New(srv.Client(t), keys, "h1"))

	measure := func(label, net string, base int) {
		var lat []time.Duration
		for i := 0; i < 200; i++ {
			name, ip := fmt.Sprintf("m%d", i), fmt.Sprintf("10.8.%d.%d", i/200, 2+i%200)
			start := time.Now()
			mu.Lock()
			d.Endpoints[cluster.EndpointID{Net: net, ID: name}] = cluster.EndpointRecord{Name: name, IPv4: ip, Container: name}
			mu.Unlock()
			pub.Notify()
			waitFor(t, name, 5*time.Second, func() bool { return len(addrs(sink.Store, net, name)) == 1 })
			lat = append(lat, time.Since(start))
		}
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
		t.Logf("%s: publisher → source over 200 connects: p50 %v, p99 %v", label, p50.Round(10*time.Microsecond), p99.Round(10*time.Microsecond))
		if p99 > time.Second {
			t.Errorf("%s: p99 %v", label, p99)
		}
	}
	measure("0 other remote endpoints", "small", 0)
	mu.Lock()
	for i := 0; i < 1000; i++ {
		id := fmt.Sprintf("bulk%d", i)
		d.Endpoints[cluster.EndpointID{Net: "big", ID: id}] = cluster.EndpointRecord{Name: id, IPv4: fmt.Sprintf("10.9.%d.%d", i/250, 2+i%250), Container: id}
	}
	mu.Unlock()
	pub.Notify()
	waitFor(t, "1,000 endpoints", 20*time.Second, func() bool {
		v := sink.Snapshot().Network("big")
		return v != nil && v.Endpoints() == 1000
	})
	measure("1,000 other remote endpoints", "big", 1000)
}
