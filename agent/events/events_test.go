package events

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

func TestPublishReachesSubscriber(t *testing.T) {
	sock := filepath.Join(t.TempDir(), SocketName)
	srv, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go srv.Serve(ctx)
	got := make(chan Event, 1)
	go Subscribe(ctx, sock, func(ev Event) error { got <- ev; return nil })
	deadline := time.After(5 * time.Second)
	for {
		Publish(sock, Event{Type: "endpoint", Action: "connect", Network: "testnet", Endpoint: "c1", IPv4: "10.201.0.2"})
		select {
		case ev := <-got:
			if ev.Network != "testnet" || ev.Endpoint != "c1" || ev.Action != "connect" {
				t.Fatalf("got %+v", ev)
			}
			return
		case <-time.After(50 * time.Millisecond): // subscriber not registered yet
		case <-deadline:
			t.Fatal("no event received")
		}
	}
}

func TestPublishWithoutAgentIsHarmless(t *testing.T) {
	Publish(filepath.Join(t.TempDir(), SocketName), Event{Type: "network", Action: "create"})
	if _, err := Listen(filepath.Join(t.TempDir(), "x", SocketName)); err == nil {
		t.Fatal("listen in a missing directory: want error")
	}
}
