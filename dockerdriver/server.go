package dockerdriver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

// ContentType is the media type of every answer (Docker's plugin protocol
// v1.2, what dockerd sends and expects).
const ContentType = "application/vnd.docker.plugins.v1.2+json"

// PluginDir is where dockerd looks for legacy plugins' sockets.
const PluginDir = "/run/docker/plugins"

// DefaultName is the plugin's name unless told otherwise: the -d and
// --ipam-driver value of `docker network create`.
const DefaultName = "netalias"

// SocketPath returns where dockerd finds plugin name.
func SocketPath(name string) string {
	return filepath.Join(PluginDir, name+".sock")
}

// pluginName is what dockerd accepts as a driver name that is also a
// harmless file name.
var pluginName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// Config configures a Server.
type Config struct {
	// Name is the plugin's name (DefaultName when empty).
	Name string
	// Socket is the unix socket to serve on; SocketPath(Name) when empty.
	Socket string
	// StateDir is the netalias state directory; the Docker-ID map is
	// MapPath(StateDir, Name).
	StateDir string
	Backend  Backend
	Logger   *slog.Logger // slog.Default() when nil
}

// Server serves Docker's network driver and IPAM driver protocols for one
// plugin name.
type Server struct {
	name    string
	socket  string
	mapPath string
	be      Backend
	log     *slog.Logger
	mux     *http.ServeMux

	mu sync.Mutex
	// nets is the Docker-ID map, as on disk.
	nets map[string]*mapping
	// pools are the pools handed to Docker whose network is not created
	// yet (Docker asks for the pool first), by pool ID. In memory only: a
	// network create in flight when the plugin restarts fails and Docker
	// releases its pools.
	pools map[string]*pendingPool

	srv       *http.Server
	ln        net.Listener
	closeOnce sync.Once
	closed    chan struct{} // closed when Close is done
	closeErr  error
}

// New loads the Docker-ID map and returns a server, not yet listening.
func New(cfg Config) (*Server, error) {
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if !pluginName.MatchString(cfg.Name) {
		return nil, fmt.Errorf("invalid plugin name %q: use letters, digits, '-', '_' and '.', starting with a letter or digit", cfg.Name)
	}
	if cfg.Backend == nil {
		return nil, errors.New("docker driver: no backend")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("docker driver: no state directory")
	}
	if cfg.Socket == "" {
		cfg.Socket = SocketPath(cfg.Name)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{
		name:    cfg.Name,
		socket:  cfg.Socket,
		mapPath: MapPath(cfg.StateDir, cfg.Name),
		be:      cfg.Backend,
		log:     cfg.Logger.With("plugin", cfg.Name),
		pools:   map[string]*pendingPool{},
		closed:  make(chan struct{}),
	}
	var err error
	if s.nets, err = loadMap(s.mapPath); err != nil {
		return nil, err
	}
	s.routes()
	return s, nil
}

// Socket is the path the server listens on.
func (s *Server) Socket() string { return s.socket }

// Handler is the protocol as an http.Handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.mux }

// Listen creates the socket. A socket file left by a dead plugin is
// replaced; one that answers is another plugin serving the same name, and
// is an error.
func (s *Server) Listen() error {
	if err := os.MkdirAll(filepath.Dir(s.socket), 0o755); err != nil {
		return fmt.Errorf("plugin socket directory: %w", err)
	}
	if c, err := net.DialTimeout("unix", s.socket, time.Second); err == nil {
		c.Close()
		return fmt.Errorf("plugin socket %s is in use: is plugin %q already running?", s.socket, s.name)
	}
	if fi, err := os.Lstat(s.socket); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("plugin socket %s exists and is not a socket", s.socket)
		}
		if err := os.Remove(s.socket); err != nil {
			return fmt.Errorf("stale plugin socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", s.socket)
	if err != nil {
		return fmt.Errorf("plugin socket: %w", err)
	}
	if err := os.Chmod(s.socket, 0o660); err != nil {
		ln.Close()
		return fmt.Errorf("plugin socket: %w", err)
	}
	s.ln = ln
	return nil
}

// Serve answers requests until ctx ends or Close, then removes the socket,
// so that dockerd finds no plugin rather than a dead one. It listens first
// when Listen was not called. When it returns, the socket is gone (a new
// server on the same path may start at once).
func (s *Server) Serve(ctx context.Context) error {
	if s.ln == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.srv = &http.Server{Handler: s.mux, ReadHeaderTimeout: 10 * time.Second}
	srv := s.srv
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	s.log.Info("serving Docker network and IPAM driver", "socket", s.socket, "map", s.mapPath)
	err := srv.Serve(s.ln)
	if errors.Is(err, http.ErrServerClosed) {
		// Serve returns as soon as the listener closes: wait for the
		// requests in flight and the socket's removal.
		return s.Close()
	}
	s.Close()
	return err
}

// Close stops serving (requests in flight finish, for up to 10 s) and
// removes the socket. It may be called more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		srv := s.srv
		s.mu.Unlock()
		if srv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			s.closeErr = srv.Shutdown(ctx)
			cancel()
		} else if s.ln != nil {
			s.closeErr = s.ln.Close()
		}
		if err := os.Remove(s.socket); err != nil && !errors.Is(err, os.ErrNotExist) && s.closeErr == nil {
			s.closeErr = err
		}
		close(s.closed)
	})
	<-s.closed
	return s.closeErr
}

