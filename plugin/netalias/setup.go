package netalias

import (
	"context"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/plugin"
	clog "github.com/coredns/coredns/plugin/pkg/log"

	"github.com/netalias/netalias/netwatch"
	"github.com/netalias/netalias/netwatch/docker"
	etcdsrc "github.com/netalias/netalias/netwatch/etcd"
	"github.com/netalias/netalias/netwatch/links"
	"github.com/netalias/netalias/state"
)

const pluginName = "netalias"

// shutdownWait bounds how long shutdown waits for the sources to stop.
const shutdownWait = 5 * time.Second

var log = clog.NewWithPlugin(pluginName)

func init() { plugin.Register(pluginName, setup) }

// config is the parsed Corefile block.
type config struct {
	zones    []string
	ttl      uint32
	stateDir string // "" when `state off`
	clients  Clients
	fall     fallConfig
	docker   []string // engine endpoints
	netlink  bool
	health   netwatch.HealthPolicy
	cluster  *clusterConfig // nil: single host
}

type fallConfig struct {
	set   bool
	zones []string
}

func parse(c *caddy.Controller) (*config, error) {
	cfg := &config{ttl: 5, stateDir: state.DefaultDir, clients: Clients{Managed: true}, netlink: true}
	i := 0
	for c.Next() {
		if i > 0 {
			return nil, plugin.ErrOnce
		}
		i++
		cfg.zones = plugin.OriginsFromArgsOrServerBlock(c.RemainingArgs(), c.ServerBlockKeys)
		if len(cfg.zones) == 0 {
			cfg.zones = []string{"."}
		}
		for c.NextBlock() {
			switch c.Val() {
			case "state":
				args := c.RemainingArgs()
				if len(args) != 1 {
					return nil, c.ArgErr()
				}
				cfg.stateDir = args[0]
				if args[0] == "off" {
					cfg.stateDir = ""
				}
			case "ttl":
				args := c.RemainingArgs()
				if len(args) != 1 {
					return nil, c.ArgErr()
				}
				t, err := strconv.ParseUint(args[0], 10, 32)
				if err != nil || t > 3600 {
					return nil, c.Errf("ttl must be a number of seconds from 0 to 3600, got %q", args[0])
				}
				cfg.ttl = uint32(t)
			case "clients":
				cl, err := ParseClients(c.RemainingArgs())
				if err != nil {
					return nil, c.Err(err.Error())
				}
				cfg.clients = cl
			case "fallthrough":
				cfg.fall = fallConfig{set: true, zones: c.RemainingArgs()}
			case "docker":
				args := c.RemainingArgs()
				if len(args) > 1 {
					return nil, c.ArgErr()
				}
				ep := docker.DefaultEndpoint
				if len(args) == 1 {
					ep = args[0]
				}
				cfg.docker = append(cfg.docker, ep)
			case "healthcheck":
				args := c.RemainingArgs()
				p, ok := netwatch.HealthPolicy(0), len(args) == 1
				if ok {
					p, ok = netwatch.ParseHealthPolicy(args[0])
				}
				if !ok {
					return nil, c.Errf("healthcheck takes prefer, strict or off, got %q", strings.Join(args, " "))
				}
				cfg.health = p
			case "cluster":
				if cfg.cluster != nil {
					return nil, c.Errf("cluster given twice")
				}
				cc, err := parseCluster(c)
				if err != nil {
					return nil, err
				}
				cfg.cluster = cc
			case "netlink":
				args := c.RemainingArgs()
				if len(args) != 1 || (args[0] != "on" && args[0] != "off") {
					return nil, c.Errf("netlink takes on or off")
				}
				cfg.netlink = args[0] == "on"
			default:
				return nil, c.Errf("unknown property '%s'", c.Val())
			}
		}
	}
	if cfg.stateDir == "" && len(cfg.docker) == 0 && cfg.cluster == nil {
		return nil, c.Err("no source: `state off` needs at least one `docker` or `cluster` source")
	}
	return cfg, nil
}

