package netns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"

	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// StartIn starts cmd inside the network namespace at nsPath: a locked
// thread switches in, forks, and switches back (the child inherits the
// thread's namespace). The thread is only unlocked once it is back home.
func StartIn(nsPath string, cmd *exec.Cmd) error {
	target, err := vnetns.GetFromPath(nsPath)
	if err != nil {
		return fmt.Errorf("open namespace %s: %w", nsPath, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := vnetns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := vnetns.Set(target); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter namespace %s: %w", nsPath, err)
			return
		}
		startErr := cmd.Start()
		if err := vnetns.Set(orig); err != nil {
			// Leave the thread locked: it dies with this goroutine
			// instead of running other code in the wrong namespace.
			errc <- errors.Join(startErr, fmt.Errorf("return to host namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- startErr
	}()
	return <-errc
}

// ExecWithResolver is the inside half of `netalias run`: running in a
// private mount namespace (the parent cloned it with CLONE_NEWNS), it
// bind-mounts resolv over /etc/resolv.conf, as `ip netns exec` does, and
// replaces itself with argv.
func ExecWithResolver(resolv string, argv []string) error {
	if len(argv) == 0 {
		return errors.New("no command given")
	}
	// Keep our mounts from propagating back to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make mounts private: %w", err)
	}
	if resolv != "" {
		if _, err := os.Stat(resolv); err == nil {
			if err := unix.Mount(resolv, "/etc/resolv.conf", "", unix.MS_BIND, ""); err != nil {
				return fmt.Errorf("bind-mount %s on /etc/resolv.conf: %w", resolv, err)
			}
		}
	}
	path, err := exec.LookPath(argv[0])
	if err != nil {
		return err
	}
	return syscall.Exec(path, argv, os.Environ())
}
