package test

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// crashAt runs netalias with NETALIAS_CRASH_AT=point (the process
// SIGKILLs itself there) and reports whether it died of SIGKILL.
func (e *agentEnv) crashAt(point string, args ...string) bool {
	e.t.Helper()
	cmd := exec.Command(e.bin, append([]string{"--state-dir", e.dir}, args...)...)
	cmd.Env = append(os.Environ(), "NETALIAS_ADDRESS_POOLS="+e.pool, "NETALIAS_CRASH_AT="+point)
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			return true
		}
	}
	return false
}

// TestCrashMatrix kills netalias with a real SIGKILL before and after
// every named step of connect, disconnect, network create, network rm,
// run, the CNI plugin's ADD and the Docker driver's CreateEndpoint (the
// list comes from the binary, `netalias __steps`, so a new step is
// covered without touching this test), then runs one ordinary command (for
// the runtime fronts: what the runtime does after a failed call), and
// checks the invariant twice: with `netalias check` and with the
// independent oracle (crash_helpers_test.go).
func TestCrashMatrix(t *testing.T) {
	e := newAgentEnv(t)
	steps := strings.Fields(e.must("__steps"))
	ops := map[string]bool{}
	for _, s := range steps {
		op, _, _ := strings.Cut(s, ":")
		ops[op] = true
	}
	for _, op := range []string{"connect", "disconnect", "network-create", "network-rm", "run", "attach", "docker-endpoint"} {
		if !ops[op] {
			t.Fatalf("__steps lists no step of %s: %q", op, steps)
		}
	}
	e.network("cm")
	var nss []string
	newNS := func() string {
		ns := agNetns(t)
		nss = append(nss, ns)
		return ns
	}
	// A bystander stays connected throughout: no crash may touch it.
	bystander := newNS()
	e.must("connect", "cm", bystander)

	// The runtime fronts (crash_fronts_test.go) on the same network, so
	// the bystander sees their crashes too.
	peer := e.file("cm").Endpoints[0].IPv4
	cniF := &cniFront{e: e, network: "cm", peer: peer}
	var dockerF *dockerFront
	if ops["docker-endpoint"] {
		dockerF = newDockerFront(t, e, "cm")
	}

	for i, step := range steps {
		op, _, _ := strings.Cut(step, ":")
		for _, pos := range []string{"before", "after"} {
			point := step + ":" + pos
			t.Run(point, func(t *testing.T) {
				e.t = t
				defer func() { e.t = nil }()
				var crash, again []string
				var cleanup func()
				net := "cmx" + string(rune('a'+i%26))
				switch op {
				case "attach": // CNI ADD: DEL after it, or ADD again
					cniF.crash(t, point, newNS, func() []string { return nss })
					return
				case "docker-endpoint": // the Docker driver's CreateEndpoint
					dockerF.crash(t, point, nss)
					return
				case "connect":
					ns := newNS()
					crash = []string{"connect", "cm", ns}
					again = crash
				case "disconnect":
					ns := newNS()
					e.must("connect", "cm", ns)
					crash = []string{"disconnect", "cm", ns}
					again = crash
				case "network-create":
					crash = []string{"network", "create", net}
					again = crash
					cleanup = func() { e.run("network", "rm", "--force", net) }
				case "network-rm":
					ns := newNS()
					e.must("network", "create", net)
					e.must("connect", net, ns)
					crash = []string{"network", "rm", "--force", net}
					again = crash
				case "run":
					name := "nat-" + agRand()
					nss = append(nss, name)
					t.Cleanup(func() {
						if _, err := os.Stat("/run/netns/" + name); err == nil {
							exec.Command("ip", "netns", "del", name).Run()
						}
					})
					crash = []string{"run", "--name", name, "--network", "cm", "--", "true"}
					again = []string{"network", "ls"}
					cleanup = func() {
						if _, err := os.Stat("/run/netns/" + name); err == nil {
							t.Errorf("run's namespace %s left behind after %s and one command", name, point)
						}
					}
				default:
					t.Fatalf("step %s: no command of this test runs %s", step, op)
				}
				if cleanup != nil {
					defer cleanup()
				}
				if !e.crashAt(point, crash...) {
					t.Fatalf("netalias %s with NETALIAS_CRASH_AT=%s was not killed: the point was never reached", strings.Join(crash, " "), point)
				}
				// One ordinary command (it may refuse: already done).
				e.run(again...)
				if bad := settle(t, e.dir, nss, 5*time.Second); len(bad) > 0 {
					t.Errorf("oracle after %s and one command: %d inconsistencies:\n%s", point, len(bad), strings.Join(bad, "\n"))
				}
				if r := e.run("check"); r.code != 0 {
					t.Errorf("netalias check after %s: exit %d:\n%s%s", point, r.code, r.stdout, r.stderr)
				}
			})
		}
	}
	e.t = t
	// The bystander kept its endpoint and its address all along.
	if bad := invariantViolations(t, e.dir, []string{bystander}); len(bad) > 0 {
		t.Errorf("bystander: %q", bad)
	}
}
