package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/netalias/netalias/agent"
	"github.com/netalias/netalias/agent/store"
	"github.com/netalias/netalias/state"
)

func newNetworkCmd(dir func() string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "network COMMAND",
		Short: "Manage networks",
		Args:  unknownCommand,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageErrorf(cmd, "want create, ls, inspect or rm")
		},
	}
	cmd.AddCommand(newNetworkCreateCmd(dir), newNetworkLsCmd(dir), newNetworkInspectCmd(dir), newNetworkRmCmd(dir))
	return cmd
}

func newNetworkCreateCmd(dir func() string) *cobra.Command {
	var spec agent.NetworkSpec
	cmd := &cobra.Command{
		Use:   "create [flags] NAME",
		Short: "Create a bridge network",
		Long: `Create a bridge network and print its ID. Without --subnet, the first free
subnet of the address pools is used ($NETALIAS_ADDRESS_POOLS, CIDR:SIZE[,...],
else Docker's defaults). The gateway is the bridge's address and defaults
to the subnet's first host.`,
		Example: `  netalias network create testnet
  netalias network create --subnet 10.10.0.0/24 --ipv6 --internal backend`,
		Args: wantArgs(1, 1, "exactly one NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec.Name = args[0]
			m, err := manager(dir())
			if err != nil {
				return err
			}
			n, err := m.CreateClusterNetwork(spec)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), n.ID)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec.Subnet, "subnet", "", "IPv4 `CIDR` subnet (default: the next free one from the pools)")
	f.StringVar(&spec.Gateway, "gateway", "", "the IPv4 gateway, the bridge's address: an `IP` in --subnet (default: its first host)")
	f.BoolVar(&spec.IPv6, "ipv6", false, "also give the network an IPv6 subnet (a random unique local /64 unless --subnet6)")
	f.StringVar(&spec.Subnet6, "subnet6", "", "IPv6 `CIDR` subnet (implies --ipv6)")
	f.StringVar(&spec.Gateway6, "gateway6", "", "the IPv6 gateway: an `IP` in --subnet6 (default: its first host)")
	f.BoolVar(&spec.Internal, "internal", false, "no route out: endpoints reach only each other")
	f.IntVar(&spec.MTU, "mtu", 0, "`MTU` of the bridge and veths (default: the uplink's)")
	return cmd
}

// NetworkSummary is one line of `network ls --format json`.
type NetworkSummary struct {
	state.Network
	Endpoints int `json:"endpoints"`
}

func newNetworkLsCmd(dir func() string) *cobra.Command {
	var format string
	var quiet bool
	cmd := &cobra.Command{
		Use:     "ls [flags]",
		Aliases: []string{"list"},
		Short:   "List networks",
		Long: `List networks as a table, only their IDs (-q), or as a JSON array of the
state format's network objects plus "endpoints": N (--format json).
Corrupt state files are named on stderr and left untouched.`,
		Args: wantArgs(0, 0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if format != "" && format != "json" {
				return usageErrorf(cmd, "unknown --format %q (json)", format)
			}
			snap, err := reconciledSnapshot(cmd, dir())
			if err != nil {
				return err
			}
			for _, c := range snap.Corrupt {
				fmt.Fprintf(cmd.ErrOrStderr(), "netalias: %s (left untouched)\n", oneLine(c))
			}
			files := make([]*state.File, 0, len(snap.Files))
			for _, n := range snap.Names() {
				files = append(files, snap.Files[n])
			}
			if format == "json" {
				out := []NetworkSummary{}
				for _, f := range files {
					out = append(out, NetworkSummary{f.Network, len(f.Endpoints)})
				}
				return writeJSON(cmd.OutOrStdout(), out)
			}
			return writeNetworks(cmd.OutOrStdout(), files, quiet)
		},
	}
	cmd.Flags().StringVar(&format, "format", "", "output `FORMAT`: \"json\", or empty for a table")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only the short network IDs")
	return cmd
}

