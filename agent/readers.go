package agent

import (
	"sync"
	"time"

	"github.com/netalias/netalias/agent/store"
	"github.com/netalias/netalias/state"
	"github.com/netalias/netalias/state/syncack"
)

// Read your writes: when a mutating operation returns, every running DNS
// server that reads this state directory already answers from what it
// wrote (Docker's embedded DNS gives the same guarantee). The Manager
// notes which network files an operation wrote; releasing the operation's
// lock asks the servers to re-read exactly those (state/syncack), bounded
// by syncack.DefaultTimeout, so a hung server delays an operation by at
// most that. With no server running nothing waits.

// trackedFiles records which networks were written since the last take.
type trackedFiles struct {
	stateFiles
	mu      sync.Mutex
	written map[string]bool
}

func (t *trackedFiles) mark(name string) {
	t.mu.Lock()
	if t.written == nil {
		t.written = map[string]bool{}
	}
	t.written[name] = true
	t.mu.Unlock()
}

// Write is durable: the servers are asked about it. WriteIntent is not
// (an intent names no endpoint a server would publish).
func (t *trackedFiles) Write(f *state.File) error {
	err := t.stateFiles.Write(f)
	t.mark(f.Network.Name)
	return err
}

func (t *trackedFiles) Remove(name string) error {
	err := t.stateFiles.Remove(name)
	t.mark(name)
	return err
}

func (t *trackedFiles) take() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for n := range t.written {
		out = append(out, n)
	}
	t.written = nil
	return out
}

// opLock is the state directory's lock held by one operation.
type opLock struct {
	lk       *store.Lock
	m        *Manager
	released bool
}

// Unlock releases the lock, then waits for the DNS servers to publish
// what the operation wrote. Later calls do nothing, so an operation can
// defer it and still release early (before emitting events or reaping).
func (l *opLock) Unlock() {
	if l.released {
		return
	}
	l.released = true
	l.lk.Unlock()
	l.m.syncReaders()
}

func (m *Manager) syncReaders() {
	nets := m.tracked.take()
	if len(nets) == 0 || m.sync == nil {
		return
	}
	start := time.Now()
	if err := m.sync(m.store.Dir, nets); err != nil {
		m.log.Warn("a DNS server did not confirm the new state in time; it catches up through its file watch",
			"networks", nets, "waited", time.Since(start).Round(time.Millisecond), "err", err)
	}
}

func defaultSync(dir string, networks []string) error {
	return syncack.Sync(dir, networks, syncack.DefaultTimeout)
}
