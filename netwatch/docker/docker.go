// Package docker is a netwatch source that follows a container runtime
// through the Docker Engine API (Docker itself, or Podman's compat service):
// a full listing at start and after every reconnect, then the event stream,
// one event at a time in the order the engine sent them.
package docker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/netalias/netalias/internal/backoff"
	"github.com/netalias/netalias/netwatch"
)

// DefaultEndpoint is where Docker listens unless told otherwise.
const DefaultEndpoint = "unix:///var/run/docker.sock"

// requestTimeout bounds every request but the event stream;
// watchdogInterval is how often networks are listed again (see session).
var (
	requestTimeout   = 10 * time.Second
	watchdogInterval = 5 * time.Second
)

// replayWindow is how much event history a session asks for: enough to
// cover the gap between subscribing and listing, whatever the clocks'
// rounding; older events are ignored.
const replayWindow = 2 * time.Second

// resyncParallel is how many inspects a resync keeps in flight.
const resyncParallel = 8

// Source follows one engine endpoint.
type Source struct {
	endpoint string
	cli      *client.Client

	// Log reports connection changes; nil means netwatch.StdLogger. Set it
	// before Run.
	Log netwatch.Logger

	synced atomic.Bool
	stale  atomic.Bool

	netNames map[string]string // network id → name; only Run's goroutine
	// recheck takes containers to inspect again a little later (see
	// healthRechecks); made per session, used by Run's goroutine only.
	recheck chan string
}

// healthRechecks are when a container is inspected again after a Podman
// health_status event: Podman 4.3 logs the event before it records the
// check's result (the status the event carries is the previous one), so
// an inspect made at once can read the old status, and no later event
// comes to correct it.
var healthRechecks = []time.Duration{250 * time.Millisecond, time.Second}

var _ netwatch.Source = (*Source)(nil)

// NewSource is New, kept for callers written before New returned *Source.
func NewSource(endpoint string) (*Source, error) { return New(endpoint) }

// New returns a source for the engine at endpoint ("unix:///PATH"; ""
// means DefaultEndpoint). It does not connect: a missing socket is
// retried by Run, not an error here.
func New(endpoint string) (*Source, error) {
	if endpoint == "" {
		endpoint = DefaultEndpoint
	}
	path, ok := strings.CutPrefix(endpoint, "unix://")
	if !ok || !strings.HasPrefix(path, "/") || strings.TrimRight(path, "/") == "" {
		return nil, fmt.Errorf("docker endpoint %q: want unix:///PATH/TO/SOCKET", endpoint)
	}
	cli, err := client.NewClientWithOpts(client.WithHost(endpoint), client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker endpoint %q: %w", endpoint, err)
	}
	return &Source{endpoint: endpoint, cli: cli}, nil
}

func (s *Source) log() netwatch.Logger { return netwatch.OrStd(s.Log) }

// Name is unique per endpoint, so two engines can feed one sink.
func (s *Source) Name() string { return "docker:" + s.endpoint }

// Synced reports whether a complete listing has been published at least
// once.
func (s *Source) Synced() bool { return s.synced.Load() }

// Stale reports whether the engine is unreachable right now (records are
// the last known ones).
func (s *Source) Stale() bool { return s.stale.Load() }

// APIVersion is the API version negotiated with the engine ("" before the
// first successful connection).
func (s *Source) APIVersion() string {
	if !s.synced.Load() {
		return ""
	}
	return s.cli.ClientVersion()
}

// Run publishes into sink until ctx is done, reconnecting with backoff.
func (s *Source) Run(ctx context.Context, sink netwatch.Sink) error {
	defer s.cli.Close()
	var retry backoff.Backoff
	logged := "" // the failure last logged: a retry failing alike stays quiet
	for {
		synced, err := s.session(ctx, sink)
		if ctx.Err() != nil {
			return nil
		}
		if err == nil {
			err = errors.New("session ended")
		}
		if synced {
			retry.Reset()
		}
		if !s.stale.Swap(true) {
			sink.SetStale(s.Name(), true)
		}
		switch msg := err.Error(); {
		case synced:
			s.log().Warningf("docker: lost %s, serving last known records, reconnecting: %v", s.endpoint, err)
			logged = msg
		case msg == logged:
		case !s.synced.Load():
			s.log().Warningf("docker: %s not reachable yet, will keep trying: %v", s.endpoint, err)
			logged = msg
		default:
			s.log().Warningf("docker: %s: %v (will keep trying)", s.endpoint, err)
			logged = msg
		}
		if !retry.Wait(ctx) {
			return nil
		}
	}
}

