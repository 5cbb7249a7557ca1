package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/netalias/netalias/agent/events"
	"github.com/netalias/netalias/agent/netns"
	"github.com/netalias/netalias/agent/store"
	"github.com/netalias/netalias/state"
)

// staleAfter is how long a pending veth may wait for its reaper before a
// reconcile deletes it itself (the reaper was killed, the machine crashed).
const staleAfter = 10 * time.Second

// reapAttempts bounds the reaper's passes over veths that stay pending.
const reapAttempts = 5

// Reconcile brings the state in line with the kernel (see reconcile).
func (m *Manager) Reconcile() error {
	lk, _, err := m.begin()
	if err != nil {
		return err
	}
	lk.Unlock()
	return nil
}

// reconciliation collects what one reconcile found across networks.
type reconciliation struct {
	evs             []events.Event
	touched         map[string]bool // containers whose resolver needs a rewrite
	orphans         map[string]bool // run-owned namespaces to delete
	bridgesRestored bool
	hasPending      bool
}

// reconcile, under the lock, drops endpoints whose host veth vanished
// (namespace destroyed), reclaims endpoints and namespaces of `netalias
// run` processes that died, finishes stale pending deletions and restores
// missing bridges (after a reboot). It writes the files it changed.
func (m *Manager) reconcile(snap *store.Snapshot) error {
	links, err := m.k.Links.LinkNames()
	if err != nil {
		return err
	}
	r := &reconciliation{touched: map[string]bool{}, orphans: map[string]bool{}}
	for _, name := range snap.Names() {
		f := snap.Files[name]
		m.restoreBridge(f, links, r)
		changed := m.pruneEndpoints(f, links, r)
		if m.prunePending(f, links, r) {
			changed = true
		}
		if changed {
			if err := m.files.Write(f); err != nil {
				return err
			}
		}
	}
	if r.bridgesRestored {
		if err := m.syncFirewall(snap); err != nil {
			m.log.Warn("firewall not restored", "err", err)
		}
	}
	m.reclaimOrphans(snap, r)
	for _, ev := range r.evs {
		m.emit(ev)
	}
	if len(r.orphans) > 0 && r.hasPending && m.reap != nil {
		m.reap()
	}
	return nil
}

// restoreBridge recreates a network's missing bridge (after a reboot).
// Veths on a vanished bridge vanished with their namespaces or are
// unplugged: pruneEndpoints handles them like any other.
func (m *Manager) restoreBridge(f *state.File, links map[string]bool, r *reconciliation) {
	if links[f.Network.Bridge] {
		return
	}
	if err := m.k.Links.CreateBridge(bridgeOf(f.Network)); err != nil {
		m.log.Warn("bridge not restored", "network", f.Network.Name, "bridge", f.Network.Bridge, "err", err)
		return
	}
	r.bridgesRestored = true
}

// pruneEndpoints drops endpoints whose veth vanished and unplugs those
// whose `netalias run` owner died. It reports whether f changed.
func (m *Manager) pruneEndpoints(f *state.File, links map[string]bool, r *reconciliation) bool {
	changed := false
	kept := f.Endpoints[:0:0]
	for _, ep := range f.Endpoints {
		switch {
		case isDocker(ep):
			// Docker owns its records' lifetime (docker.go): never dropped.
			if demoteVanished(&ep, links) {
				changed = true
			}
			kept = append(kept, ep)
		case !links[ep.HostVeth]:
			r.evs = append(r.evs, epEvent("disconnect", f.Network, ep, "veth vanished"))
			r.touched[ep.Container] = true
			changed = true
		case ep.Owner != nil && !m.k.Namespaces.Alive(ep.Owner.PID, ep.Owner.StartTime):
			r.evs = append(r.evs, epEvent("disconnect", f.Network, ep, "owner process exited"))
			if err := m.k.Veths.Unplug(ep.HostVeth, ep.Netns, ep.IfName, parkName(ep.ID), m.group); err != nil {
				m.log.Warn("unplug of a dead owner's endpoint failed; the reaper deletes its veth", "endpoint", ep.Name, "network", f.Network.Name, "err", err)
			}
			f.PendingDelete = append(f.PendingDelete, state.PendingVeth{Name: ep.HostVeth, Since: now()})
			r.touched[ep.Container] = true
			r.orphans[ep.Container] = true
			changed = true
		default:
			kept = append(kept, ep)
		}
	}
	f.Endpoints = kept
	return changed
}

