package test

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/netalias/netalias/internal/testenv"
)

// BenchmarkDockerEventToRecord measures how long after the engine emits an
// event (its own timestamp) the source has published the change: network
// connect and disconnect of a running container, through the real Docker
// Engine. Target: well under 50 ms. Reports the median and the worst case.
func BenchmarkDockerEventToRecord(b *testing.B) {
	testenv.RequireDocker(b)
	e := engine{bin: "docker"}
	img := busyboxImage(b, "docker")
	subnet, _ := dockerSubnet()
	net := e.network(b, "--subnet", subnet)
	ctr := natestName("bench")
	e.run(b, ctr, img, "sleep", "3600")

	src, sink := startSource(b, "unix:///var/run/docker.sock")
	src.Logf = func(string, ...any) {}
	eventually(b, 10*time.Second, "first sync", src.Synced)

	cli, err := client.NewClientWithOpts(client.WithHost("unix:///var/run/docker.sock"), client.WithAPIVersionNegotiation())
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	msgs, errs := cli.Events(ctx, events.ListOptions{Filters: filters.NewArgs(
		filters.Arg("type", "network"), filters.Arg("network", net))})
	eventTime := func(action events.Action) time.Time {
		for {
			select {
			case m := <-msgs:
				if m.Action == action {
					return time.Unix(0, m.TimeNano)
				}
			case err := <-errs:
				b.Fatal(err)
			case <-time.After(10 * time.Second):
				b.Fatalf("no %s event", action)
			}
		}
	}
	published := func(want bool) time.Time {
		eventually(b, 5*time.Second, fmt.Sprintf("%s on %s: %v", ctr, net, want), func() bool {
			return (len(sink.lookup(ctr, net)) == 1) == want
		})
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return sink.updated[net]
	}

	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e.must(b, "network", "connect", net, ctr)
		t0 := eventTime(events.ActionConnect)
		lat = append(lat, published(true).Sub(t0))
		e.must(b, "network", "disconnect", net, ctr)
		t0 = eventTime(events.ActionDisconnect)
		lat = append(lat, published(false).Sub(t0))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "ms-median")
	b.ReportMetric(float64(slices.Max(lat).Microseconds())/1000, "ms-max")
}
