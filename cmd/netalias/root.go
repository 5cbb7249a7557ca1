package main

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/netalias/netalias/agent"
	"github.com/netalias/netalias/agent/events"
	"github.com/netalias/netalias/internal/version"
	"github.com/netalias/netalias/state"
)

// newRoot builds the command tree. Commands write to cmd.OutOrStdout() and
// cmd.ErrOrStderr(), so tests run the tree in-process.
func newRoot() *cobra.Command {
	var stateDir string
	dir := func() string { return state.Dir(stateDir) }
	root := &cobra.Command{
		Use:   "netalias",
		Short: "Bridge networks whose endpoints find each other by name",
		Long: `netalias makes bridge networks and attaches network namespaces to them,
as docker network and docker run do; the netalias CoreDNS plugin answers
ALIAS.NETWORK for every endpoint it records.

NETNS is a name under /run/netns, a path (/proc/PID/ns/net, a bind mount)
or a PID. Names are DNS labels. Errors are one line "netalias: <problem>"
on stderr with exit status 1 (2 for usage errors), and change nothing.`,
		Version:           version.String(),
		Args:              unknownCommand,
		SilenceErrors:     true,
		SilenceUsage:      true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
		RunE: func(cmd *cobra.Command, _ []string) error {
			// No command: a script's mistake, so usage on stderr and exit 2.
			cmd.SetOut(cmd.ErrOrStderr())
			cmd.Usage()
			return exitStatus(2)
		},
	}
	root.SetVersionTemplate("netalias version {{.Version}}\n")
	root.SetFlagErrorFunc(flagError)
	root.SetHelpCommand(newHelpCmd())
	root.PersistentFlags().StringVar(&stateDir, "state-dir", "",
		fmt.Sprintf("the state directory `DIR` (default $%s, else %s)", state.EnvDir, state.DefaultDir))
	addClusterFlags(root.PersistentFlags())
	root.AddCommand(
		newNetworkCmd(dir),
		newConnectCmd(dir),
		newDisconnectCmd(dir),
		newRunCmd(dir),
		newEventsCmd(dir),
		newAgentCmd(dir),
		newDockerPluginCmd(dir),
		newVersionCmd(),
		newCompletionCmd(),
		newReapCmd(dir),
		newCNICmd(dir),
		newExecCmd(),
		newCheckCmd(dir), newStepsCmd(),
	)
	delegateToFull(root)
	return root
}

// execute runs one command line and returns its exit status: 0, the
// status of `run`'s command, 1 for errors, 2 for usage errors.
func execute(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := newRoot()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	var st exitStatus
	switch {
	case err == nil:
		return 0
	case errors.As(err, &st):
		return int(st)
	}
	fmt.Fprintf(stderr, "netalias: %s\n", oneLine(err))
	if errors.As(err, new(usageError)) {
		return 2
	}
	return 1
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

// usageError is a command line the tree cannot run: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// usageErrorf names the command and points at its help.
func usageErrorf(cmd *cobra.Command, format string, a ...any) error {
	msg := fmt.Sprintf("%s (see '%s --help')", fmt.Sprintf(format, a...), cmd.CommandPath())
	if cmd.HasParent() {
		msg = name(cmd) + ": " + msg
	}
	return usageError{msg}
}

// exitStatus ends the process with a status and no message (`run`'s
// command already spoke for itself).
type exitStatus int

func (e exitStatus) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// name is the command path without the program name: "network create".
func name(cmd *cobra.Command) string {
	if !cmd.HasParent() {
		return cmd.Name()
	}
	p := cmd.CommandPath()
	return p[strings.IndexByte(p, ' ')+1:]
}

// flagError keeps the wording of the stdlib flag package, which scripts
// and tests match, and makes every flag problem a usage error.
func flagError(cmd *cobra.Command, err error) error {
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "unknown flag: "); ok {
		msg = "flag provided but not defined: " + rest
	} else if rest, ok := strings.CutPrefix(msg, "unknown shorthand flag: "); ok {
		// "'z' in -xz": name the letter.
		letter, _, _ := strings.Cut(rest, " in ")
		msg = "flag provided but not defined: -" + strings.Trim(letter, "'")
	}
	return usageErrorf(cmd, "%s", msg)
}

// newHelpCmd is cobra's help command, except that an unknown topic is a
// usage error rather than the root's help with exit status 0.
func newHelpCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "help [COMMAND]...",
		Short: "Help about any command",
		Long:  `Print the help of any command, as "netalias COMMAND... --help" does.`,
		ValidArgsFunction: func(c *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
			target, _, err := c.Root().Find(args)
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var out []cobra.Completion
			for _, sub := range target.Commands() {
				if sub.IsAvailableCommand() {
					out = append(out, cobra.CompletionWithDesc(sub.Name(), sub.Short))
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(c *cobra.Command, args []string) error {
			target, rest, err := c.Root().Find(args)
			if err != nil || len(rest) > 0 {
				return usageErrorf(c, "unknown command %q", strings.Join(args, " "))
			}
			target.SetOut(c.OutOrStdout())
			return target.Help()
		},
	}
}

// unknownCommand rejects any argument of a command that only groups others.
func unknownCommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2 // cobra's default, set only on its own path
	}
	if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
		return usageErrorf(cmd, "unknown command %q, did you mean %q?", args[0], s[0])
	}
	return usageErrorf(cmd, "unknown command %q", args[0])
}

// wantArgs accepts between lo and hi arguments (hi < 0: no limit); the
// usage error says what the command wants.
func wantArgs(lo, hi int, want string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		switch {
		case len(args) >= lo && (hi < 0 || len(args) <= hi):
			return nil
		case hi == 0:
			return usageErrorf(cmd, "takes no arguments, got %q", args[0])
		}
		return usageErrorf(cmd, "want %s", want)
	}
}

// warn prints a non-fatal problem in the one-line error format.
func warn(cmd *cobra.Command, err error) {
	fmt.Fprintf(cmd.ErrOrStderr(), "netalias: %s\n", oneLine(err))
}

// manager opens the agent on dir; it tells a listening agent about every
// change and leaves veth deletion to a detached reaper.
func manager(dir string) (*agent.Manager, error) {
	cl, err := cflags.agentCluster(nil)
	if err != nil {
		return nil, err
	}
	return agent.New(agent.Options{StateDir: dir, Emit: publisher(dir), Reap: spawnReaper(dir), Cluster: cl})
}

// publisher sends events to a listening agent, if any.
func publisher(dir string) func(events.Event) {
	sock := events.SocketPath(dir)
	return func(ev events.Event) { events.Publish(sock, ev) }
}
