package netwatch

import (
	"context"
	"errors"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/netalias/netalias/state"
)

// StateDir follows the agent's state directory: one file per network in
// DIR/networks, replaced atomically by the agent. Only the file that changed
// is read again.
type StateDir struct {
	Dir string
	// Logf reports unusable files (once per path until it parses again).
	Logf func(format string, args ...any)
}

// NewStateDir returns a source for the agent state directory dir.
func NewStateDir(dir string) *StateDir { return &StateDir{Dir: dir, Logf: log.Printf} }

// Name implements Source.
func (s *StateDir) Name() string { return "state" }

type stateRun struct {
	s    *StateDir
	sink Sink
	last map[string]*Network // file path → last good network it held
	bad  map[string]bool     // paths whose parse failure was already logged
}

// Run implements Source.
func (s *StateDir) Run(ctx context.Context, sink Sink) error {
	r := &stateRun{s: s, sink: sink, last: map[string]*Network{}, bad: map[string]bool{}}
	dir := state.NetworksPath(s.Dir)
	for {
		err := r.watch(ctx, dir)
		if ctx.Err() != nil {
			return nil
		}
		s.Logf("[WARNING] plugin/netalias: state directory %s: %v; retrying", dir, err)
		sink.SetStale(s.Name(), true)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
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

// loadAll reads every network file and publishes them as one Replace. A
// file that fails to parse contributes its last good network, if any.
func (r *stateRun) loadAll(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	last := r.last
	r.last = map[string]*Network{}
	var nets []*Network
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		if e.IsDir() || state.NetworkNameFromPath(p) == "" {
			continue
		}
		n, err := r.read(p)
		if err != nil {
			n = last[p]
		}
		if n == nil {
			continue
		}
		r.last[p] = n
		nets = append(nets, n)
	}
	r.sink.Replace(r.s.Name(), nets)
	return nil
}

// file handles an event on one network file.
func (r *stateRun) file(p string) {
	n, err := r.read(p)
	switch {
	case err == nil:
		if old := r.last[p]; old != nil && key(old.Name) != key(n.Name) {
			r.sink.Remove(r.s.Name(), old.Name)
		}
		r.last[p] = n
		r.sink.Update(r.s.Name(), n)
	case errors.Is(err, fs.ErrNotExist):
		if old := r.last[p]; old != nil {
			delete(r.last, p)
			r.sink.Remove(r.s.Name(), old.Name)
		}
		delete(r.bad, p)
	default:
		// Keep the network's last good records.
	}
}

// read parses one file; a parse failure is logged once per path.
func (r *stateRun) read(p string) (*Network, error) {
	f, err := state.Read(p)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) && !r.bad[p] {
			r.bad[p] = true
			r.s.Logf("[ERROR] plugin/netalias: %s: %v (keeping its last good records)", p, err)
		}
		return nil, err
	}
	delete(r.bad, p)
	return FromState(f), nil
}

// FromState converts a validated state file to a Network.
func FromState(f *state.File) *Network {
	n := &Network{Name: f.Network.Name, Subnet: f.Network.Subnet, Subnet6: f.Network.Subnet6,
		Gateway: f.Network.Gateway, Gateway6: f.Network.Gateway6}
	n.Endpoints = make([]Endpoint, 0, len(f.Endpoints))
	for _, e := range f.Endpoints {
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
