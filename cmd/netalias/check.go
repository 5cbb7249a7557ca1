package main

import (
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/netalias/netalias/agent"
)

func newCheckCmd(dir func() string) *cobra.Command {
	var repair bool
	cmd := &cobra.Command{
		Use:   "check [--repair]",
		Short: "Compare the state with the kernel and the resolver files",
		Long: `Compare the state directory with the kernel (bridges, veths, interfaces and
addresses inside the namespaces, default routes, firewall rules) and the
resolver files, and print each inconsistency on one line naming its object.
Exit status 1 when there is one. Run it after a crash.

--repair first fixes what every command's reconcile fixes (the temp files,
veths and network operations a killed command left, missing bridges and
resolver files), plus missing rules and default routes; it prints
"repaired: LINE" for each problem gone and the problems left.`,
		Args: wantArgs(0, 0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			m, err := manager(dir())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			bad, err := m.Check()
			if err != nil {
				return err
			}
			if repair && len(bad) > 0 {
				before := bad
				if bad, err = m.Repair(); err != nil {
					return err
				}
				for _, b := range before {
					if !slices.Contains(bad, b) {
						fmt.Fprintf(out, "repaired: %s\n", b)
					}
				}
			}
			for _, b := range bad {
				fmt.Fprintln(out, b)
			}
			if len(bad) > 0 {
				return fmt.Errorf("check: %d inconsistenc%s in %s", len(bad), plural(len(bad), "y", "ies"), m.StateDir())
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&repair, "repair", false, "fix what can be fixed, then check again")
	return cmd
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// newStepsCmd is the hidden `netalias __steps`: the named steps of every
// operation (agent.Steps), one "OP:STEP" a line, for the crash tests.
func newStepsCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "__steps",
		Short:  "List the operations' named steps (crash points)",
		Hidden: true,
		Args:   wantArgs(0, 0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), strings.Join(agent.Steps, "\n"))
			return nil
		},
	}
}