func setup(c *caddy.Controller) error {
	cfg, err := parse(c)
	if err != nil {
		return plugin.Error(pluginName, err)
	}
	var sources []netwatch.Source
	if cfg.stateDir != "" {
		sd := netwatch.NewStateDir(cfg.stateDir)
		sd.Log = log
		sources = append(sources, sd)
	}
	for _, ep := range cfg.docker {
		src, err := docker.New(ep)
		if err != nil {
			return plugin.Error(pluginName, err)
		}
		src.Log = log
		sources = append(sources, src)
	}
	var etcdCli io.Closer
	if cfg.cluster != nil {
		src, cli, err := cfg.cluster.source()
		if err != nil {
			return plugin.Error(pluginName, err)
		}
		sources, etcdCli = append(sources, src), cli
	}
	names := make([]string, len(sources))
	for i, s := range sources {
		names[i] = s.Name()
	}
	h := &Netalias{Zones: cfg.zones, TTL: cfg.ttl, Clients: cfg.clients, Health: cfg.health, m: &answerCounters{}}
	if cfg.cluster != nil {
		h.stale = &staleTTL{ttl: cfg.cluster.staleTTL}
	}
	opts := netwatch.StoreOptions{
		Expected: names,
		OnChange: func(s *netwatch.Snapshot, source string) {
			n, e, r := s.Counts()
			networksGauge.Set(float64(n))
			endpointsGauge.Set(float64(e))
			recordsGauge.Set(float64(r))
			unreadyGauge.Set(float64(s.Unready()))
			updatesTotal.WithLabelValues(source).Inc()
		},
		OnStale: func(source string, stale bool) {
			v := 0.0
			if stale {
				v = 1
			}
			staleGauge.WithLabelValues(source).Set(v)
			if h.stale != nil && source == etcdsrc.SourceName {
				h.stale.on.Store(stale)
			}
		},
	}
	if cfg.netlink {
		opts.LinkExists = links.Exists
	}
	st := netwatch.NewStoreWith(opts)
	for _, n := range names {
		staleGauge.WithLabelValues(n).Set(0)
	}
	var lw *links.Watcher
	if cfg.netlink {
		lw = links.New(st, log)
	}

	h.Store = st
	if cfg.fall.set {
		h.Fall.SetZonesFromArgs(cfg.fall.zones)
	}

	var (
		mu      sync.Mutex
		cancel  context.CancelFunc
		running sync.WaitGroup
	)
	c.OnStartup(func() error {
		mu.Lock()
		defer mu.Unlock()
		ctx, cf := context.WithCancel(context.Background())
		cancel = cf
		for _, s := range sources {
			running.Go(func() {
				if err := s.Run(ctx, st); err != nil {
					log.Errorf("source %s stopped: %v", s.Name(), err)
				}
			})
		}
		if lw != nil {
			running.Go(func() { lw.Run(ctx) })
		}
		return nil
	})
	c.OnShutdown(func() error {
		mu.Lock()
		defer mu.Unlock()
		if cancel != nil {
			// A reload's new instance already runs. Wait (briefly) for the
			// sources to stop, so that none still touches its files or
			// sockets once shutdown returns.
			cancel()
			cancel = nil
			done := make(chan struct{})
			go func() { running.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(shutdownWait):
				log.Warningf("sources still running %v after shutdown", shutdownWait)
			}
		}
		if etcdCli != nil {
			etcdCli.Close()
		}
		return nil
	})

	dc := dnsserver.GetConfig(c)
	// The clients check goes in front of the whole chain (see gate).
	dc.Plugin = append([]plugin.Plugin{func(next plugin.Handler) plugin.Handler {
		return newGate(h, next)
	}}, dc.Plugin...)
	dc.AddPlugin(func(next plugin.Handler) plugin.Handler {
		h.Next = next
		return h
	})
	return nil
}
