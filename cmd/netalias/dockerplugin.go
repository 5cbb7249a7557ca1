package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/netalias/netalias/agent"
	"github.com/netalias/netalias/dockerdriver"
)

func newDockerPluginCmd(dir func() string) *cobra.Command {
	var name string
	var debug bool
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
			go reap.run()
			fmt.Fprintf(cmd.ErrOrStderr(), "netalias docker-plugin: state %s, serving on %s\n", m.StateDir(), srv.Socket())
			return srv.Serve(ctx)
		},
	}
	cmd.Flags().StringVar(&name, "name", dockerdriver.DefaultName, "the plugin's `NAME`: docker network create -d NAME --ipam-driver NAME")
	cmd.Flags().BoolVar(&debug, "debug", false, "log every driver call")
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
