package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/netalias/netalias/agent"
	"github.com/netalias/netalias/agent/events"
)

func newAgentCmd(dir func() string) *cobra.Command {
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "agent [flags]",
		Short: "Run the long-lived agent: reconcile and serve events",
		Long: `Run in the foreground until SIGINT or SIGTERM: every --interval and on
link events, reclaim endpoints whose namespace or veth is gone, restore
bridges, delete unplugged veths and restore the firewall rules; and serve
the event stream that "netalias events" reads. The other commands work
without it.

In cluster mode (--etcd, --vtep) it also keeps this host's session in
etcd, publishes its endpoints on cluster networks, and programs the VXLAN
overlay of each from the other hosts' records.`,
		Args: wantArgs(0, 0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if interval <= 0 {
				return usageErrorf(cmd, "invalid --interval %s: must be positive", interval)
			}
			cl, err := cflags.daemonCluster(dir())
			if err != nil {
				return err
			}
			if lacksVTEP(cl) {
				return usageErrorf(cmd, "cluster mode (--etcd) needs --vtep, this host's underlay address")
			}
			d, err := agent.NewDaemon(agent.Options{StateDir: dir(), Cluster: cl})
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			sd := d.Manager().StateDir()
			fmt.Fprintf(cmd.ErrOrStderr(), "netalias agent: state %s, events on %s\n", sd, events.SocketPath(sd))
			if cl != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "netalias agent: %s\n", describeCluster(cl))
			}
			return d.Run(ctx, interval)
		},
	}
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "how often to reconcile, besides on link events (a `DURATION` like 2s)")
	return cmd
}
