package events

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"runtime"
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

// settle waits until the number of goroutines is back to base.
func settle(t *testing.T, base int, what string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%s left %d goroutine(s) behind:\n%s", what, runtime.NumGoroutine()-base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Subscribe's goroutines end with the call, even while ctx lives on.
func TestSubscribeLeavesNoGoroutine(t *testing.T) {
	sock := filepath.Join(t.TempDir(), SocketName)
	srv, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx) }()
	defer func() { stop(); <-served }()

	ctx := context.Background() // never done: only the call's end may stop its goroutines
	base := runtime.NumGoroutine()
	errStop := errors.New("enough")
	done := make(chan error, 1)
	go func() { done <- Subscribe(ctx, sock, func(Event) error { return errStop }) }()
	for {
		Publish(sock, Event{Type: "network", Action: "create", Network: "n"})
		select {
		case err := <-done:
			if !errors.Is(err, errStop) {
				t.Fatalf("Subscribe() = %v", err)
			}
			settle(t, base, "Subscribe")
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Serve's goroutines (per connection included) end with the call, and an
// accept error is returned.
func TestServeLeavesNoGoroutine(t *testing.T) {
	sock := filepath.Join(t.TempDir(), SocketName)
	srv, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	base := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx) }()
	// A subscriber and a publisher that keep their connections open.
	for _, hello := range []string{"{\"subscribe\":true}\n", "{\"event\":{\"type\":\"network\"}}\n"} {
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte(hello)); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	cancel()
	if err := <-served; err != nil {
		t.Fatalf("Serve() after cancel = %v", err)
	}
	settle(t, base, "Serve")

	// A listener closed under a running Serve is an error, not silence.
	srv2, err := Listen(filepath.Join(t.TempDir(), SocketName))
	if err != nil {
		t.Fatal(err)
	}
	go func() { served <- srv2.Serve(context.Background()) }()
	time.Sleep(20 * time.Millisecond)
	srv2.Close()
	select {
	case err := <-served:
		if err == nil {
			t.Error("Serve() = nil after its listener was closed")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Serve did not return after its listener was closed")
	}
}
