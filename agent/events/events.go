// Package events carries what changed (networks created and removed,
// endpoints connected and disconnected) from whoever made the change to
// `netalias events` readers, through the agent's unix socket
// (DIR/agent.sock). The wire format is JSON lines, like `docker events
// --format '{{json .}}'`.
//
// A client opens the socket and sends one line: {"subscribe":true} to
// receive every later event as a line, or an Event to publish it.
package events

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// SocketName is the socket's file name inside the state directory.
const SocketName = "agent.sock"

// SocketPath returns the socket of a state directory.
func SocketPath(stateDir string) string { return filepath.Join(stateDir, SocketName) }

// Event is one change. Field names are stable.
type Event struct {
	Time     time.Time `json:"time"`
	Type     string    `json:"type"`   // "network" or "endpoint"
	Action   string    `json:"action"` // create, remove | connect, disconnect
	Network  string    `json:"network"`
	Endpoint string    `json:"endpoint,omitempty"`
	Aliases  []string  `json:"aliases,omitempty"`
	IPv4     string    `json:"ipv4,omitempty"`
	IPv6     string    `json:"ipv6,omitempty"`
	Subnet   string    `json:"subnet,omitempty"`
	Netns    string    `json:"netns,omitempty"`
	Reason   string    `json:"reason,omitempty"` // e.g. "reconcile" when the agent cleaned up
}

type hello struct {
	Subscribe bool `json:"subscribe,omitempty"`
	*Event
}

// Publish sends evs to the agent listening on socket, if any. It is best
// effort and quick: no agent means nothing to do.
func Publish(socket string, evs ...Event) {
	if len(evs) == 0 {
		return
	}
	c, err := net.DialTimeout("unix", socket, 100*time.Millisecond)
	if err != nil {
		return
	}
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	w := bufio.NewWriter(c)
	enc := json.NewEncoder(w)
	for i := range evs {
		enc.Encode(hello{Event: &evs[i]})
	}
	w.Flush()
}

// Subscribe connects to the agent and calls fn for each event until ctx is
// done or the agent goes away.
func Subscribe(ctx context.Context, socket string, fn func(Event) error) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return fmt.Errorf("no agent listening on %s (start `netalias agent`): %w", socket, err)
	}
	defer c.Close()
	// Closing the connection unblocks the read when ctx ends; nothing
	// outlives the call.
	defer context.AfterFunc(ctx, func() { c.Close() })()
	if _, err := c.Write([]byte("{\"subscribe\":true}\n")); err != nil {
		return err
	}
	dec := json.NewDecoder(bufio.NewReader(c))
	for {
		var ev Event
		if err := dec.Decode(&ev); err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
}

// Server is the agent's side: it accepts publishers and subscribers and
// fans every event out to all subscribers.
type Server struct {
	ln   net.Listener
	mu   sync.Mutex
	subs map[chan Event]struct{}
}

// Listen creates the socket (replacing a stale one).
func Listen(socket string) (*Server, error) {
	if c, err := net.DialTimeout("unix", socket, 100*time.Millisecond); err == nil {
		c.Close()
		return nil, fmt.Errorf("an agent is already listening on %s", socket)
	}
	os.Remove(socket)
	ln, err := net.Listen("unix", socket)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", socket, err)
	}
	return &Server{ln: ln, subs: map[chan Event]struct{}{}}, nil
}

// Emit sends ev to every subscriber; a subscriber too slow to keep up
// loses events rather than stalling the agent.
func (s *Server) Emit(ev Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch := range s.subs {
		select {
		case ch <- ev:
		default:
		}
	}
}

// Close stops the listener: a running Serve returns an error.
func (s *Server) Close() error { return s.ln.Close() }

// Serve accepts connections until ctx is done, then closes them, waits
// for their goroutines and removes the socket. An accept error (the
// listener closed under it) is returned.
func (s *Server) Serve(ctx context.Context) error {
	defer context.AfterFunc(ctx, func() { s.ln.Close() })()
	defer os.Remove(s.ln.Addr().String())
	var wg sync.WaitGroup
	conns := map[net.Conn]struct{}{}
	var mu sync.Mutex
	defer func() {
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("event socket %s: %w", s.ln.Addr(), err)
		}
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.handle(ctx, c)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		}()
	}
}

func (s *Server) handle(ctx context.Context, c net.Conn) {
	defer c.Close()
	dec := json.NewDecoder(bufio.NewReader(c))
	for {
		var h hello
		if err := dec.Decode(&h); err != nil {
			return
		}
		if h.Subscribe {
			s.stream(ctx, c)
			return
		}
		if h.Event != nil {
			s.Emit(*h.Event)
		}
	}
}

func (s *Server) stream(ctx context.Context, c net.Conn) {
	ch := make(chan Event, 256)
	s.mu.Lock()
	s.subs[ch] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.subs, ch)
		s.mu.Unlock()
	}()
	// Notice a subscriber that hangs up; the reader ends when handle
	// closes the connection, and stream waits for it.
	gone := make(chan struct{})
	go func() { io.Copy(io.Discard, c); close(gone) }()
	defer func() { c.Close(); <-gone }()
	enc := json.NewEncoder(c)
	for {
		select {
		case <-ctx.Done():
			return
		case <-gone:
			return
		case ev := <-ch:
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if err := enc.Encode(ev); err != nil {
				return
			}
		}
	}
}
