package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/netalias/netalias/agent"
	"github.com/netalias/netalias/state"
)

const netnsHelp = `NETNS is a name under /run/netns, a path (/proc/PID/ns/net, a bind mount)
or a PID.`

func newConnectCmd(dir func() string) *cobra.Command {
	var spec agent.ConnectSpec
	var links []string
	cmd := &cobra.Command{
		Use:   "connect [flags] NETWORK NETNS",
		Short: "Attach a network namespace to a network",
		Long: `Attach a network namespace to a network with a veth, give it an address,
and record the endpoint so that NAME.NETWORK and every ALIAS.NETWORK
resolve to it.

` + netnsHelp,
		Example: `  ip netns add web1
  netalias connect testnet web1 --alias web
  netalias connect testnet 4242 --name db --ip 172.20.0.10`,
		Args:              wantArgs(2, 2, "NETWORK NETNS"),
		ValidArgsFunction: completeNetworks(dir, 1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec.Network, spec.Netns = args[0], args[1]
			var err error
			if spec.Links, err = parseLinks(links); err != nil {
				return err
			}
			m, err := manager(dir())
			if err != nil {
				return err
			}
			_, err = m.Connect(spec)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec.Name, "name", "", "endpoint `NAME`, resolved as NAME.NETWORK (default: the namespace's name)")
	aliasFlag(f, &spec.Aliases, "")
	linkFlag(f, &links)
	f.StringVar(&spec.IP, "ip", "", "the endpoint's IPv4 address, an `IP` in the subnet (default: the next free one)")
	f.StringVar(&spec.IP6, "ip6", "", "the endpoint's IPv6 address, an `IP` in the network's IPv6 subnet (default: the next free one)")
	return cmd
}

func newDisconnectCmd(dir func() string) *cobra.Command {
	return &cobra.Command{
		Use:   "disconnect NETWORK NETNS",
		Short: "Detach a network namespace from a network",
		Long: `Detach a network namespace from a network: its name stops resolving at
once, its veth is deleted in the background.

` + netnsHelp,
		Args:              wantArgs(2, 2, "NETWORK NETNS"),
		ValidArgsFunction: completeNetworks(dir, 1),
		RunE: func(_ *cobra.Command, args []string) error {
			m, err := manager(dir())
			if err != nil {
				return err
			}
			return m.Disconnect(args[0], args[1])
		},
	}
}

// aliasFlag and linkFlag are shared by connect and run.
func aliasFlag(f *pflag.FlagSet, p *[]string, also string) {
	f.StringArrayVar(p, "alias", nil, "another name: `ALIAS`.NETWORK resolves to the endpoint too (repeatable"+also+")")
}

func linkFlag(f *pflag.FlagSet, p *[]string) {
	f.StringArrayVar(p, "link", nil, "for this endpoint only, ALIAS resolves to endpoint NAME (`NAME[:ALIAS]`, repeatable)")
}

func parseLinks(ls []string) ([]state.Link, error) {
	var out []state.Link
	for _, l := range ls {
		t, a, ok := strings.Cut(l, ":")
		if !ok {
			a = t // docker accepts --link NAME as NAME:NAME
		}
		if t == "" || a == "" {
			return nil, fmt.Errorf("invalid --link %q: want NAME:ALIAS", l)
		}
		out = append(out, state.Link{Target: t, Alias: a})
	}
	return out, nil
}
