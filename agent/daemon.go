package agent

import (
	"context"
	"log"
	"strings"
	"time"

	"github.com/netalias/netalias/agent/events"
	"github.com/netalias/netalias/internal/nlwatch"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Daemon is the long-running agent: it serves the event stream on
// DIR/agent.sock and reconciles whenever one of our veths disappears
// (netlink) and every few seconds (owners that died, pending deletions).
type Daemon struct {
	srv *events.Server
	m   *Manager
}

// NewDaemon opens the state directory and the event socket. Options.Emit
// and Options.Reap are set by the daemon (it reaps in-process).
func NewDaemon(o Options) (*Daemon, error) {
	d := &Daemon{}
	o.Emit = func(ev events.Event) { d.srv.Emit(ev) }
	m, err := New(o)
	if err != nil {
		return nil, err
	}
	srv, err := events.Listen(events.SocketPath(m.StateDir()))
	if err != nil {
		return nil, err
	}
	d.srv, d.m = srv, m
	// Reaping happens in the daemon's own loop, off the request path.
	m.reap = func() {}
	return d, nil
}

// Manager returns the daemon's manager.
func (d *Daemon) Manager() *Manager { return d.m }

// Run serves until ctx is done, or until the event socket fails (its
// error is returned). Its goroutines end before it returns.
func (d *Daemon) Run(ctx context.Context, interval time.Duration) error {
	ctx, cancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- d.srv.Serve(ctx) }()
	kick := make(chan struct{}, 1)
	watched := make(chan struct{})
	go func() { defer close(watched); d.watchLinks(ctx, kick) }()
	clustered := make(chan struct{})
	go func() {
		defer close(clustered)
		if d.m.cl != nil {
			d.runCluster(ctx, interval)
		}
	}()
	stop := func(err error) error {
		cancel()
		<-watched
		<-clustered
		if serr := <-served; err == nil {
			err = serr
		}
		return err
	}
	d.cycle()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return stop(nil)
		case err := <-served:
			served <- err // stop reads it again
			return stop(err)
		case <-t.C:
		case <-kick:
		}
		d.cycle()
	}
}

func (d *Daemon) cycle() {
	if err := d.m.Reconcile(); err != nil {
		d.m.log.Error("netalias agent: reconcile", "err", err)
	}
	if err := d.m.Reap(); err != nil {
		d.m.log.Error("netalias agent: reap", "err", err)
	}
	if err := d.m.EnsureFirewall(); err != nil {
		d.m.log.Error("netalias agent: firewall", "err", err)
	}
}

// watchLinks kicks a reconcile when a veth of ours is deleted, and after
// every lost subscription (events may be missing: the reconcile is the
// resync, so the listing nlwatch hands over is not needed).
func (d *Daemon) watchLinks(ctx context.Context, kick chan<- struct{}) {
	poke := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	first := true
	w := nlwatch.New(nil, func(err error) { log.Printf("netalias agent: %v; resubscribing", err) })
	w.Links(ctx, func([]netlink.Link) {
		if !first { // Run reconciles at start already
			poke()
		}
		first = false
	}, func(u netlink.LinkUpdate) {
		if u.Header.Type == unix.RTM_DELLINK && strings.HasPrefix(u.Attrs().Name, "nav") {
			poke()
		}
	})
}