// session connects, resyncs completely and follows events until the
// stream breaks. synced tells whether the resync was published.
func (s *Source) session(ctx context.Context, sink netwatch.Sink) (synced bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := s.ping(ctx); err != nil {
		return false, err
	}
	s.recheck = make(chan string, 64) // a session's re-inspections end with it
	// Subscribe before listing, and ask for a little history, so nothing
	// that happens during the listing is missed. Replayed events are
	// harmless: every event re-inspects the current state.
	f := filters.NewArgs(filters.Arg("type", string(events.ContainerEventType)), filters.Arg("type", string(events.NetworkEventType)))
	oldest := time.Now().Add(-replayWindow)
	msgs, errs := s.cli.Events(ctx, events.ListOptions{
		Since:   fmt.Sprint(oldest.Unix()),
		Filters: f,
	})
	// Podman hands events to API clients only when it next polls its event
	// file (every 250 ms); reading that file ourselves, when it is here,
	// learns of a change within milliseconds. It only says which container
	// to re-inspect: the API stream stays the authority.
	var nudges <-chan string
	if s.isPodman(ctx) {
		nudges = followPodmanLog(ctx, PodmanEventsLog, s.log())
	}
	m, err := s.resync(ctx)
	if err != nil {
		return false, err
	}
	sink.Replace(s.Name(), m.all())
	if first := !s.synced.Swap(true); s.stale.Swap(false) {
		sink.SetStale(s.Name(), false)
		if first {
			s.log().Infof("docker: connected to %s, synced", s.endpoint)
		} else {
			s.log().Infof("docker: %s reachable again, resynced", s.endpoint)
		}
	}
	// The periodic network listing is a liveness check (a frozen daemon
	// sends no events and closes nothing) and catches networks created or
	// removed without an event (Podman sends none).
	watchdog := time.NewTicker(watchdogInterval)
	defer watchdog.Stop()
	for {
		select {
		case <-ctx.Done():
			return true, ctx.Err()
		case <-watchdog.C:
			if err := s.syncNetworks(ctx, m, sink); err != nil {
				return true, fmt.Errorf("engine stopped answering: %w", err)
			}
		case err := <-errs:
			if err == nil {
				err = errors.New("event stream ended")
			}
			return true, err
		case ev := <-msgs:
			if ev.TimeNano != 0 && ev.TimeNano < oldest.UnixNano() {
				// Podman replays more history than asked for; the
				// listing already shows what that history did.
				continue
			}
			if err := s.handle(ctx, m, sink, ev); err != nil {
				return true, err
			}
		case id := <-s.recheck:
			if err := s.refresh(ctx, m, sink, id); err != nil {
				return true, err
			}
		case id, ok := <-nudges:
			if !ok {
				nudges = nil // the file went away; the stream suffices
				continue
			}
			if err := s.refresh(ctx, m, sink, id); err != nil {
				return true, err
			}
		}
	}
}

// isPodman tells whether the engine is Podman's compat service.
func (s *Source) isPodman(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	v, err := s.cli.ServerVersion(ctx)
	if err != nil {
		return false
	}
	for _, c := range v.Components {
		if strings.Contains(c.Name, "Podman") {
			return true
		}
	}
	return false
}

func (s *Source) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	_, err := s.cli.Ping(ctx)
	return err
}

func (s *Source) inspect(ctx context.Context, id string) (container.InspectResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	return s.cli.ContainerInspect(ctx, id)
}

