package main

import (
	"os"
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
		// Its own session, no CNI_* variables, stdio on /dev/null: a
		// runtime reading the plugin's output must not wait for the
		// reaper. syscall.ForkExec, not os/exec: nobody waits for this
		// child, and os.StartProcess would first probe pidfd support by
		// forking a child of its own, a second fork on every disconnect
		// that starts a reaper.
		null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
		if err != nil {
			return
		}
		defer null.Close()
		fd := null.Fd()
		syscall.ForkExec(self, []string{self, "--state-dir", dir, "__reap"}, &syscall.ProcAttr{
			Env:   withoutCNIEnv(os.Environ()),
			Files: []uintptr{fd, fd, fd},
			Sys:   &syscall.SysProcAttr{Setsid: true},
		})
	}
}