// shortID is the ID as `network ls` shows it: docker's 12 characters, or
// all of a shorter one (a hand-edited state file may hold one).
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// writeNetworks prints the `network ls` table, or only the short IDs.
func writeNetworks(w io.Writer, files []*state.File, quiet bool) error {
	if quiet {
		for _, f := range files {
			if _, err := fmt.Fprintln(w, shortID(f.Network.ID)); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, "NETWORK ID\tNAME\tBRIDGE\tSUBNET\tGATEWAY\tINTERNAL\tENDPOINTS")
	for _, f := range files {
		n := f.Network
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\t%d\n", shortID(n.ID), n.Name, n.Bridge,
			joinSet(n.Subnet, n.Subnet6), n.Gateway, n.Internal, len(f.Endpoints))
	}
	return tw.Flush()
}

// joinSet joins the values that are set, whether a field is a string or
// a netip type.
func joinSet(vs ...any) string {
	out := ""
	for _, v := range vs {
		switch x := v.(type) {
		case string:
			if x == "" {
				continue
			}
		case interface{ IsValid() bool }:
			if !x.IsValid() {
				continue
			}
		}
		if out != "" {
			out += ","
		}
		out += fmt.Sprint(v)
	}
	return out
}

func newNetworkInspectCmd(dir func() string) *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "inspect [flags] NAME...",
		Short: "Print networks with their endpoints as JSON",
		Long: `Print a JSON array of whole network files (the state format: the network
and its endpoints). Field names are stable. Unknown networks are errors,
after the known ones are printed.`,
		Args:              wantArgs(1, -1, "NAME..."),
		ValidArgsFunction: completeNetworks(dir, -1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "json" {
				return usageErrorf(cmd, "unknown --format %q (json)", format)
			}
			snap, err := reconciledSnapshot(cmd, dir())
			if err != nil {
				return err
			}
			out := []*state.File{}
			var errs []error
			for _, n := range args {
				f, ok := snap.Files[n]
				if !ok {
					if c := snap.CorruptFor(n); c != nil {
						errs = append(errs, c)
					} else {
						errs = append(errs, fmt.Errorf("network %q not found", n))
					}
					continue
				}
				if f.Endpoints == nil {
					f.Endpoints = []state.Endpoint{}
				}
				out = append(out, f)
			}
			if len(out) > 0 {
				if err := writeJSON(cmd.OutOrStdout(), out); err != nil {
					return err
				}
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().StringVar(&format, "format", "json", "output `FORMAT`: only \"json\"")
	return cmd
}

func newNetworkRmCmd(dir func() string) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm [flags] NAME...",
		Aliases: []string{"remove"},
		Short:   "Remove networks",
		Long: `Remove networks and print each name removed. A network with endpoints is
refused unless --force, which disconnects them first.`,
		Args:              wantArgs(1, -1, "NAME..."),
		ValidArgsFunction: completeNetworks(dir, -1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := manager(dir())
			if err != nil {
				return err
			}
			var errs []error
			for _, name := range args {
				if err := m.RemoveClusterNetwork(name, force); err != nil {
					errs = append(errs, err)
					continue
				}
				fmt.Fprintln(cmd.OutOrStdout(), name)
			}
			return errors.Join(errs...)
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "disconnect the network's endpoints first")
	return cmd
}

// reconciledSnapshot reads the state of dir after a reconcile, so ls and
// inspect never show endpoints whose veth is gone. Only root reconciles;
// others just read.
func reconciledSnapshot(cmd *cobra.Command, dir string) (*store.Snapshot, error) {
	m, err := manager(dir)
	if err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		if err := m.Reconcile(); err != nil {
			warn(cmd, fmt.Errorf("reconcile: %w", err))
		}
	}
	return m.Snapshot()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// completeNetworks completes the first max arguments (max < 0: all) with
// the names of the networks in the state directory. It only lists the
// directory: completion must change nothing and need no privileges.
func completeNetworks(dir func() string, max int) cobra.CompletionFunc {
	return func(_ *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if max >= 0 && len(args) >= max {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ents, _ := os.ReadDir(state.NetworksPath(dir()))
		var names []cobra.Completion
		for _, e := range ents {
			if n := state.NetworkNameFromPath(e.Name()); n != "" && !e.IsDir() {
				names = append(names, n)
			}
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}