// resync builds a fresh model from a complete listing.
func (s *Source) resync(ctx context.Context) (*model, error) {
	m := newModel()
	nets, err := s.listNetworks(ctx)
	if err != nil {
		return nil, err
	}
	m.nets = nets
	lctx, cancel := context.WithTimeout(ctx, requestTimeout)
	list, err := s.cli.ContainerList(lctx, container.ListOptions{})
	cancel()
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	// Inspect a few at a time: a resync of a busy host is that many round
	// trips, and the engine serves them concurrently.
	infos := make([]*ctr, len(list))
	asked := make([]int64, len(list))
	errs := make([]error, len(list))
	sem := make(chan struct{}, resyncParallel)
	var wg sync.WaitGroup
	for i, c := range list {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			asked[i] = time.Now().UnixNano()
			info, err := s.inspect(ctx, c.ID)
			switch {
			case isGone(err): // gone since the listing; its events follow
			case err != nil:
				errs[i] = fmt.Errorf("inspect container %s: %w", shortID(c.ID), err)
			default:
				infos[i] = fromInspect(info)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err // the first is enough: the whole resync is retried
		}
	}
	for i, x := range infos {
		if x != nil {
			m.set(x.id, x)
			m.inspected[x.id] = asked[i]
		}
	}
	for _, n := range m.networkNames() {
		s.lookupNetwork(ctx, m, n)
	}
	return m, nil
}

// listNetworks returns the engine's networks that carry addresses, by the
// name containers use for them. Podman's compat listing calls its default
// network "bridge" while containers and inspect-by-id say "podman", so
// names come from an inspect by id (remembered: ids do not get renamed).
func (s *Source) listNetworks(ctx context.Context) (map[string]netInfo, error) {
	lctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	list, err := s.cli.NetworkList(lctx, network.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	out := make(map[string]netInfo, len(list))
	seen := make(map[string]string, len(list))
	for _, n := range list {
		if !hasDNS(n.Driver) {
			continue
		}
		name, ok := s.netNames[n.ID]
		if !ok {
			in, err := s.cli.NetworkInspect(lctx, n.ID, network.InspectOptions{})
			if isGoneNetwork(err) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("inspect network %s: %w", n.Name, err)
			}
			name = in.Name
		}
		seen[n.ID] = name
		out[name] = netInfoFrom(n)
	}
	s.netNames = seen
	return out, nil
}

// syncNetworks reconciles the known networks with a fresh listing and
// publishes what changed.
func (s *Source) syncNetworks(ctx context.Context, m *model, sink netwatch.Sink) error {
	nets, err := s.listNetworks(ctx)
	if err != nil {
		return err
	}
	var changed []string
	for name, ni := range nets {
		if old, ok := m.nets[name]; !ok || old != ni {
			changed = append(changed, name)
		}
	}
	for name := range m.nets {
		if _, ok := nets[name]; !ok {
			changed = append(changed, name)
		}
	}
	m.nets = nets
	s.publish(m, sink, changed)
	return nil
}

