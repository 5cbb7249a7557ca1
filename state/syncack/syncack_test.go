package syncack

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// serve runs a server with handle on dir until the test ends.
func serve(t *testing.T, dir string, handle Handler) *Server {
	t.Helper()
	s, err := Listen(dir, handle)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

// hung listens on a socket in dir's servers directory and never answers.
func hung(t *testing.T, dir, name string) {
	t.Helper()
	os.MkdirAll(ServersPath(dir), 0o755)
	ln, err := net.Listen("unix", filepath.Join(ServersPath(dir), name+sockSuffix))
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never answered
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
}

// stale leaves the socket file of a server that died.
func stale(t *testing.T, dir, name string, age time.Duration) string {
	t.Helper()
	os.MkdirAll(ServersPath(dir), 0o755)
	p := filepath.Join(ServersPath(dir), name+sockSuffix)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	old := time.Now().Add(-age)
	os.Chtimes(p, old, old)
	return p
}

func TestSyncWithoutServersReturnsAtOnce(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Now()
	if err := Sync(dir, []string{"n1"}, time.Second); err != nil {
		t.Fatalf("no servers directory: %v", err)
	}
	os.MkdirAll(ServersPath(dir), 0o755)
	stale(t, dir, "1-dead", time.Hour)
	if err := Sync(dir, []string{"n1"}, time.Second); err != nil {
		t.Fatalf("a dead server's socket: %v", err)
	}
	if d := time.Since(t0); d > 100*time.Millisecond {
		t.Fatalf("Sync without a live server took %v", d)
	}
}

func TestSyncAsksEveryServerAndWaits(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	var got [][]string
	handle := func(nets []string) error {
		time.Sleep(20 * time.Millisecond) // a rebuild takes a while
		mu.Lock()
		defer mu.Unlock()
		got = append(got, nets)
		return nil
	}
	serve(t, dir, handle)
	serve(t, dir, handle)
	if err := Sync(dir, []string{"n1", "n2"}, time.Second); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 || !slices.Equal(got[0], []string{"n1", "n2"}) || !slices.Equal(got[1], []string{"n1", "n2"}) {
		t.Fatalf("servers handled %v by the time Sync returned, want [n1 n2] twice", got)
	}
}

func TestSyncReportsAServerError(t *testing.T) {
	dir := t.TempDir()
	s := serve(t, dir, func([]string) error { return errors.New("disk on fire") })
	err := Sync(dir, []string{"n1"}, time.Second)
	if err == nil || !strings.Contains(err.Error(), "disk on fire") || !strings.Contains(err.Error(), s.Path()) {
		t.Fatalf("got %v, want the server's error naming its socket", err)
	}
}

// A hung server costs the timeout, not more; two hung servers cost it once.
func TestSyncBoundedByTimeout(t *testing.T) {
	dir := t.TempDir()
	hung(t, dir, "1-hung")
	hung(t, dir, "2-hung")
	var handled sync.WaitGroup
	handled.Add(1)
	serve(t, dir, func([]string) error { handled.Done(); return nil })
	t0 := time.Now()
	err := Sync(dir, []string{"n1"}, DefaultTimeout)
	d := time.Since(t0)
	if err == nil || !strings.Contains(err.Error(), "1-hung") || !strings.Contains(err.Error(), "2-hung") {
		t.Fatalf("got %v, want an error naming both hung servers", err)
	}
	if d < DefaultTimeout || d > DefaultTimeout+150*time.Millisecond {
		t.Fatalf("Sync took %v with hung servers, want about %v", d, DefaultTimeout)
	}
	handled.Wait() // the live server was asked all the same
}

func TestListenRemovesOnlyDeadSockets(t *testing.T) {
	dir := t.TempDir()
	dead := stale(t, dir, "1-dead", time.Hour)
	young := stale(t, dir, "2-young", 0) // may be a server still starting
	hung(t, dir, "3-live")
	s := serve(t, dir, func([]string) error { return nil })
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Errorf("old dead socket kept: %v", err)
	}
	if _, err := os.Stat(young); err != nil {
		t.Errorf("young socket removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(ServersPath(dir), "3-live"+sockSuffix)); err != nil {
		t.Errorf("live socket removed: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Path()); !os.IsNotExist(err) {
		t.Errorf("socket %s left after Close: %v", s.Path(), err)
	}
}
