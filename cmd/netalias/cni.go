package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/netalias/netalias/agent"
	"github.com/netalias/netalias/cni"
	"github.com/netalias/netalias/state"
)

// CNI plugin mode: runtimes exec plugins with no arguments and the
// CNI_* variables set. Any argument means a command line (the reaper's
// re-exec among them), whatever the environment holds.
func pluginMode(args []string) bool {
	return len(args) == 0 && os.Getenv("CNI_COMMAND") != ""
}

// runPlugin serves one CNI command over the agent. Veths waiting for
// deletion go to a detached reaper, as after a disconnect.
func runPlugin() {
	cni.Main(func(dir string) (cni.Backend, error) {
		return agent.OpenCNI(agent.Options{Emit: publisher(dir), Reap: spawnReaper(dir)})(dir)
	})
}

// withoutCNIEnv is env without the CNI_* variables: a process the plugin
// starts must not take itself for a plugin.
func withoutCNIEnv(env []string) []string {
	return slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, "CNI_") })
}

func newCNICmd(dir func() string) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cni COMMAND",
		Short: "Use netalias networks from CNI runtimes (Podman, containerd, CRI-O)",
		Long: `The netalias binary is also a CNI plugin of type "netalias": put it (or a
link to it) in a CNI_PATH directory under that name. "cni conflist" writes
a network configuration list for a network made with "network create".`,
		Args: unknownCommand,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usageErrorf(cmd, "want conflist")
		},
	}
	cmd.AddCommand(newCNIConflistCmd(dir))
	return cmd
}

func newCNIConflistCmd(dir func() string) *cobra.Command {
	var o cni.ConflistOptions
	cmd := &cobra.Command{
		Use:   "conflist [flags] NETWORK",
		Short: "Print a CNI conflist for a network",
		Long: `Print a CNI network configuration list (.conflist) that attaches containers
to NETWORK through the netalias plugin, followed by the reference plugins
given with --plugin in that order. The state directory is --state-dir's.
The network must exist: the plugin never creates one.`,
		Example: `  netalias network create testnet
  netalias cni conflist --plugin portmap testnet > /etc/cni/net.d/testnet.conflist`,
		Args: wantArgs(1, 1, "NETWORK"),
		RunE: func(cmd *cobra.Command, args []string) error {
			// Read only: a conflist for a missing network would fail every ADD.
			sd, err := filepath.Abs(dir())
			if err != nil {
				return err
			}
			if _, err := state.Read(state.NetworkPath(sd, args[0])); errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("network %q does not exist in %s (create it with \"netalias network create %s\")", args[0], sd, args[0])
			} else if err != nil {
				return err
			}
			o.Network, o.StateDir = args[0], sd
			b, err := cni.Conflist(o)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(b)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Name, "name", "", "the CNI network `NAME` runtimes know it by (default: NETWORK)")
	f.StringVar(&o.CNIVersion, "cni-version", "", "the conflist's cniVersion `V` (default "+cni.DefaultConflistVersion+"; 1.1.0 for GC and STATUS)")
	f.StringArrayVar(&o.Plugins, "plugin", nil, "chain a reference `PLUGIN` after netalias: portmap, tuning, bandwidth or firewall (repeatable)")
	return cmd
}