// lookupNetwork learns a network a container is on but the listing did
// not show (created since). A failure leaves the subnet unknown; names
// still resolve.
func (s *Source) lookupNetwork(ctx context.Context, m *model, name string) {
	if _, ok := m.nets[name]; ok {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	n, err := s.cli.NetworkInspect(ctx, name, network.InspectOptions{})
	if err != nil || !hasDNS(n.Driver) {
		return
	}
	m.nets[name] = netInfoFrom(n)
}

// handle applies one event: re-inspect what it is about and republish
// the networks whose records changed. An error ends the session (and so
// forces a resync).
func (s *Source) handle(ctx context.Context, m *model, sink netwatch.Sink, ev events.Message) error {
	var id string
	switch ev.Type {
	case events.ContainerEventType:
		if st, ok := strings.CutPrefix(string(ev.Action), string(events.ActionHealthStatus)); ok {
			return s.health(ctx, m, sink, ev.Actor.ID, ev.TimeNano, st)
		}
		switch ev.Action {
		case events.ActionDestroy, events.ActionRemove:
			// Gone for good (ids are never reused), whatever the order
			// events arrive in: nothing to ask the engine, which answers
			// slowest when busiest. A die is not that final: Podman may log
			// it after the start of a quick restart.
			id := m.resolveID(ev.Actor.ID)
			s.publish(m, sink, m.set(id, nil))
			return nil
		case events.ActionStart, events.ActionRestart, events.ActionDie, events.ActionStop,
			events.ActionRename, events.ActionUnPause:
			id = ev.Actor.ID
		default:
			return nil
		}
	case events.NetworkEventType:
		switch ev.Action {
		case events.ActionConnect, events.ActionDisconnect:
			// Docker: the actor is the network and the container an
			// attribute; Podman: the actor is the container.
			id = ev.Actor.Attributes["container"]
			if id == "" {
				id = ev.Actor.ID
			} else if ev.Action == events.ActionDisconnect {
				// Docker names the network: drop the endpoint
				// without a round trip.
				s.publish(m, sink, m.disconnect(m.resolveID(id), ev.Actor.Attributes["name"]))
				return nil
			}
		case events.ActionCreate:
			name := ev.Actor.Attributes["name"]
			delete(m.nets, name)
			s.lookupNetwork(ctx, m, name)
			s.publish(m, sink, []string{name})
			return nil
		case events.ActionDestroy, events.ActionRemove:
			name := ev.Actor.Attributes["name"]
			delete(m.nets, name)
			s.publish(m, sink, []string{name})
			return nil
		default:
			return nil
		}
	default:
		return nil
	}
	return s.refresh(ctx, m, sink, id)
}

// health applies a health_status event. Docker names the new status in
// the action ("health_status: healthy"): applied at once, without a round
// trip, unless the container's last inspect was asked for after the event
// happened (a replayed event is older than what the inspect said). Podman
// 4.3's action is a bare "health_status" (the status it attaches elsewhere
// is the previous one): re-inspected, as is any status we do not know.
func (s *Source) health(ctx context.Context, m *model, sink netwatch.Sink, actor string, at int64, action string) error {
	status, named := strings.CutPrefix(action, ":")
	h, ok := netwatch.ParseHealth(strings.TrimSpace(status))
	if !named || !ok {
		s.recheckLater(actor)
		return s.refresh(ctx, m, sink, actor)
	}
	id := m.resolveID(actor)
	if at != 0 && at < m.inspected[id] {
		return nil
	}
	touched, known := m.setHealth(id, h)
	if !known {
		return s.refresh(ctx, m, sink, actor) // the inspect decides whether it runs
	}
	s.publish(m, sink, touched)
	return nil
}

// recheckLater asks Run's loop to inspect id again at each of
// healthRechecks; a full queue drops the ask (the next event asks again).
func (s *Source) recheckLater(id string) {
	ch := s.recheck
	if ch == nil {
		return
	}
	for _, d := range healthRechecks {
		time.AfterFunc(d, func() {
			select {
			case ch <- id:
			default:
			}
		})
	}
}

// refresh re-inspects one container and republishes the networks whose
// records changed.
func (s *Source) refresh(ctx context.Context, m *model, sink netwatch.Sink, id string) error {
	if id == "" {
		return nil
	}
	asked := time.Now().UnixNano()
	info, err := s.inspect(ctx, id)
	var x *ctr
	switch {
	case isGone(err):
	case err != nil:
		return fmt.Errorf("inspect container %s: %w", shortID(id), err)
	default:
		x = fromInspect(info)
		id = info.ID // events may carry a short id (Podman)
	}
	if x == nil {
		id = m.resolveID(id)
	}
	touched := m.set(id, x)
	if x != nil {
		m.inspected[id] = asked
	}
	for _, n := range touched {
		s.lookupNetwork(ctx, m, n)
	}
	s.publish(m, sink, touched)
	return nil
}

// resolveID maps a possibly short id to the full id the model uses.
func (m *model) resolveID(id string) string {
	if _, ok := m.containers[id]; ok {
		return id
	}
	for full := range m.containers {
		if strings.HasPrefix(full, id) {
			return full
		}
	}
	return id
}

// publish sends the current records of the named networks: an update,
// or a removal once the network is gone and nothing runs on it.
func (s *Source) publish(m *model, sink netwatch.Sink, names []string) {
	for _, name := range names {
		if n := m.network(name); n != nil {
			sink.Update(s.Name(), n)
			m.published[name] = true
		} else if m.published[name] {
			sink.Remove(s.Name(), name)
			delete(m.published, name)
		}
	}
}

// isGone tells whether an inspect failed because the container no longer
// exists. Podman answers a container in the middle of removal with a 500
// "no such container" rather than a 404.
func isGone(err error) bool {
	return err != nil && (cerrdefs.IsNotFound(err) || strings.Contains(strings.ToLower(err.Error()), "no such container"))
}

func isGoneNetwork(err error) bool {
	return err != nil && (cerrdefs.IsNotFound(err) || strings.Contains(strings.ToLower(err.Error()), "no such network"))
}
