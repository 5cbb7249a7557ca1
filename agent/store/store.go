// Package store reads and writes a state directory (see package state for
// the format) and serializes mutating commands with flock(2) on DIR/lock.
package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"syscall"

	"github.com/netalias/netalias/state"
)

// Store is one state directory.
type Store struct {
	Dir string
}

// Open makes sure dir and dir/networks exist.
func Open(dir string) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(state.NetworksPath(abs), 0o755); err != nil {
		return nil, fmt.Errorf("state directory %s: %w", abs, err)
	}
	return &Store{Dir: abs}, nil
}

// Lock is a held flock on DIR/lock.
type Lock struct{ f *os.File }

// Lock blocks until this process holds the state directory's lock.
func (s *Store) Lock() (*Lock, error) {
	f, err := os.OpenFile(filepath.Join(s.Dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("state lock: %w", err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("state lock %s: %w", f.Name(), err)
	}
	return &Lock{f}, nil
}

// Unlock releases the lock.
func (l *Lock) Unlock() {
	if l != nil && l.f != nil {
		l.f.Close() // closing drops the flock
		l.f = nil
	}
}

// Snapshot is every network file of a directory at one moment.
type Snapshot struct {
	Files   map[string]*state.File // by network name
	Corrupt []*state.CorruptError  // files left untouched
	// Temp lists the atomic writes' temp files found (paths). Every
	// writer holds the state lock, so under the lock they are all stale:
	// a killed writer's.
	Temp []string
}

// Names returns the network names in creation order (then by name).
func (s *Snapshot) Names() []string {
	var ns []string
	for n := range s.Files {
		ns = append(ns, n)
	}
	sort.Slice(ns, func(i, j int) bool {
		a, b := s.Files[ns[i]].Network, s.Files[ns[j]].Network
		if !a.Created.Equal(b.Created) {
			return a.Created.Before(b.Created)
		}
		return a.Name < b.Name
	})
	return ns
}

// CorruptFor returns the corrupt-file error of network name, if its file is
// corrupt.
func (s *Snapshot) CorruptFor(name string) error {
	for _, c := range s.Corrupt {
		if state.NetworkNameFromPath(c.Path) == name {
			return c
		}
	}
	return nil
}

// Load reads every network file. Corrupt ones are collected, not fatal.
func (s *Store) Load() (*Snapshot, error) {
	ents, err := os.ReadDir(state.NetworksPath(s.Dir))
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	snap := &Snapshot{Files: map[string]*state.File{}}
	for _, e := range ents {
		if state.IsTemp(e.Name()) {
			snap.Temp = append(snap.Temp, filepath.Join(state.NetworksPath(s.Dir), e.Name()))
			continue
		}
		name := state.NetworkNameFromPath(e.Name())
		if name == "" || e.IsDir() {
			continue
		}
		p := filepath.Join(state.NetworksPath(s.Dir), e.Name())
		f, err := state.Read(p)
		if err != nil {
			var ce *state.CorruptError
			if errors.As(err, &ce) {
				snap.Corrupt = append(snap.Corrupt, ce)
				continue
			}
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			return nil, err
		}
		if f.Network.Name != name {
			snap.Corrupt = append(snap.Corrupt, &state.CorruptError{Path: p,
				Err: fmt.Errorf("file holds network %q, its name says %q", f.Network.Name, name)})
			continue
		}
		snap.Files[name] = f
	}
	return snap, nil
}

// Write stores f atomically.
func (s *Store) Write(f *state.File) error {
	if err := state.Write(s.Dir, f); err != nil {
		return fmt.Errorf("write state of network %q: %w", f.Network.Name, err)
	}
	return nil
}

// WriteIntent stores f atomically without fsync: for intent records,
// which describe kernel objects a machine crash destroys anyway.
func (s *Store) WriteIntent(f *state.File) error {
	if err := state.WriteNoSync(s.Dir, f); err != nil {
		return fmt.Errorf("write state of network %q: %w", f.Network.Name, err)
	}
	return nil
}

// SweepTemp removes the temp files a snapshot found. Call it holding the
// lock (no live writer then). A file already gone is not an error.
func (s *Store) SweepTemp(snap *Snapshot) error {
	var errs []error
	for _, p := range snap.Temp {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("stray temp file: %w", err))
		}
	}
	snap.Temp = nil
	return errors.Join(errs...)
}

// Remove deletes network name's file and syncs the directory.
func (s *Store) Remove(name string) error {
	if err := os.Remove(state.NetworkPath(s.Dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	d, err := os.Open(state.NetworksPath(s.Dir))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
