package main

import (
	"context"
	"encoding/json"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/netalias/netalias/agent/events"
)

func newEventsCmd(dir func() string) *cobra.Command {
	return &cobra.Command{
		Use:   "events",
		Short: "Print the agent's events as JSON lines",
		Long: `Print network and endpoint events as JSON lines, like docker events, until
interrupted. Events come from a running "netalias agent" on the same state
directory.`,
		Args: wantArgs(0, 0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			enc := json.NewEncoder(cmd.OutOrStdout())
			return events.Subscribe(ctx, events.SocketPath(dir()), func(ev events.Event) error { return enc.Encode(ev) })
		},
	}
}
