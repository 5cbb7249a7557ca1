//go:build !netalias_lite

package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/spf13/cobra"

	"github.com/netalias/netalias/agent"
	"github.com/netalias/netalias/dockerdriver"
	"github.com/netalias/netalias/state"
)

func newDockerPluginCmd(dir func() string) *cobra.Command {
	var name, dockerHost string
	var debug bool
	var grace time.Duration
	cmd := &cobra.Command{
		Use:   "docker-plugin [--name NAME]",
		Short: "Serve Docker's network and IPAM driver protocol",
		Long: `Run in the foreground until SIGINT or SIGTERM, serving Docker's network
driver and IPAM driver on /run/docker/plugins/NAME.sock, so that

  docker network create -d NAME --ipam-driver NAME -o netalias.network=NET NET

puts Docker containers on netalias network NET (created, or adopted when it
exists with the subnet Docker is given). Start it before dockerd (a systemd
unit ordered Before=docker.service): dockerd asks its drivers about its
networks when it starts. The map from Docker's network IDs to netalias
networks lives in the state directory, so a restarted plugin loses nothing.`,
		Example: `  netalias docker-plugin &
  docker network create -d netalias --ipam-driver netalias -o netalias.network=testnet testnet
  docker run --network testnet --network-alias centos-1 busybox`,
		Args: wantArgs(0, 0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			level := slog.LevelInfo
			if debug {
				level = slog.LevelDebug
			}
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			reap := newInProcessReaper(ctx)
			m, err := agent.New(agent.Options{StateDir: dir(), Emit: publisher(dir()), Reap: reap.kick, Log: log})
			if err != nil {
				return err
			}
			reap.m = m
			srv, err := dockerdriver.New(dockerdriver.Config{Name: name, StateDir: m.StateDir(),
				Backend: dockerdriver.AgentBackend{M: m}, Logger: log})
			if err != nil {
				return err
			}
			if err := srv.Listen(); err != nil {
				return err
			}
			// Before dockerd asks anything: bridges and rules back after a
			// reboot, veths left pending by a previous run deleted.
			if err := m.Reconcile(); err != nil {
				log.Warn("reconcile at start", "err", err)
			}
			go reap.run()
			go collectLeaked(ctx, m, srv, dockerHost, grace, log)
			go keepFirewall(ctx, m, 5*time.Second, log)
			fmt.Fprintf(cmd.ErrOrStderr(), "netalias docker-plugin: state %s, serving on %s\n", m.StateDir(), srv.Socket())
			return srv.Serve(ctx)
		},
	}
	cmd.Flags().StringVar(&name, "name", dockerdriver.DefaultName, "the plugin's `NAME`: docker network create -d NAME --ipam-driver NAME")
	cmd.Flags().BoolVar(&debug, "debug", false, "log every driver call")
	cmd.Flags().StringVar(&dockerHost, "docker-host", "unix:///var/run/docker.sock",
		"the Docker API (`URL`) asked, outside driver calls, which endpoints still exist: records a lost dockerd leaked are collected")
	cmd.Flags().DurationVar(&grace, "collect-after", 2*time.Minute, "")
	cmd.Flags().MarkHidden("collect-after") // tests shorten it
	return cmd
}

// inProcessReaper deletes veths pending deletion in the background of the
// plugin (no process per endpoint): kicks coalesce into one pass.
type inProcessReaper struct {
	ctx  context.Context
	m    *agent.Manager
	kick func()
	ch   chan struct{}
}

func newInProcessReaper(ctx context.Context) *inProcessReaper {
	r := &inProcessReaper{ctx: ctx, ch: make(chan struct{}, 1)}
	r.kick = func() {
		select {
		case r.ch <- struct{}{}:
		default:
		}
	}
	return r
}

func (r *inProcessReaper) run() {
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-r.ch:
			if err := r.m.Reap(); err != nil {
				slog.Warn("reap", "err", err)
			}
		}
	}
}

// collectLeaked removes, every grace/2, the Docker records that dockerd
// does not know (any more) and that are older than grace: endpoints whose
// dockerd died or lost its state, reservations it never released. It asks
// the Docker API from here, never from a driver call (dockerd holds its
// locks across those), and asks before it takes the state lock. Young
// records are left alone: an endpoint is listed by Docker only once it
// joined its container, a reservation precedes its endpoint. When Docker
// cannot be asked, nothing is collected.
func collectLeaked(ctx context.Context, m *agent.Manager, srv *dockerdriver.Server, host string, grace time.Duration, log *slog.Logger) {
	cli, err := client.NewClientWithOpts(client.WithHost(host), client.WithAPIVersionNegotiation())
	if err != nil {
		log.Warn("leaked Docker endpoints will not be collected", "docker_host", host, "err", err)
		return
	}
	defer cli.Close()
	tick := time.NewTicker(max(grace/2, time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for dockerID, name := range srv.Networks() {
			qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			nr, err := cli.NetworkInspect(qctx, dockerID, network.InspectOptions{})
			cancel()
			if err != nil {
				// Docker down, or the network gone without DeleteNetwork:
				// nothing is known to be leaked.
				log.Debug("collector: docker network inspect failed", "docker_network", dockerID, "err", err)
				continue
			}
			live, addrs := map[string]bool{}, map[netip.Addr]bool{}
			for _, c := range nr.Containers {
				live[c.EndpointID] = true
				for _, a := range []string{c.IPv4Address, c.IPv6Address} {
					if p, err := netip.ParsePrefix(a); err == nil {
						addrs[p.Addr()] = true
					}
				}
			}
			cutoff := time.Now().Add(-grace)
			n, err := m.DockerCollect(name, func(ep state.Endpoint) bool {
				if ep.Created.After(cutoff) {
					return false
				}
				if ep.HostVeth != "" {
					return !live[ep.Attachment.ID]
				}
				return !addrs[ep.IPv4] && !addrs[ep.IPv6]
			})
			if err != nil {
				log.Warn("collector", "network", name, "err", err)
			} else if n > 0 {
				log.Info("collected Docker records dockerd no longer knows", "network", name, "docker_network", dockerID, "records", n)
			}
		}
	}
}

// keepFirewall restores the forwarding rules when something outside
// removed them: a restart of the host's dockerd rewrites the FORWARD chain,
// which would cut the containers on our bridges off each other.
func keepFirewall(ctx context.Context, m *agent.Manager, every time.Duration, log *slog.Logger) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := m.EnsureFirewall(); err != nil {
				log.Warn("firewall rules not restored", "err", err)
			}
		}
	}
}
