//go:build netalias_lite

package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/netalias/netalias/agent"
)

// The light build (make build: bin/netalias, -tags netalias_lite) links
// neither the etcd client nor the Docker client: their package
// initialisation (gRPC, protobuf registration, reference regexps) more
// than doubled the start-up of every connect, disconnect and CNI call.
// What needs them runs the full build, bin/netalias-full (the same command
// built without the tag), with the same arguments: cluster mode (--etcd or
// $NETALIAS_ETCD) and docker-plugin.

const fullName = "netalias-full"

// delegateToFull makes every command run the full build when cluster mode
// is asked for; flags are parsed by then, so --etcd after the command
// name counts, and an argument after "--" of run does not.
func delegateToFull(root *cobra.Command) {
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		if cflags.etcd == "" {
			return nil
		}
		return execFull()
	}
}

// execFull replaces this process with netalias-full; it returns only on
// failure.
func execFull() error {
	p, err := fullBinary()
	if err != nil {
		return err
	}
	env := os.Environ()
	if c := agent.CrashPoint(); c != "" { // the crash tests' point, taken at start
		env = append(env, agent.EnvCrashAt+"="+c)
	}
	err = syscall.Exec(p, append([]string{p}, os.Args[1:]...), env)
	return fmt.Errorf("run %s: %w", p, err)
}

// fullBinary is netalias-full beside this executable, else on PATH.
func fullBinary() (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), fullName)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath(fullName); err == nil {
		return p, nil
	}
	return "", errors.New("cluster mode (--etcd) and docker-plugin are in " + fullName +
		", found neither beside this netalias nor on PATH (make build puts both in bin/)")
}

// newDockerPluginCmd runs netalias-full's docker-plugin, --help included.
func newDockerPluginCmd(func() string) *cobra.Command {
	return &cobra.Command{
		Use:   "docker-plugin [--name NAME]",
		Short: "Serve Docker's network and IPAM driver protocol",
		Long: `Serve Docker's network and IPAM driver protocol: this command runs
netalias-full docker-plugin with the same arguments; see its --help.`,
		DisableFlagParsing: true,
		RunE:               func(*cobra.Command, []string) error { return execFull() },
	}
}

// agentCluster is never reached with --etcd (delegateToFull).
func (c *clusterFlags) agentCluster(any) (*agent.ClusterOptions, error) {
	if c.etcd != "" {
		return nil, errors.New("cluster mode needs " + fullName)
	}
	return nil, nil
}

func (c *clusterFlags) daemonCluster(string) (*agent.ClusterOptions, error) {
	return c.agentCluster(nil)
}

func describeCluster(*agent.ClusterOptions) string { return "" }

func lacksVTEP(*agent.ClusterOptions) bool { return false }
