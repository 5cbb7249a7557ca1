package main

import (
	"os"
	"os/exec"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/netalias/netalias/agent"
)

// newReapCmd is the hidden `netalias --state-dir DIR __reap` that
// spawnReaper starts; its name and flags are an interface with older
// binaries still running, so they never change.
func newReapCmd(dir func() string) *cobra.Command {
	return &cobra.Command{
		Use:    "__reap",
		Short:  "Delete unplugged veths in the background (started by netalias itself)",
		Hidden: true,
		Args:   wantArgs(0, 0, ""),
		RunE: func(*cobra.Command, []string) error {
			// Background work: leave the CPU to the commands users wait for.
			syscall.Setpriority(syscall.PRIO_PROCESS, 0, 10)
			m, err := agent.New(agent.Options{StateDir: dir(), Emit: publisher(dir())})
			if err != nil {
				return err
			}
			return m.Reap()
		},
	}
}

// spawnReaper starts a detached `netalias __reap` that deletes unplugged
// veths (each deletion waits for an RCU grace period) after this command
// has returned.
func spawnReaper(dir string) func() {
	return func() {
		if agent.ReaperRunning(dir) {
			return // it will pick our entry up before it exits
		}
		self, err := os.Executable()
		if err != nil {
			return
		}
		c := exec.Command(self, "--state-dir", dir, "__reap")
		// Its own session, no CNI_* variables, stdio on /dev/null (a nil
		// Stdout): a runtime reading the plugin's output must not wait
		// for the reaper.
		c.Env = withoutCNIEnv(os.Environ())
		c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := c.Start(); err == nil {
			c.Process.Release()
		}
	}
}
