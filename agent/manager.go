// Package agent is the netalias agent as a library: it creates bridge
// networks, attaches network namespaces to them through veth pairs, hands
// out addresses, keeps firewall rules and resolver files current, and
// records everything in the state directory (package state) that the DNS
// server reads. cmd/netalias is a thin command line over Manager.
//
// Every mutating operation takes the state directory's lock, reconciles
// (endpoints whose veth vanished, namespaces whose `netalias run` owner
// died, veths still waiting for deletion), does its work as named steps
// each with its undo (steps.go), rolls back on error, and writes the
// changed network files atomically. Deciding is pure (plan.go); the kernel
// is reached through a seam of small interfaces (kernel.go) that tests
// replace with agent/internal/fakekernel.
package agent

import (
	"crypto/sha256"
	"log/slog"
	"os"
	"sort"
	"time"

	"github.com/netalias/netalias/agent/events"
	"github.com/netalias/netalias/agent/firewall"
	"github.com/netalias/netalias/agent/ipam"
	"github.com/netalias/netalias/agent/store"
	"github.com/netalias/netalias/state"
)

// Options configure a Manager.
type Options struct {
	// StateDir is the state directory (default state.Dir("")).
	StateDir string
	// Pools replaces the address pools for automatic subnets; nil means
	// $NETALIAS_ADDRESS_POOLS, else Docker-like defaults.
	Pools []ipam.Pool
	// Emit receives every change; nil drops them. The CLI publishes them
	// to a listening agent, the agent fans them out to subscribers.
	Emit func(events.Event)
	// Reap is called after an operation left veths pending deletion. The
	// CLI starts a detached `netalias` process that deletes them; nil
	// means delete them before returning (slow: an RCU grace period each).
	Reap func()
	// Kernel is the kernel seam (kernel.go); zero fields are the real
	// kernel. Tests inject a fake.
	Kernel Kernel
	// Log receives best-effort failures and failed undos; nil means
	// slog.Default() (stderr).
	Log *slog.Logger
	// Sync waits until the running DNS servers answer from the network
	// files an operation wrote (readers.go); nil means state/syncack.
	Sync func(dir string, networks []string) error
	// Cluster turns cluster mode on (cluster.go); nil: single host.
	Cluster *ClusterOptions
}

// stateFiles is where the Manager writes network files (*store.Store; a
// test wraps it to fail writes).
type stateFiles interface {
	Write(f *state.File) error
	WriteIntent(f *state.File) error
	Remove(name string) error
}

// Manager performs agent operations on one state directory.
type Manager struct {
	store *store.Store
	files stateFiles
	// tracked wraps the store: it notes the networks an operation wrote.
	tracked *trackedFiles
	sync    func(dir string, networks []string) error
	k       Kernel
	log     *slog.Logger
	table   string
	group   uint32 // link group of this state directory's pending veths
	pools   []ipam.Pool
	emit    func(events.Event)
	reap    func()
	// reapBackoff is the first pause between the reaper's attempts;
	// reapBatch how long it lets veths queue before a deletion.
	reapBackoff, reapBatch time.Duration
	cl                     *clusterMode // nil: single host
}

// New opens the state directory.
func New(o Options) (*Manager, error) {
	dir := state.Dir(o.StateDir)
	st, err := store.Open(dir)
	if err != nil {
		return nil, err
	}
	pools := o.Pools
	if pools == nil {
		if env := os.Getenv(ipam.EnvPools); env != "" {
			if pools, err = ipam.ParsePools(env); err != nil {
				return nil, err
			}
		} else {
			pools = ipam.DefaultPools()
		}
	}
	m := &Manager{store: st, table: firewall.TableName(st.Dir, state.DefaultDir), group: reapGroup(st.Dir),
		pools: pools, emit: o.Emit, reap: o.Reap, files: st, k: o.Kernel.withDefaults(), log: o.Log, reapBackoff: 50 * time.Millisecond, reapBatch: 200 * time.Millisecond}
	if m.log == nil {
		m.log = slog.Default()
	}
	m.cl = newClusterMode(o.Cluster)
	m.tracked = &trackedFiles{stateFiles: st}
	m.files = m.tracked
	m.sync = o.Sync
	if m.sync == nil {
		m.sync = defaultSync
	}
	if m.emit == nil {
		m.emit = func(events.Event) {}
	}
	return m, nil
}

// StateDir returns the absolute state directory.
func (m *Manager) StateDir() string { return m.store.Dir }

// FirewallTable returns the nftables table this state directory uses.
func (m *Manager) FirewallTable() string { return m.table }

// Snapshot reads every network file without taking the lock (files are
// replaced atomically), for ls and inspect.
func (m *Manager) Snapshot() (*store.Snapshot, error) { return m.store.Load() }

// reapGroup is the link group pending veths of dir wait in: 0x6e61 ("na")
// in the high half, 16 bits of sha256(dir) in the low half, so state
// directories never share one.
func reapGroup(dir string) uint32 {
	sum := sha256.Sum256([]byte(dir))
	return 0x6e610000 | uint32(sum[0])<<8 | uint32(sum[1])
}

func newID() string { return state.NewID() }

// bridgeName derives the bridge from the network ID: "na-" + 12 hex.
func bridgeName(id string) string { return firewall.BridgePrefix + id[:12] }

// vethName derives the host-side veth from the endpoint ID: "nav" + 12 hex
// (15 bytes, IFNAMSIZ-1). It does not start with the bridge prefix.
func vethName(id string) string { return "nav" + id[:12] }

// parkName is what a disconnected peer is renamed to inside its namespace
// until the pair is deleted, freeing ethN at once.
func parkName(id string) string { return "nax" + id[:12] }

func now() time.Time { return time.Now().UTC() }

// fwNets lists the firewall view of a snapshot's networks.
func fwNets(files map[string]*state.File) []firewall.Net {
	var out []firewall.Net
	for _, f := range files {
		out = append(out, toFW(f.Network))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Bridge < out[j].Bridge })
	return out
}

func toFW(n state.Network) firewall.Net {
	fn := firewall.Net{Bridge: n.Bridge, Internal: n.Internal, Subnet: n.Subnet, Subnet6: n.Subnet6}
	if n.Cluster != nil {
		fn.OverlayPort = overlayPort(n.Cluster.Port)
	}
	return fn
}
