package netwatch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/fsnotify/fsnotify"

	"github.com/netalias/netalias/internal/backoff"
	"github.com/netalias/netalias/state"
	"github.com/netalias/netalias/state/syncack"
)

// StateDir follows the agent's state directory: one file per network in
// DIR/networks, replaced atomically by the agent. Only the file that changed
// is read again.
//
// While it runs it also serves read-your-writes (package syncack) on a
// socket in DIR/servers: the agent, after a write, asks it to re-read the
// networks it wrote, and gets its reply once the new snapshot is published,
// without waiting for fsnotify.
type StateDir struct {
	Dir string
	// Log reports a lost directory and unusable files (once per path until
	// it parses again); nil means StdLogger. Set it before Run.
	Log Logger
}

// NewStateDir returns a source for the agent state directory dir.
func NewStateDir(dir string) *StateDir { return &StateDir{Dir: dir} }

// Name implements Source.
func (s *StateDir) Name() string { return "state" }

type stateRun struct {
	s     *StateDir
	log   Logger
	retry backoff.Backoff
	sink  Sink

	// mu serializes the file watch and sync requests.
	mu   sync.Mutex
	last map[string]*Network // file path → last good network it held
	raw  map[string][]byte   // file path → the bytes last good was read from
	bad  map[string]bool     // paths whose parse failure was already logged
}

// Run implements Source.
func (s *StateDir) Run(ctx context.Context, sink Sink) error {
	r := &stateRun{s: s, log: OrStd(s.Log), sink: sink, last: map[string]*Network{}, raw: map[string][]byte{}, bad: map[string]bool{}}
	dir := state.NetworksPath(s.Dir)
	if srv, err := syncack.Listen(s.Dir, r.sync); err != nil {
		r.log.Warningf("state directory %s: no read-your-writes socket, changes show through the file watch only: %v", s.Dir, err)
	} else {
		served := make(chan struct{})
		go func() {
			defer close(served)
			if err := srv.Serve(ctx); err != nil {
				r.log.Warningf("%v; changes show through the file watch only", err)
			}
		}()
		defer func() { srv.Close(); <-served }()
	}
	for {
		err := r.watch(ctx, dir)
		if ctx.Err() != nil {
			return nil
		}
		r.log.Warningf("state directory %s: %v; retrying", dir, err)
		sink.SetStale(s.Name(), true)
		if !r.retry.Wait(ctx) {
			return nil
		}
	}
}

// watch sets up the watch, loads everything, then follows events until an
// error (returned, to be retried with a fresh full load) or cancellation.
func (r *stateRun) watch(ctx context.Context, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	// Watch before listing, so nothing written in between is missed.
	if err := w.Add(dir); err != nil {
		return err
	}
	if err := r.loadAll(dir); err != nil {
		return err
	}
	r.sink.SetStale(r.s.Name(), false)
	r.retry.Reset()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("watcher closed")
			}
			if ev.Name == dir && ev.Has(fsnotify.Remove|fsnotify.Rename) {
				return errors.New("directory removed")
			}
			if state.NetworkNameFromPath(ev.Name) == "" {
				continue
			}
			r.file(ev.Name)
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("watcher closed")
			}
			// Overflow or similar: events were lost, reload everything.
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				if err := r.loadAll(dir); err != nil {
					return err
				}
				continue
			}
			return err
		}
	}
}

// sync answers a syncack request: it re-reads the named networks' files
// (none: all of them) and has published the result when it returns.
func (r *stateRun) sync(networks []string) error {
	if len(networks) == 0 {
		return r.loadAll(state.NetworksPath(r.s.Dir))
	}
	for _, name := range networks {
		p := state.NetworkPath(r.s.Dir, name)
		if state.NetworkNameFromPath(p) != name {
			return fmt.Errorf("sync: %q is not a network name", name)
		}
		r.file(p)
	}
	return nil
}

// loadAll reads every network file and publishes them as one Replace. A
// file that fails to parse contributes its last good network, if any.
func (r *stateRun) loadAll(dir string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	last, raw := r.last, r.raw
	r.last, r.raw = map[string]*Network{}, map[string][]byte{}
	var nets []*Network
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if e.IsDir() || state.NetworkNameFromPath(p) == "" {
			continue
		}
		n, data, err := r.read(p)
		if err != nil {
			n, data = last[p], raw[p]
		}
		if n == nil {
			continue
		}
		r.last[p], r.raw[p] = n, data
		nets = append(nets, n)
	}
	r.sink.Replace(r.s.Name(), nets)
	return nil
}

// file handles an event on (or a sync request for) one network file. A
// file whose bytes did not change since its last good read is not
// published again: a sync request and the file event it raced make one
// rebuild, not two.
func (r *stateRun) file(p string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, data, err := r.read(p)
	switch {
	case err == nil:
		if r.last[p] != nil && bytes.Equal(r.raw[p], data) {
			return
		}
		if old := r.last[p]; old != nil && key(old.Name) != key(n.Name) {
			r.sink.Remove(r.s.Name(), old.Name)
		}
		r.last[p], r.raw[p] = n, data
		r.sink.Update(r.s.Name(), n)
	case errors.Is(err, fs.ErrNotExist):
		if old := r.last[p]; old != nil {
			delete(r.last, p)
			delete(r.raw, p)
			r.sink.Remove(r.s.Name(), old.Name)
		}
		delete(r.bad, p)
	default:
		// Keep the network's last good records.
	}
}

// read parses one file; a parse failure is logged once per path.
func (r *stateRun) read(p string) (*Network, []byte, error) {
	data, err := os.ReadFile(p)
	var f *state.File
	if err == nil {
		f, err = state.Decode(p, data)
	}
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) && !r.bad[p] {
			r.bad[p] = true
			r.log.Errorf("%s: %v (keeping its last good records)", p, err)
		}
		return nil, nil, err
	}
	delete(r.bad, p)
	return FromState(f), data, nil
}

// FromState converts a validated state file to a Network.
func FromState(f *state.File) *Network {
	n := &Network{Name: f.Network.Name, Subnet: f.Network.Subnet, Subnet6: f.Network.Subnet6,
		Gateway: f.Network.Gateway, Gateway6: f.Network.Gateway6}
	n.Endpoints = make([]Endpoint, 0, len(f.Endpoints))
	for _, e := range f.Endpoints {
		if e.Attachment != nil && e.Attachment.Runtime == state.RuntimeDocker {
			continue // Docker's driver plumbs it; the Docker source names it
		}
		ep := Endpoint{Name: e.Name, Aliases: e.Aliases, HostVeth: e.HostVeth, Container: e.Container,
			IPv4: e.IPv4, IPv6: e.IPv6}
		if ep.Container == "" {
			ep.Container = e.Netns
		}
		for _, l := range e.Links {
			ep.Links = append(ep.Links, Link{Target: l.Target, Alias: l.Alias})
		}
		n.Endpoints = append(n.Endpoints, ep)
	}
	return n
}
