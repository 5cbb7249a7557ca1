// Package syncack gives netalias read-your-writes: when the agent's
// connect or disconnect (or a CNI ADD or DEL) returns, every running
// netalias CoreDNS that reads the same state directory already answers
// accordingly, instead of some milliseconds later when fsnotify tells it.
//
// Each running state-directory source (netwatch.StateDir) is a Server: it
// listens on DIR/servers/PID-RAND.sock and, asked about some networks,
// re-reads their files at once, publishes the new snapshot and only then
// replies. The agent calls Sync after each state write: it asks every
// live server in parallel and waits for all replies, at most the timeout
// it is given (DefaultTimeout, 200 ms: a hung server delays an attach by
// that much, no more). With no server running, Sync returns at once; the
// socket of a server that died costs one refused connect.
//
// The protocol is one JSON request line, {"networks":["n1"]}, and one
// JSON reply line, {} or {"error":"..."}, per connection.
package syncack

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultTimeout bounds a Sync: what a hung server can cost an attach.
const DefaultTimeout = 200 * time.Millisecond

// ServersDir is the directory of the servers' sockets under the state
// directory.
const ServersDir = "servers"

// sockSuffix ends every server socket's name.
const sockSuffix = ".sock"

// staleAge is how old a socket that refuses connections must be before a
// starting server removes it (younger, it may be a server between its
// bind and its listen).
const staleAge = 10 * time.Second

// requestTimeout bounds how long a server waits for a client's request.
const requestTimeout = 5 * time.Second

// ServersPath returns DIR/servers.
func ServersPath(dir string) string { return filepath.Join(dir, ServersDir) }

type request struct {
	Networks []string `json:"networks"`
}

type reply struct {
	Error string `json:"error,omitempty"`
}

// Handler re-reads the named networks (none: every network) and publishes
// them before it returns.
type Handler func(networks []string) error

// Server answers Sync requests for one state-directory source.
type Server struct {
	ln     *net.UnixListener
	path   string
	handle Handler
	wg     sync.WaitGroup
	once   sync.Once
}

// Listen creates DIR/servers/PID-RAND.sock, after removing the sockets of
// servers that died. Serve answers on it.
func Listen(dir string, handle Handler) (*Server, error) {
	sd := ServersPath(dir)
	if err := os.MkdirAll(sd, 0o755); err != nil {
		return nil, fmt.Errorf("sync socket directory %s: %w", sd, err)
	}
	removeStale(sd)
	b := make([]byte, 4)
	rand.Read(b)
	p := filepath.Join(sd, fmt.Sprintf("%d-%s%s", os.Getpid(), hex.EncodeToString(b), sockSuffix))
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("sync socket %s: %w", p, err)
	}
	ln.SetUnlinkOnClose(true)
	return &Server{ln: ln, path: p, handle: handle}, nil
}

// Path is the server's socket.
func (s *Server) Path() string { return s.path }

// Serve answers requests until ctx is done or Close, then removes the
// socket and waits for the requests in flight.
func (s *Server) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	defer s.wg.Wait()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.Close()
			return fmt.Errorf("sync socket %s: %w", s.path, err)
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(c)
		}()
	}
}

// Close stops the server and removes its socket.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() { err = s.ln.Close() })
	return err
}

func (s *Server) serve(c *net.UnixConn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(requestTimeout))
	var req request
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err == nil {
		err = json.Unmarshal(line, &req)
	}
	var rep reply
	if err != nil {
		rep.Error = fmt.Sprintf("bad request: %v", err)
	} else if err := s.handle(req.Networks); err != nil {
		rep.Error = err.Error()
	}
	out, _ := json.Marshal(rep)
	c.Write(append(out, '\n'))
}

// removeStale removes sockets in sd that refuse connections and are old
// enough not to be a server still starting.
func removeStale(sd string) {
	ents, err := os.ReadDir(sd)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), sockSuffix) {
			continue
		}
		p := filepath.Join(sd, e.Name())
		fi, err := e.Info()
		if err != nil || time.Since(fi.ModTime()) < staleAge {
			continue
		}
		c, err := net.DialTimeout("unix", p, 50*time.Millisecond)
		if err == nil {
			c.Close()
			continue
		}
		if errors.Is(err, syscall.ECONNREFUSED) {
			os.Remove(p)
		}
	}
}

// Sync asks every server of the state directory dir to re-read networks
// (none: every network) and waits until all have published, or until
// timeout (DefaultTimeout when 0 or less). It returns at once when no
// server runs. A socket left by a dead server is skipped. The error names
// each live server that failed or did not answer in time; the state on
// disk is right either way, and such a server catches up through its own
// file watch.
func Sync(dir string, networks []string, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	sd := ServersPath(dir)
	ents, err := os.ReadDir(sd)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sync: list servers in %s: %w", sd, err)
	}
	deadline := time.Now().Add(timeout)
	req, _ := json.Marshal(request{Networks: networks})
	req = append(req, '\n')
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), sockSuffix) {
			continue
		}
		p := filepath.Join(sd, e.Name())
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := ask(p, req, deadline); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// ask sends one request to the server at p; a dead server's socket is no
// error.
func ask(p string, req []byte, deadline time.Time) error {
	d := net.Dialer{Deadline: deadline}
	c, err := d.Dial("unix", p)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, os.ErrNotExist) {
			return nil // its server is gone
		}
		return fmt.Errorf("sync server %s: %w", p, err)
	}
	defer c.Close()
	c.SetDeadline(deadline)
	if _, err := c.Write(req); err != nil {
		return fmt.Errorf("sync server %s: %w", p, err)
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("sync server %s: no reply: %w", p, err)
	}
	var rep reply
	if err := json.Unmarshal(line, &rep); err != nil {
		return fmt.Errorf("sync server %s: bad reply %q: %w", p, line, err)
	}
	if rep.Error != "" {
		return fmt.Errorf("sync server %s: %s", p, rep.Error)
	}
	return nil
}