// prunePending drops pending entries whose veth is gone and deletes the
// veths of dead connects (intent records: we hold the lock, so no connect
// is running) and of entries whose reaper had its chance. It reports
// whether f changed.
func (m *Manager) prunePending(f *state.File, links map[string]bool, r *reconciliation) bool {
	changed := false
	var pending []state.PendingVeth
	for _, p := range f.PendingDelete {
		if !links[p.Name] {
			changed = true
			continue
		}
		if p.Creating || time.Since(p.Since) > staleAfter {
			err := m.k.Links.DeleteLink(p.Name)
			if err == nil {
				changed = true
				continue
			}
			m.log.Warn("pending veth not deleted", "veth", p.Name, "network", f.Network.Name, "err", err)
		}
		pending = append(pending, p)
		r.hasPending = true
	}
	f.PendingDelete = pending
	return changed
}

// reclaimOrphans refreshes the resolver files of touched containers and
// deletes the namespaces (and resolver files) of dead `netalias run`
// owners that no live endpoint uses any more.
func (m *Manager) reclaimOrphans(snap *store.Snapshot, r *reconciliation) {
	for c := range r.touched {
		if r.orphans[c] {
			continue
		}
		if err := m.updateResolver(snap, c); err != nil {
			m.log.Warn("resolver file not updated", "container", c, "err", err)
		}
	}
	for c := range r.orphans {
		if eps, _ := containerEndpoints(snap.Files, c); len(eps) > 0 {
			continue // still attached elsewhere by a live owner
		}
		if filepath.Dir(c) != netns.RunDir {
			continue
		}
		name := filepath.Base(c)
		if err := m.k.Resolver.Remove(name); err != nil {
			m.log.Warn("resolver file not removed", "namespace", name, "err", err)
		}
		if err := m.k.Namespaces.Delete(name); err != nil {
			m.log.Warn("namespace of a dead owner not deleted", "namespace", name, "err", err)
		}
	}
}

// Reap deletes the veths pending deletion. The deletions run without the
// state lock (each waits for an RCU grace period), and only one reaper per
// state directory works at a time: a reaper started while another runs
// leaves the work to it, and the running one looks again before it goes.
// A veth the kernel will not delete is tried reapAttempts times with
// growing pauses, then left (named in the error) for a later reconcile or
// agent cycle.
func (m *Manager) Reap() error {
	for {
		names, entries, err := m.pendingNames()
		if err != nil {
			return err
		}
		if entries == 0 {
			return nil
		}
		if len(names) == 0 {
			// Entries whose veth is already gone: let reconcile drop them.
			return m.Reconcile()
		}
		rl, err := os.OpenFile(filepath.Join(m.store.Dir, "reap.lock"), os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			return err
		}
		if err := syscall.Flock(int(rl.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			rl.Close()
			return nil // another reaper is at work and will look again
		}
		err = m.reapLocked()
		rl.Close()
		if err != nil {
			return err
		}
		// A disconnect may have queued a veth after our last look and
		// seen our lock: look once more now that it is released.
	}
}

// reapLocked deletes pending veths until none is left, at most
// reapAttempts passes, holding the reap lock.
func (m *Manager) reapLocked() error {
	pause := m.reapBackoff
	for attempt := 1; ; attempt++ {
		names, _, err := m.pendingNames()
		if err != nil {
			return err
		}
		if len(names) == 0 {
			return nil
		}
		if attempt > reapAttempts {
			return fmt.Errorf("reap: %d veth(s) still pending after %d attempts: %s", len(names), reapAttempts, strings.Join(names, ", "))
		}
		if attempt > 1 {
			time.Sleep(pause)
			pause *= 2
		}
		m.deletePending(names)
		if err := m.Reconcile(); err != nil { // drops entries whose link is gone
			return err
		}
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
	members, err := m.k.Links.GroupMembers(m.group)
	if err != nil {
		m.log.Warn("link group not listed; deleting one by one", "group", m.group, "err", err)
	}
	if len(members) > 0 {
		ours := true
		for _, n := range members {
			if !pending[n] {
				ours = false
				break
			}
		}
		if ours {
			if err := m.k.Links.DeleteGroup(m.group); err != nil {
				m.log.Warn("link group not deleted; deleting one by one", "group", m.group, "err", err)
			} else {
				for _, n := range members {
					delete(pending, n)
				}
			}
		}
	}
	for n := range pending {
		if err := m.k.Links.DeleteLink(n); err != nil {
			m.log.Warn("pending veth not deleted", "veth", n, "err", err)
		}
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

// pendingNames lists veths pending deletion that still exist (sorted),
// and counts all pending entries.
func (m *Manager) pendingNames() (names []string, entries int, err error) {
	snap, err := m.store.Load()
	if err != nil {
		return nil, 0, err
	}
	links, err := m.k.Links.LinkNames()
	if err != nil {
		return nil, 0, err
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
	sort.Strings(names)
	return names, entries, nil
}
