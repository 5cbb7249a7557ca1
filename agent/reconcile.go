package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/netalias/netalias/agent/events"
	"github.com/netalias/netalias/agent/link"
	"github.com/netalias/netalias/agent/netns"
	"github.com/netalias/netalias/agent/store"
	"github.com/netalias/netalias/state"
)

// staleAfter is how long a pending veth may wait for its reaper before a
// reconcile deletes it itself (the reaper was killed, the machine crashed).
const staleAfter = 10 * time.Second

// reapAttempts bounds the reaper's deletions of a veth that stays pending.
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
	evs        []events.Event
	touched    map[string]bool // containers whose resolver needs a rewrite
	orphans    map[string]bool // run-owned namespaces to delete
	firewallOK bool            // the rules match the networks (synced first)
	hasPending bool
	// orphaned pending veths: older than reaperGrace, their reaper died
	// (a killed disconnect starts none) or never came.
	orphanedPending bool
}

// reaperGrace is how long a pending veth waits for the reaper its
// disconnect started before a reconcile starts one.
const reaperGrace = time.Second

// reconcile, under the lock, restores the invariant (README, "Invariant")
// from whatever a killed command left: it removes the atomic writes' stray
// temp files, finishes interrupted `network create`/`network rm`, restores
// missing bridges (after a reboot), drops endpoints whose host veth
// vanished (namespace destroyed), reclaims endpoints and namespaces of
// `netalias run` processes that died, deletes at once the veths of dead
// connects and of interrupted disconnects (an unplug not finished: the
// peer may still hold its address), finishes stale pending deletions,
// deletes veths of ours with no record, and rewrites resolver files that
// are missing or wrong. It writes the files it changed.
func (m *Manager) reconcile(snap *store.Snapshot) error {
	host, err := m.k.Audit.HostLinks()
	if err != nil {
		return err
	}
	if len(snap.Temp) > 0 {
		if err := m.store.SweepTemp(snap); err != nil {
			m.log.Warn("state directory", "err", err)
		}
	}
	r := &reconciliation{touched: map[string]bool{}, orphans: map[string]bool{}, firewallOK: true}
	m.syncFirst(snap, host, r)
	for _, name := range snap.Names() {
		f := snap.Files[name]
		if f.Op == state.OpRemoving {
			m.finishRemove(snap, f, r)
			continue
		}
		changed := m.restoreBridge(f, host, r)
		if m.prunePending(f, host, r) {
			changed = true
		}
		if m.pruneEndpoints(f, host, r) {
			changed = true
		}
		if changed {
			if err := m.files.Write(f); err != nil {
				return err
			}
		}
	}
	if len(snap.Corrupt) == 0 { // a corrupt file's records are unknown
		m.deleteStrays(snap, host)
	}
	m.reclaimOrphans(snap, r)
	m.reclaimRuns(snap)
	for _, ev := range r.evs {
		m.emit(ev)
	}
	// Veths left pending by a dead owner, or waiting longer than their
	// reaper should take (a killed disconnect started none): hand them
	// to one (the CLI's starts a process only when none runs).
	if (r.orphanedPending || len(r.orphans) > 0 && r.hasPending) && m.reap != nil {
		m.reap()
	}
	return nil
}

// liveGroup is the link group live host veths of this state directory are
// created in (m.group, the reap group, with "nb" for "na" in the high
// half): a veth in either group with no record is ours and stray.
func (m *Manager) liveGroup() uint32 { return 0x6e620000 | m.group&0xffff }

// syncFirst brings the rules in line with the networks that will exist
// once interrupted creates and removals are finished and missing bridges
// restored, before any of that happens: every later step is then
// repeated by the next reconcile if this one is killed, and no file mark
// is cleared (nor file removed) while the rules still disagree with it.
func (m *Manager) syncFirst(snap *store.Snapshot, host map[string]link.Info, r *reconciliation) {
	need := false
	view := &store.Snapshot{Files: map[string]*state.File{}, Corrupt: snap.Corrupt}
	for name, f := range snap.Files {
		_, bridge := host[f.Network.Bridge]
		need = need || f.Op != "" || !bridge
		if f.Op != state.OpRemoving {
			view.Files[name] = f
		}
	}
	if !need {
		return
	}
	if err := m.syncFirewall(view); err != nil {
		m.log.Warn("firewall not restored; interrupted network operations are finished later", "err", err)
		r.firewallOK = false
	}
}

