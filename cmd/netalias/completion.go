package main

import (
	"github.com/spf13/cobra"
)

func newCompletionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Print a shell completion script",
		Long: `Print the completion script of a shell: commands, flags, and the names of
the networks in the state directory.`,
		Example: `  source <(netalias completion bash)      # this shell; put it in ~/.bashrc to keep it
  netalias completion zsh > "${fpath[1]}/_netalias"
  netalias completion fish > ~/.config/fish/completions/netalias.fish`,
		ValidArgs: []string{"bash", "zsh", "fish"},
		Args:      wantArgs(1, 1, "one shell: bash, zsh or fish"),
		RunE: func(cmd *cobra.Command, args []string) error {
			root, out := cmd.Root(), cmd.OutOrStdout()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(out, true)
			case "zsh":
				return root.GenZshCompletion(out)
			case "fish":
				return root.GenFishCompletion(out, true)
			}
			return usageErrorf(cmd, "unknown shell %q (bash, zsh or fish)", args[0])
		},
	}
}
