package agent

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/netalias/netalias/agent/names"
	"github.com/netalias/netalias/agent/netns"
	"github.com/netalias/netalias/agent/resolvconf"
	"github.com/netalias/netalias/state"
)

// RunSpec is what `netalias run` asks for.
type RunSpec struct {
	Name     string // namespace and endpoint name; default run-XXXXXX
	Networks []string
	Aliases  []string
	Links    []state.Link
	Argv     []string
	// Helper is the argv prefix of a program that, started in a private
	// mount namespace, runs ExecWithResolver(resolv, argv) given
	// "RESOLV -- ARGV...": `netalias __exec`.
	Helper         []string
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Run creates a namespace named spec.Name, connects it to the networks,
// runs the command inside with the namespace's resolver file, forwards
// SIGINT, SIGTERM, SIGHUP and SIGQUIT to it, and on every exit path
// disconnects and deletes the namespace. It returns the command's exit
// status (128+N when killed by signal N). If this process is killed
// outright, the command dies with it (parent-death signal) and the next
// netalias operation reclaims the namespace (the endpoints record us as
// owner).
func (m *Manager) Run(spec RunSpec) (int, error) {
	if len(spec.Argv) == 0 {
		return 0, errors.New("run: no command given (netalias run [flags] -- CMD...)")
	}
	if spec.Name == "" {
		var b [3]byte
		rand.Read(b[:])
		spec.Name = "run-" + hex.EncodeToString(b[:])
	}
	if err := names.Label("container name", spec.Name); err != nil {
		return 0, err
	}
	if len(spec.Networks) == 0 {
		return 0, errors.New("run: give at least one --network")
	}
	snap, err := m.store.Load()
	if err != nil {
		return 0, err
	}
	for _, n := range spec.Networks {
		if _, err := lookup(snap, n); err != nil {
			return 0, err
		}
	}
	// Catch signals before anything exists, so every path cleans up.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)

	owner := &state.Owner{PID: os.Getpid(), StartTime: netns.StartTime(os.Getpid())}
	// Recorded before the namespace exists (runintent.go); a namespace of
	// that name already there is someone else's: never recorded as ours.
	if _, err := os.Lstat(filepath.Join(netns.RunDir, spec.Name)); err == nil {
		return 0, fmt.Errorf("namespace %q already exists (%s)", spec.Name, filepath.Join(netns.RunDir, spec.Name))
	}
	if err := m.writeRunIntent(spec.Name, *owner); err != nil {
		return 0, err
	}
	var path string
	if err := point("run", "netns", func() (err error) {
		path, err = netns.Create(spec.Name)
		return err
	}); err != nil {
		m.removeRunIntent(spec.Name)
		return 0, err
	}
	cleanup := func() error {
		err := m.Release(path)
		if err == nil {
			m.removeRunIntent(spec.Name)
		}
		return err
	}
	// On the error paths the command's error is what the user needs; a
	// failed cleanup is logged (the next command reclaims what is left).
	cleanupQuietly := func() {
		if err := cleanup(); err != nil {
			m.log.Error("run: cleanup failed", "namespace", path, "err", err)
		}
	}
	signaled := 0
	if err := point("run", "connect", func() error {
		for _, n := range spec.Networks {
			if _, err := m.Connect(ConnectSpec{Network: n, Netns: path, Name: spec.Name,
				Aliases: spec.Aliases, Links: spec.Links, Owner: owner}); err != nil {
				return err
			}
			select {
			case s := <-sigs:
				signaled = 128 + int(s.(syscall.Signal))
				return nil
			default:
			}
		}
		return nil
	}); err != nil || signaled != 0 {
		cleanupQuietly()
		return signaled, err
	}
	args := append(append([]string{}, spec.Helper[1:]...), resolvconf.Path(spec.Name), "--")
	cmd := exec.Command(spec.Helper[0], append(args, spec.Argv...)...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = spec.Stdin, spec.Stdout, spec.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
	if err := point("run", "start", func() error { return netns.StartIn(path, cmd) }); err != nil {
		cleanupQuietly()
		return 0, fmt.Errorf("run %s: %w", spec.Argv[0], err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var werr error
wait:
	for {
		select {
		case s := <-sigs:
			if err := cmd.Process.Signal(s); err != nil {
				m.log.Warn("run: signal not forwarded", "signal", s, "err", err)
			}
		case werr = <-done:
			break wait
		}
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(werr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		} else {
			code = ee.ExitCode()
		}
	} else if werr != nil {
		cleanupQuietly()
		return 0, werr
	}
	if err := point("run", "cleanup", cleanup); err != nil {
		return code, err
	}
	return code, nil
}

// Release disconnects every endpoint of the container at nsPath and, if it
// is a named namespace under /run/netns, deletes the namespace and its
// resolver file.
func (m *Manager) Release(nsPath string) error {
	lk, snap, err := m.begin()
	if err != nil {
		return err
	}
	var firstErr error
	for _, name := range snap.Names() {
		f := snap.Files[name]
		for i := len(f.Endpoints) - 1; i >= 0; i-- {
			ep := f.Endpoints[i]
			if ep.Container != nsPath {
				continue
			}
			if err := m.detach(snap, f, i); err != nil {
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
			m.emit(epEvent("disconnect", f.Network, ep, ""))
		}
	}
	if netsName := nsName(nsPath); netsName != "" {
		if err := m.k.Resolver.Remove(netsName); err != nil && firstErr == nil {
			firstErr = err
		}
		if err := m.k.Namespaces.Delete(netsName); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	lk.Unlock()
	m.afterPending()
	return firstErr
}

func nsName(p string) string {
	if len(p) > len(netns.RunDir)+1 && p[:len(netns.RunDir)+1] == netns.RunDir+"/" {
		return p[len(netns.RunDir)+1:]
	}
	return ""
}
