package agent

import (
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/netalias/netalias/agent/events"
	"github.com/netalias/netalias/agent/link"
	"github.com/netalias/netalias/agent/netns"
	"github.com/netalias/netalias/agent/resolvconf"
	"github.com/netalias/netalias/agent/store"
	"github.com/netalias/netalias/state"
)

// staleAfter is how long a pending veth may wait for its reaper before a
// reconcile deletes it itself (the reaper was killed, the machine crashed).
const staleAfter = 10 * time.Second

// Reconcile brings the state in line with the kernel (see reconcile).
func (m *Manager) Reconcile() error {
	lk, _, err := m.begin()
	if err != nil {
		return err
	}
	lk.Unlock()
	return nil
}

// reconcile, under the lock, drops endpoints whose host veth vanished
// (namespace destroyed), reclaims endpoints and namespaces of `netalias
// run` processes that died, finishes stale pending deletions and restores
// missing bridges (after a reboot). It writes the files it changed.
func (m *Manager) reconcile(snap *store.Snapshot) error {
	links, err := link.LinkNames()
	if err != nil {
		return err
	}
	var evs []events.Event
	touched := map[string]bool{} // containers whose resolver needs a rewrite
	orphans := map[string]bool{} // run-owned namespaces to delete
	bridgesRestored := false
	hasPending := false
	for _, name := range snap.Names() {
		f := snap.Files[name]
		changed := false
		if !links[f.Network.Bridge] {
			if err := m.restoreBridge(f.Network); err == nil {
				bridgesRestored = true
			}
			// Veths on a vanished bridge vanished with their namespaces or
			// are unplugged: handled below like any other.
		}
		kept := f.Endpoints[:0:0]
		for _, ep := range f.Endpoints {
			switch {
			case !links[ep.HostVeth]:
				evs = append(evs, epEvent("disconnect", f.Network, ep, "veth vanished"))
				touched[ep.Container] = true
				changed = true
			case ep.Owner != nil && !netns.Alive(ep.Owner.PID, ep.Owner.StartTime):
				evs = append(evs, epEvent("disconnect", f.Network, ep, "owner process exited"))
				link.Unplug(ep.HostVeth, ep.Netns, ep.IfName, parkName(ep.ID), m.group)
				f.PendingDelete = append(f.PendingDelete, state.PendingVeth{Name: ep.HostVeth, Since: now()})
				touched[ep.Container] = true
				orphans[ep.Container] = true
				changed = true
			default:
				kept = append(kept, ep)
			}
		}
		f.Endpoints = kept
		var pending []state.PendingVeth
		for _, p := range f.PendingDelete {
			if !links[p.Name] {
				changed = true
				continue
			}
			// We hold the lock, so no connect is running: an intent record
			// is what a dead connect left. Otherwise the reaper had its
			// chance.
			if p.Creating || time.Since(p.Since) > staleAfter {
				if err := link.DeleteLink(p.Name); err == nil {
					changed = true
					continue
				}
			}
			pending = append(pending, p)
			hasPending = true
		}
		f.PendingDelete = pending
		if changed {
			if err := m.store.Write(f); err != nil {
				return err
			}
		}
	}
	if bridgesRestored {
		m.syncFirewall(snap)
	}
	for c := range touched {
		if orphans[c] {
			continue
		}
		m.updateResolver(snap, c)
	}
	for c := range orphans {
		if eps, _ := containerEndpoints(snap, c); len(eps) > 0 {
			continue // still attached elsewhere by a live owner
		}
		if filepath.Dir(c) == netns.RunDir {
			name := filepath.Base(c)
			resolvconf.Remove(name)
			netns.Delete(name)
		}
	}
	for _, ev := range evs {
		m.emit(ev)
	}
	if len(orphans) > 0 && hasPending && m.reap != nil {
		m.reap()
	}
	return nil
}

func (m *Manager) restoreBridge(n state.Network) error {
	return link.CreateBridge(bridgeOf(n))
}

// Reap deletes the veths pending deletion. The deletions run without the
// state lock (each waits for an RCU grace period), and only one reaper per
// state directory works at a time: a reaper started while another runs
// leaves the work to it, and the running one looks again before it goes.
func (m *Manager) Reap() error {
	for {
		names, entries := m.pendingNames()
		if entries == 0 {
			return nil
		}
		if len(names) == 0 {
			// Entries whose veth is already gone: let reconcile drop them.
			lk, _, err := m.begin()
			if err != nil {
				return err
			}
			lk.Unlock()
			return nil
		}
		rl, err := os.OpenFile(filepath.Join(m.store.Dir, "reap.lock"), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			return err
		}
		if err := syscall.Flock(int(rl.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			rl.Close()
			return nil // another reaper is at work and will look again
		}
		for {
			names, _ := m.pendingNames()
			if len(names) == 0 {
				break
			}
			m.deletePending(names)
			lk, _, err := m.begin() // reconcile drops entries whose link is gone
			if err != nil {
				rl.Close()
				return err
			}
			lk.Unlock()
		}
		rl.Close()
		// A disconnect may have queued a veth after our last look and
		// seen our lock: look once more now that it is released.
	}
}

// deletePending deletes pending veths: all at once through their link
// group when every member of the group is one of them (so nothing else can
// go with it), then any left one by one.
func (m *Manager) deletePending(names []string) {
	pending := map[string]bool{}
	for _, n := range names {
		pending[n] = true
	}
	if members, err := link.GroupMembers(m.group); err == nil && len(members) > 0 {
		ours := true
		for _, n := range members {
			if !pending[n] {
				ours = false
				break
			}
		}
		if ours && link.DeleteGroup(m.group) == nil {
			for _, n := range members {
				delete(pending, n)
			}
		}
	}
	for n := range pending {
		link.DeleteLink(n)
	}
}

// ReaperRunning reports whether a reaper holds stateDir's reap lock. A
// running reaper looks at the pending list again after it lets the lock
// go, so an entry written before this call needs no new reaper.
func ReaperRunning(stateDir string) bool {
	f, err := os.Open(filepath.Join(stateDir, "reap.lock"))
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return err == syscall.EWOULDBLOCK
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

// pendingNames lists veths pending deletion that still exist, and counts
// all pending entries.
func (m *Manager) pendingNames() (names []string, entries int) {
	snap, err := m.store.Load()
	if err != nil {
		return nil, 0
	}
	links, err := link.LinkNames()
	if err != nil {
		return nil, 0
	}
	for _, f := range snap.Files {
		for _, p := range f.PendingDelete {
			entries++
			// Intent records belong to a connect that may be running right
			// now: only a reconcile, under the lock, may act on them.
			if links[p.Name] && !p.Creating {
				names = append(names, p.Name)
			}
		}
	}
	return names, entries
}
