//go:build !netalias_lite

package main

import "github.com/spf13/cobra"

// delegateToFull: this is the full build (see full_lite.go).
func delegateToFull(*cobra.Command) {}
