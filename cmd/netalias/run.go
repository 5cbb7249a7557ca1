package main

import (
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/netalias/netalias/agent"
	"github.com/netalias/netalias/agent/netns"
)

func newRunCmd(dir func() string) *cobra.Command {
	var spec agent.RunSpec
	var links []string
	cmd := &cobra.Command{
		Use:   "run [flags] -- CMD...",
		Short: "Run a command in a new network namespace attached to networks",
		Long: `Create a network namespace, connect it to each --network, run CMD inside
with the namespace's resolver, and on every exit path disconnect and delete
the namespace. The exit status is CMD's (128+N when killed by signal N).
Everything after "--" is CMD, untouched.`,
		Example: `  netalias run --name client --network testnet -- ping -c1 web.testnet`,
		Args:    wantArgs(1, -1, "-- CMD..."),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dash := cmd.ArgsLenAtDash(); dash > 0 {
				return usageErrorf(cmd, "unexpected %q before --", args[0])
			}
			spec.Argv = args
			var err error
			if spec.Links, err = parseLinks(links); err != nil {
				return err
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			spec.Helper = []string{self, "__exec"}
			spec.Stdin, spec.Stdout, spec.Stderr = cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr()
			m, err := manager(dir())
			if err != nil {
				return err
			}
			code, err := m.Run(spec)
			if err == nil && code != 0 {
				err = exitStatus(code)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&spec.Name, "name", "", "`NAME` of the namespace and endpoint (default: run-XXXXXX)")
	f.StringArrayVar(&spec.Networks, "network", nil, "`NETWORK` to connect to (repeatable; also --net)")
	aliasFlag(f, &spec.Aliases, "; also --network-alias")
	linkFlag(f, &links)
	// docker's other spellings, one flag each so repeats accumulate.
	f.SetNormalizeFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		switch name {
		case "net":
			name = "network"
		case "network-alias":
			name = "alias"
		}
		return pflag.NormalizedName(name)
	})
	return cmd
}

// newExecCmd is the inside half of `run`, started by the agent in the new
// namespace as `netalias __exec RESOLV -- CMD...`: it bind-mounts RESOLV
// over /etc/resolv.conf and execs CMD. Its arguments are never parsed as
// flags.
func newExecCmd() *cobra.Command {
	return &cobra.Command{
		Use:                "__exec RESOLV -- CMD...",
		Short:              "Run CMD with RESOLV as /etc/resolv.conf (started by netalias run)",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) < 3 || args[1] != "--" {
				return usageErrorf(cmd, "want RESOLV -- CMD...")
			}
			return netns.ExecWithResolver(args[0], args[2:])
		},
	}
}
