package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/netalias/netalias/internal/version"
)

// versionInfo is what `netalias version` prints.
type versionInfo struct {
	Version string `json:"version"`
	Go      string `json:"go"`
	OS      string `json:"os"`
	Arch    string `json:"arch"`
}

func newVersionCmd() *cobra.Command {
	var format string
	cmd := &cobra.Command{
		Use:   "version [flags]",
		Short: "Print the version, the Go version and the platform",
		Args:  wantArgs(0, 0, ""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := versionInfo{version.String(), runtime.Version(), runtime.GOOS, runtime.GOARCH}
			switch format {
			case "json":
				return writeJSON(cmd.OutOrStdout(), v)
			case "":
				_, err := fmt.Fprintf(cmd.OutOrStdout(), "netalias version %s\n go: %s\n platform: %s/%s\n", v.Version, v.Go, v.OS, v.Arch)
				return err
			}
			return usageErrorf(cmd, "unknown --format %q (json)", format)
		},
	}
	cmd.Flags().StringVar(&format, "format", "", "output `FORMAT`: \"json\", or empty for text")
	return cmd
}