// restoreBridge recreates a network's missing bridge (after a reboot) and
// finishes a `network create` that died (bridge, forwarding, then the
// file without its mark; syncFirst made the rules). Veths on a vanished
// bridge vanished with their namespaces or are unplugged: pruneEndpoints
// handles them like any other. It reports whether f changed.
func (m *Manager) restoreBridge(f *state.File, host map[string]link.Info, r *reconciliation) bool {
	want := bridgeOf(f.Network)
	if in, ok := host[f.Network.Bridge]; !ok {
		if err := m.k.Links.CreateBridge(want); err != nil {
			m.log.Warn("bridge not restored", "network", f.Network.Name, "bridge", f.Network.Bridge, "err", err)
			return false
		}
	} else if len(want.MAC) > 0 && in.Kind == "bridge" && in.MAC.String() != want.MAC.String() {
		// Made by an earlier version, with the MAC the kernel picks and
		// changes as ports come and go (link.Bridge.MAC): one last change.
		if err := m.k.Links.SetBridgeMAC(want.Name, want.MAC); err != nil {
			m.log.Warn("bridge keeps a MAC that follows its ports", "network", f.Network.Name, "bridge", want.Name, "err", err)
		} else {
			m.log.Info("bridge given its own MAC", "network", f.Network.Name, "bridge", want.Name, "mac", want.MAC.String())
		}
	}
	if f.Op != state.OpCreating || !r.firewallOK {
		return false
	}
	if !f.Network.Internal {
		if err := m.k.Sysctl.EnableForwarding(f.Network.Subnet6.IsValid()); err != nil {
			m.log.Warn("IP forwarding not enabled", "network", f.Network.Name, "err", err)
			return false
		}
	}
	f.Op = ""
	return true
}

// finishRemove completes a `network rm` that died after marking the file:
// its bridge, its pending veths, then its file (syncFirst removed its
// rules). Its endpoints were disconnected before the mark.
func (m *Manager) finishRemove(snap *store.Snapshot, f *state.File, r *reconciliation) {
	name := f.Network.Name
	if !r.firewallOK {
		return
	}
	del := append([]string{f.Network.Bridge}, pendingVeths(f)...)
	for _, ep := range f.Endpoints {
		del = append(del, ep.HostVeth)
		r.touched[ep.Container] = true
	}
	for _, l := range del {
		if err := m.k.Links.DeleteLink(l); err != nil {
			m.log.Warn("interrupted network rm: link not deleted", "network", name, "link", l, "err", err)
			return
		}
	}
	if err := m.files.Remove(name); err != nil {
		m.log.Warn("interrupted network rm: state not removed", "network", name, "err", err)
		return
	}
	delete(snap.Files, name)
	r.evs = append(r.evs, events.Event{Time: now(), Type: "network", Action: "remove", Network: name, Subnet: f.Network.Subnet.String()})
}

func pendingVeths(f *state.File) []string {
	var out []string
	for _, p := range f.PendingDelete {
		out = append(out, p.Name)
	}
	return out
}

