package test

import (
	"bufio"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// `netalias agent` serves the event stream: CLI changes show up in
// `netalias events`, and the agent itself reconciles a namespace that
// vanished, without any further command.
func TestAgentEventsAndDaemonReconcile(t *testing.T) {
	e := newAgentEnv(t)
	sub, _, _ := agNextSubnet()
	net := "ev" + agRand()[:4]

	agentCmd := exec.Command(e.bin, "--state-dir", e.dir, "agent", "--interval", "500ms")
	if err := agentCmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { agentCmd.Process.Kill(); agentCmd.Wait() })

	type ev struct {
		Type, Action, Network, Endpoint, IPv4, Reason string
		Aliases                                       []string
	}
	evc := make(chan ev, 64)
	var evCmd *exec.Cmd
	agEventually(t, 10*time.Second, "events to subscribe", func() bool {
		evCmd = exec.Command(e.bin, "--state-dir", e.dir, "events")
		out, _ := evCmd.StdoutPipe()
		if err := evCmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(out)
		ok := make(chan bool, 1)
		go func() {
			first := true
			for sc.Scan() {
				var x ev
				if json.Unmarshal(sc.Bytes(), &x) == nil {
					if first {
						ok <- true
						first = false
					}
					evc <- x
				}
			}
			if first {
				ok <- false
			}
		}()
		// Probe: a network create is the first event we expect.
		r := e.run("network", "create", "--subnet", sub, net)
		if r.code != 0 && !strings.Contains(r.stderr, "already exists") {
			t.Fatalf("network create: %s", r.stderr)
		}
		select {
		case good := <-ok:
			if !good {
				evCmd.Wait()
				e.run("network", "rm", net)
			}
			return good
		case <-time.After(2 * time.Second):
			evCmd.Process.Kill()
			evCmd.Wait()
			e.run("network", "rm", net)
			return false
		}
	})
	t.Cleanup(func() { evCmd.Process.Kill(); evCmd.Wait(); e.run("network", "rm", "--force", net) })
	wait := func(want func(ev) bool, what string) ev {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case x := <-evc:
				if want(x) {
					return x
				}
			case <-timeout:
				t.Fatalf("no event: %s", what)
			}
		}
	}
	c := agNetns(t)
	e.must("connect", net, c, "--alias", "centos-1")
	got := wait(func(x ev) bool { return x.Type == "endpoint" && x.Action == "connect" }, "connect")
	if got.Network != net || got.Endpoint != c || got.IPv4 == "" || len(got.Aliases) != 1 || got.Aliases[0] != "centos-1" {
		t.Errorf("connect event: %+v", got)
	}
	// Destroy the namespace: the agent notices the veth go and reconciles.
	exec.Command("ip", "netns", "del", c).Run()
	got = wait(func(x ev) bool { return x.Type == "endpoint" && x.Action == "disconnect" }, "disconnect after the namespace vanished")
	if got.Endpoint != c || got.Reason == "" {
		t.Errorf("reconcile event: %+v", got)
	}
	agEventually(t, 5*time.Second, "state to drop the endpoint", func() bool { return len(e.file(net).Endpoints) == 0 })
	e.must("network", "rm", net)
	wait(func(x ev) bool { return x.Type == "network" && x.Action == "remove" && x.Network == net }, "network remove")
}