// manifest is the answer to /Plugin.Activate.
type manifest struct {
	Implements []string
}

func (s *Server) routes() {
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// dockerd skips a method that answers 404 (optional methods).
		writeJSON(w, http.StatusNotFound, map[string]string{"Err": "unknown method " + r.URL.Path})
	})
	s.mux.HandleFunc("POST /Plugin.Activate", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, manifest{Implements: []string{"NetworkDriver", "IpamDriver"}})
	})
	for path, h := range map[string]handler{
		"/NetworkDriver.GetCapabilities":             s.capabilities,
		"/NetworkDriver.CreateNetwork":               s.createNetwork,
		"/NetworkDriver.DeleteNetwork":               s.deleteNetwork,
		"/NetworkDriver.CreateEndpoint":              s.createEndpoint,
		"/NetworkDriver.EndpointOperInfo":            s.endpointOperInfo,
		"/NetworkDriver.DeleteEndpoint":              s.deleteEndpoint,
		"/NetworkDriver.Join":                        s.join,
		"/NetworkDriver.Leave":                       s.leave,
		"/NetworkDriver.DiscoverNew":                 s.discover,
		"/NetworkDriver.DiscoverDelete":              s.discover,
		"/NetworkDriver.ProgramExternalConnectivity": s.programExternal,
		"/NetworkDriver.RevokeExternalConnectivity":  s.revokeExternal,
		"/NetworkDriver.AllocateNetwork":             s.allocateNetwork,
		"/NetworkDriver.FreeNetwork":                 s.freeNetwork,
	} {
		s.mux.Handle("POST "+path, s.wrap(path, h, false))
	}
	for path, h := range map[string]handler{
		"/IpamDriver.GetCapabilities":         s.ipamCapabilities,
		"/IpamDriver.GetDefaultAddressSpaces": s.addressSpaces,
		"/IpamDriver.RequestPool":             s.requestPool,
		"/IpamDriver.ReleasePool":             s.releasePool,
		"/IpamDriver.RequestAddress":          s.requestAddress,
		"/IpamDriver.ReleaseAddress":          s.releaseAddress,
	} {
		s.mux.Handle("POST "+path, s.wrap(path, h, true))
	}
}

// handler decodes its request from body and returns the response value.
type handler func(body []byte) (any, error)

// maxBody bounds a request; Docker's are a few hundred bytes.
const maxBody = 1 << 20

// wrap turns a handler into HTTP: the response as JSON with status 200, or
// a failure as status 500 with {"Err": "…"} (what dockerd's plugin client
// reads from a failed call). IPAM failures carry the message under
// "Error" too, the field of the IPAM response types.
func (s *Server) wrap(method string, h handler, ipam bool) http.Handler {
	method = strings.TrimPrefix(method, "/")
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
		var resp any
		switch {
		case err != nil:
			err = fmt.Errorf("reading request: %w", err)
		case len(body) > maxBody:
			err = errors.New("request too large")
		default:
			resp, err = h(body)
		}
		if err != nil {
			s.log.Warn("driver call failed", "method", method, "err", err)
			e := map[string]string{"Err": err.Error()}
			if ipam {
				e["Error"] = err.Error()
			}
			writeJSON(w, http.StatusInternalServerError, e)
			return
		}
		s.log.Debug("driver call", "method", method, "took", time.Since(start))
		writeJSON(w, http.StatusOK, resp)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", ContentType)
	w.WriteHeader(status)
	// A failed write means dockerd hung up; nothing to tell it.
	_ = json.NewEncoder(w).Encode(v)
}

// decode parses a request body into v. dockerd sends "null" for methods
// without arguments, and an empty body is accepted likewise.
func decode(body []byte, v any) error {
	if len(body) == 0 {
		return nil
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("malformed request: %w", err)
	}
	return nil
}

// shortID is the first 12 characters of a Docker ID, as docker ps shows.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// parseCIDRAddr parses Docker's "ADDR/BITS" (or a bare address) into the
// address.
func parseCIDRAddr(s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Addr(), nil
	}
	return netip.ParseAddr(s)
}
