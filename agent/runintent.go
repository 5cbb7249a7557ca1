package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/netalias/netalias/agent/netns"
	"github.com/netalias/netalias/agent/store"
	"github.com/netalias/netalias/state"
)

// Run intents: `netalias run` records DIR/runs/NAME.json (its owner)
// before it creates /run/netns/NAME and removes it after its cleanup, so
// a run killed before its first endpoint is recorded leaves a namespace
// the next reconcile knows is ours. No fsync: /run is a tmpfs, a machine
// crash takes the namespace along.

type runIntent struct {
	Owner state.Owner `json:"owner"`
}

func (m *Manager) runIntentPath(name string) string {
	return filepath.Join(m.store.Dir, "runs", name+".json")
}

func (m *Manager) writeRunIntent(name string, o state.Owner) error {
	p := m.runIntentPath(name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return fmt.Errorf("run %s: %w", name, err)
	}
	b, _ := json.Marshal(runIntent{Owner: o})
	if err := state.WriteAtomicNoSync(p, b); err != nil {
		return fmt.Errorf("run %s: record: %w", name, err)
	}
	return nil
}

func (m *Manager) removeRunIntent(name string) {
	if err := os.Remove(m.runIntentPath(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		m.log.Warn("run record not removed", "namespace", name, "err", err)
	}
}

// reclaimRuns deletes the namespaces (and resolver files) of runs whose
// owner died and that no endpoint uses any more, and their records.
func (m *Manager) reclaimRuns(snap *store.Snapshot) {
	ents, err := os.ReadDir(filepath.Join(m.store.Dir, "runs"))
	if err != nil {
		return // none yet
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			// A temp file: runs write without the state lock, so only
			// an old one is a killed writer's.
			if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > time.Minute {
				os.Remove(filepath.Join(m.store.Dir, "runs", e.Name()))
			}
			continue
		}
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		b, err := os.ReadFile(m.runIntentPath(name))
		var ri runIntent
		if err != nil || json.Unmarshal(b, &ri) != nil {
			m.log.Warn("run record unreadable; left", "namespace", name, "err", err)
			continue
		}
		if m.k.Namespaces.Alive(ri.Owner.PID, ri.Owner.StartTime) {
			continue
		}
		if eps, _ := containerEndpoints(snap.Files, filepath.Join(netns.RunDir, name)); len(eps) == 0 {
			if err := m.k.Resolver.Remove(name); err != nil {
				m.log.Warn("resolver file of a dead run not removed", "namespace", name, "err", err)
			}
			if err := m.k.Namespaces.Delete(name); err != nil {
				m.log.Warn("namespace of a dead run not deleted", "namespace", name, "err", err)
				continue
			}
		}
		m.removeRunIntent(name)
	}
}
