package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/netalias/netalias/state"
)

// Member is this host in the cluster, as `netalias agent` runs it: one
// client, the host session, the publisher, the network registry and the
// address blocks. The CLI's one-shot commands (network create/rm,
// connect) need only Networks and Blocks, not Run.
type Member struct {
	Opts      Options
	Client    *clientv3.Client
	Session   *Session
	Publisher *Publisher
	Networks  *Networks
	Blocks    *Blocks
	log       *slog.Logger
}

// Join dials etcd (lazily) and assembles this host's parts. desired may
// be nil for one-shot commands that never Run.
func Join(opts Options, desired DesiredFunc, log *slog.Logger) (*Member, error) {
	if log == nil {
		log = slog.Default()
	}
	cli, err := opts.Client() // completes opts
	if err != nil {
		return nil, err
	}
	m := &Member{Opts: opts, Client: cli, log: log}
	k := opts.Keys()
	m.Session = NewSession(cli, opts.LeaseTTL, log)
	if desired != nil {
		m.Publisher = NewPublisher(cli, k, opts.Host, m.Session, desired, log)
	}
	m.Networks = NewNetworks(cli, k, opts.Host)
	m.Blocks = NewBlocks(cli, k, opts.Host, opts.IPAMLeaseTTL)
	return m, nil
}

// Run keeps the host lease and the IPAM lease alive and publishes until
// ctx is done. It never revokes: a restart within the TTL is invisible to
// the other hosts (Leave is for leaving).
func (m *Member) Run(ctx context.Context) error {
	if m.Publisher == nil {
		return errors.New("cluster: Run needs a desired set (Join with a DesiredFunc)")
	}
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); m.Session.Run(ctx) }()
	go func() { defer wg.Done(); m.Publisher.Run(ctx) }()
	go func() {
		defer wg.Done()
		m.Blocks.KeepAlive(ctx, func() {
			m.log.Warn("cluster: the IPAM lease was gone; its address blocks must be claimed again", "host", m.Opts.Host)
		})
	}()
	wg.Wait()
	return nil
}

// Leave deletes this host's published records at once (one revision).
func (m *Member) Leave(ctx context.Context) error { return m.Session.Revoke(ctx) }

// Close closes the client.
func (m *Member) Close() error { return m.Client.Close() }

// WatchStateDir calls notify after every change under DIR/networks (the
// agent's network files), until ctx is done: the publisher's change
// notification when the agent does not call Publisher.Notify itself. A
// lost watch is set up again; notify is called then too (something may
// have changed meanwhile).
func WatchStateDir(ctx context.Context, dir string, notify func(), log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	nd := state.NetworksPath(dir)
	for ctx.Err() == nil {
		err := watchDir(ctx, nd, notify)
		if ctx.Err() != nil {
			return
		}
		log.Warn("cluster: watching the state directory failed; retrying", "dir", nd, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

func watchDir(ctx context.Context, dir string, notify func()) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("watch %s: %w", dir, err)
	}
	notify()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("watcher closed")
			}
			if state.NetworkNameFromPath(ev.Name) != "" {
				notify()
			}
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("watcher closed")
			}
			if !errors.Is(err, fsnotify.ErrEventOverflow) {
				return err
			}
			notify()
		}
	}
}