// pruneEndpoints drops endpoints whose veth vanished and unplugs those
// whose `netalias run` owner died. It reports whether f changed.
func (m *Manager) pruneEndpoints(f *state.File, host map[string]link.Info, r *reconciliation) bool {
	changed := false
	kept := f.Endpoints[:0:0]
	for _, ep := range f.Endpoints {
		_, present := host[ep.HostVeth]
		switch {
		case isDocker(ep):
			// Docker owns its records' lifetime (docker.go): never
			// dropped; one whose veth vanished becomes a reservation.
			if demoteVanished(&ep, map[string]bool{ep.HostVeth: present}) {
				changed = true
			}
			kept = append(kept, ep)
		case !present:
			r.evs = append(r.evs, epEvent("disconnect", f.Network, ep, "veth vanished"))
			r.touched[ep.Container] = true
			changed = true
		case ep.Owner != nil && !m.k.Namespaces.Alive(ep.Owner.PID, ep.Owner.StartTime):
			r.evs = append(r.evs, epEvent("disconnect", f.Network, ep, "owner process exited"))
			if err := m.k.Veths.Unplug(ep.HostVeth, ep.Netns, ep.IfName, parkName(ep.ID), m.group); err != nil {
				m.log.Warn("unplug of a dead owner's endpoint failed; the reaper deletes its veth", "endpoint", ep.Name, "network", f.Network.Name, "err", err)
			}
			f.PendingDelete = append(f.PendingDelete, state.PendingVeth{Name: ep.HostVeth, Since: now(), Container: ep.Container})
			r.touched[ep.Container] = true
			r.orphans[ep.Container] = true
			r.hasPending = true
			changed = true
		default:
			if l := host[ep.HostVeth]; l.Master != f.Network.Bridge {
				// Its bridge was deleted and restored (or it was
				// unplugged by hand): plug it back.
				if err := m.k.Audit.Plug(ep.HostVeth, f.Network.Bridge); err != nil {
					m.log.Warn("veth not plugged back", "endpoint", ep.Name, "network", f.Network.Name, "veth", ep.HostVeth, "err", err)
				}
			}
			kept = append(kept, ep)
		}
	}
	f.Endpoints = kept
	return changed
}

// prunePending drops pending entries whose veth is gone and deletes at
// once the veths of dead connects (intent records: we hold the lock, so no
// connect is running), of interrupted disconnects (not in the reap group:
// the unplug did not finish, the peer may still hold its address inside
// the namespace, and a new connect must not find it there) and of entries
// whose reaper had its chance. It reports whether f changed.
func (m *Manager) prunePending(f *state.File, host map[string]link.Info, r *reconciliation) bool {
	changed := false
	var pending []state.PendingVeth
	for _, p := range f.PendingDelete {
		l, ok := host[p.Name]
		if !ok {
			if p.Container != "" {
				r.touched[p.Container] = true
			}
			changed = true
			continue
		}
		if p.Creating || l.Group != m.group || time.Since(p.Since) > staleAfter {
			err := m.k.Links.DeleteLink(p.Name)
			if err == nil {
				if p.Container != "" {
					r.touched[p.Container] = true
				}
				changed = true
				continue
			}
			m.log.Warn("pending veth not deleted", "veth", p.Name, "network", f.Network.Name, "err", err)
		}
		if p.Container != "" {
			// A disconnect killed before its resolver step: the file
			// may still name this network (only read when right).
			r.touched[p.Container] = true
		}
		pending = append(pending, p)
		r.hasPending = true
		r.orphanedPending = r.orphanedPending || time.Since(p.Since) > reaperGrace
	}
	f.PendingDelete = pending
	return changed
}

// deleteStrays deletes host veths of ours (name and link group) that no
// network file records (endpoint or pending entry). Every connect
// records its veth before creating it, so under the lock such a veth can
// only be what a killed command left.
func (m *Manager) deleteStrays(snap *store.Snapshot, host map[string]link.Info) {
	var strays []string
	for name, l := range host {
		if m.ours(name, l) {
			strays = append(strays, name)
		}
	}
	if len(strays) == 0 {
		return
	}
	known := recordedVeths(snap)
	for _, name := range strays {
		if known[name] {
			continue
		}
		if err := m.k.Links.DeleteLink(name); err != nil {
			m.log.Warn("stray veth not deleted", "veth", name, "err", err)
		}
	}
}

// ours: a host veth this state directory made, by its name (vethName)
// and its link group (someone else's link put in our group is not ours).
func (m *Manager) ours(name string, l link.Info) bool {
	return strings.HasPrefix(name, "nav") && (l.Group == m.group || l.Group == m.liveGroup())
}

// recordedVeths is the set of host veths the state records.
func recordedVeths(snap *store.Snapshot) map[string]bool {
	known := map[string]bool{}
	for _, f := range snap.Files {
		for _, ep := range f.Endpoints {
			known[ep.HostVeth] = true
		}
		for _, p := range f.PendingDelete {
			known[p.Name] = true
		}
	}
	return known
}

// ensureResolver rewrites (or removes) a named container's resolver file
// when it is not what its current networks say; a correct file is only
// read. A file that netalias did not write is left alone.
func (m *Manager) ensureResolver(snap *store.Snapshot, container string) error {
	if filepath.Dir(container) != netns.RunDir {
		return nil
	}
	cur, err := m.k.Audit.ReadResolver(filepath.Base(container))
	if err != nil {
		return err
	}
	if cur.Exists && !cur.Ours {
		return nil
	}
	if eps, _ := containerEndpoints(snap.Files, container); len(eps) > 0 && !wantsResolver(eps) {
		return nil
	}
	ns, search := wantResolver(snap, container)
	if search == nil && !cur.Exists || cur.Exists && cur.Nameserver == ns && slices.Equal(cur.Search, search) {
		return nil
	}
	return m.updateResolver(snap, container)
}

// wantResolver is the nameserver and search list a named container's
// resolver file must hold (nil search: no file).
func wantResolver(snap *store.Snapshot, container string) (string, []string) {
	_, nets := containerEndpoints(snap.Files, container)
	if len(nets) == 0 {
		return "", nil
	}
	search := make([]string, 0, len(nets))
	for _, n := range nets {
		search = append(search, n.Name)
	}
	return nets[0].Gateway.String(), search
}

// reclaimOrphans refreshes the resolver files of touched containers and
// deletes the namespaces (and resolver files) of dead `netalias run`
// owners that no live endpoint uses any more.
func (m *Manager) reclaimOrphans(snap *store.Snapshot, r *reconciliation) {
	for _, f := range snap.Files {
		for _, ep := range f.Endpoints {
			r.touched[ep.Container] = true
		}
	}
	for c := range r.touched {
		if r.orphans[c] {
			continue
		}
		if err := m.ensureResolver(snap, c); err != nil {
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
// agent cycle; the others are still deleted.
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

// reapLocked deletes pending veths until none is left, holding the reap
// lock. The bound is per veth: one that survives reapAttempts deletions is
// left (named in the error), while veths that disconnects queue during the
// work are taken as they come; a reaper that counted passes instead gave
// up under a stream of disconnects that had each seen it running, and left
// their veths behind.
func (m *Manager) reapLocked() error {
	pause := m.reapBackoff
	tries := map[string]int{}
	for {
		names, _, err := m.pendingNames()
		if err != nil {
			return err
		}
		var todo, stuck []string
		again := false
		for _, n := range names {
			switch {
			case tries[n] >= reapAttempts:
				stuck = append(stuck, n)
			default:
				todo = append(todo, n)
				again = again || tries[n] > 0
			}
		}
		if len(todo) == 0 {
			if len(stuck) > 0 {
				return fmt.Errorf("reap: %d veth(s) still pending after %d attempts: %s", len(stuck), reapAttempts, strings.Join(stuck, ", "))
			}
			return nil
		}
		if again { // the kernel refused one: back off
			time.Sleep(pause)
			pause *= 2
		} else if len(tries) > 0 {
			// Veths queued since the last pass: disconnects come in a
			// stream. Let more of them queue, so that one deletion (one
			// wait for the kernel, which holds its lock through it) takes
			// the batch instead of stalling every disconnect in turn
			// (bench/agent.sh: disconnect 0.60 of netavark's teardown
			// without the pause, 0.43-0.47 with it).
			time.Sleep(m.reapBatch)
			if names, _, err = m.pendingNames(); err != nil {
				return err
			}
			todo = slices.DeleteFunc(names, func(n string) bool { return tries[n] >= reapAttempts })
		}
		for _, n := range todo {
			tries[n]++
		}
		m.deletePending(todo)
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
