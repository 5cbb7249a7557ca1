package test

import (
	"bytes"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/netalias/netalias/internal/testenv"
)

// 50 connects at once, each its own process, get 50 distinct addresses
// (the state lock serializes them).
func TestAgentParallelConnects(t *testing.T) {
	e := newAgentEnv(t)
	sub, _, _ := agNextSubnet()
	net := "par" + agRand()[:4]
	e.network(net, "--subnet", sub)
	const n = 50
	nss := make([]string, n)
	for i := range nss {
		nss[i] = agNetns(t)
	}
	var wg sync.WaitGroup
	errs := make([]string, n)
	for i := range nss {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if r := e.run("connect", net, nss[i]); r.code != 0 {
				errs[i] = r.stderr
			}
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if err != "" {
			t.Fatalf("connect %d: %s", i, err)
		}
	}
	f := e.file(net)
	seen := map[string]string{}
	for _, ep := range f.Endpoints {
		if other, dup := seen[ep.IPv4.String()]; dup {
			t.Fatalf("address %s given to %s and %s", ep.IPv4.String(), other, ep.Name)
		}
		seen[ep.IPv4.String()] = ep.Name
		out, _ := agExec(ep.Name, "ip", "-o", "-4", "addr", "show", "dev", "eth0")
		if !strings.Contains(out, " "+ep.IPv4.String()+"/") {
			t.Errorf("%s: state says %s, kernel says %q", ep.Name, ep.IPv4.String(), out)
		}
	}
	if len(seen) != n {
		t.Fatalf("%d endpoints, want %d", len(seen), n)
	}
}

// A name that reconnects gets its address back, even after another
// endpoint connected in between.
func TestAgentReconnectKeepsAddress(t *testing.T) {
	e := newAgentEnv(t)
	sub, _, _ := agNextSubnet()
	net := "sticky" + agRand()[:4]
	e.network(net, "--subnet", sub)
	c1, c2, c3 := agNetns(t), agNetns(t), agNetns(t)
	e.must("connect", net, c1, "--name", "centos-1")
	e.must("connect", net, c2)
	was := e.endpoint(net, "centos-1").IPv4.String()
	e.must("disconnect", net, c1)
	e.must("connect", net, c3) // a newcomer must not take centos-1's address
	if got := e.endpoint(net, c3).IPv4.String(); got == was {
		t.Fatalf("newcomer took the departed endpoint's address %s", was)
	}
	// centos-1 "restarts" in a new namespace under the same name.
	c1b := agNetns(t)
	e.must("connect", net, c1b, "--name", "centos-1")
	if got := e.endpoint(net, "centos-1").IPv4.String(); got != was {
		t.Fatalf("reconnected centos-1 got %s, had %s", got, was)
	}
	if err := agPing(c2, was); err != nil {
		t.Fatalf("peer cannot reach the restarted endpoint at its old address: %v", err)
	}
}

// netalias run: the command sees the resolver file and the network, its
// exit status comes back, and the namespace is gone afterwards.
func TestAgentRunExitStatusAndCleanup(t *testing.T) {
	e := newAgentEnv(t)
	sub, _, _ := agNextSubnet()
	net := "runnet" + agRand()[:4]
	e.network(net, "--subnet", sub)
	peer := agNetns(t)
	e.must("connect", net, peer, "--name", "centos-1")
	peerIP := e.endpoint(net, "centos-1").IPv4.String()
	name := "nat-" + agRand()
	r := e.run("run", "--name", name, "--network", net, "--alias", "c2", "--",
		"sh", "-c", "cat /etc/resolv.conf; ping -c1 -W1 "+peerIP+" >/dev/null && echo PINGED; exit 7")
	if r.code != 7 {
		t.Fatalf("exit %d, want 7 (stderr %q)", r.code, r.stderr)
	}
	gw := e.file(net).Network.Gateway.String()
	if !strings.Contains(r.stdout, "nameserver "+gw) || !strings.Contains(r.stdout, "search "+net) || !strings.Contains(r.stdout, "PINGED") {
		t.Errorf("command output %q: want our resolver file and a reply from %s", r.stdout, peerIP)
	}
	if _, err := os.Stat("/run/netns/" + name); !os.IsNotExist(err) {
		t.Errorf("namespace %s left behind", name)
	}
	if _, err := os.Stat("/etc/netns/" + name); !os.IsNotExist(err) {
		t.Errorf("/etc/netns/%s left behind", name)
	}
	if len(e.file(net).Endpoints) != 1 {
		t.Errorf("run endpoint still in state: %+v", e.file(net).Endpoints)
	}
}

// SIGTERM and SIGINT to netalias run reach the command; cleanup follows.
func TestAgentRunSignals(t *testing.T) {
	e := newAgentEnv(t)
	sub, _, _ := agNextSubnet()
	net := "sig" + agRand()[:4]
	e.network(net, "--subnet", sub)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		name := "nat-" + agRand()
		cmd := exec.Command(e.bin, "--state-dir", e.dir, "run", "--name", name, "--network", net, "--", "sleep", "60")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		agEventually(t, 10*time.Second, "run to connect", func() bool { return len(e.file(net).Endpoints) == 1 })
		time.Sleep(100 * time.Millisecond) // let the command start
		cmd.Process.Signal(sig)
		err := cmd.Wait()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 128+int(sig) {
			t.Errorf("%v: wait = %v, want exit %d (%s)", sig, err, 128+int(sig), stderr.String())
		}
		if _, err := os.Stat("/run/netns/" + name); !os.IsNotExist(err) {
			t.Errorf("%v: namespace left behind", sig)
		}
		if n := len(e.file(net).Endpoints); n != 0 {
			t.Errorf("%v: %d endpoints left", sig, n)
		}
	}
}

// kill -9 of netalias run: the next command reclaims the endpoint, the
// namespace and the veth.
func TestAgentRunKill9Reclaimed(t *testing.T) {
	e := newAgentEnv(t)
	sub, _, _ := agNextSubnet()
	net := "kill" + agRand()[:4]
	e.network(net, "--subnet", sub)
	name := "nat-" + agRand()
	cmd := exec.Command(e.bin, "--state-dir", e.dir, "run", "--name", name, "--network", net, "--", "sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	agEventually(t, 10*time.Second, "run to connect", func() bool { return len(e.file(net).Endpoints) == 1 })
	veth := e.file(net).Endpoints[0].HostVeth
	cmd.Process.Kill()
	cmd.Wait()
	// The next command (any) reclaims.
	e.must("network", "ls")
	if n := len(e.file(net).Endpoints); n != 0 {
		t.Fatalf("endpoint of the killed run still in state")
	}
	if _, err := os.Stat("/run/netns/" + name); !os.IsNotExist(err) {
		t.Errorf("namespace %s not reclaimed", name)
	}
	agEventually(t, 5*time.Second, "veth "+veth+" to go", func() bool { return !agHasLink(t, veth) })
	out, _ := exec.Command("pgrep", "-f", "sleep 60").Output()
	for _, pid := range strings.Fields(string(out)) {
		if b, _ := os.ReadFile("/proc/" + pid + "/environ"); bytes.Contains(b, []byte("NETALIAS_ADDRESS_POOLS="+e.pool+"\x00")) {
			t.Errorf("command of the killed run still alive (pid %s)", pid)
		}
	}
}

// A namespace destroyed behind our back (its veth vanishes) is dropped
// from the state, with its lease kept, on the next command.
func TestAgentVanishedNamespaceReconciled(t *testing.T) {
	e := newAgentEnv(t)
	sub, _, _ := agNextSubnet()
	net := "gone" + agRand()[:4]
	e.network(net, "--subnet", sub)
	c := agNetns(t)
	e.must("connect", net, c)
	ep := e.endpoint(net, c)
	exec.Command("ip", "netns", "del", c).Run()
	agEventually(t, 5*time.Second, "kernel to delete the veth", func() bool { return !agHasLink(t, ep.HostVeth) })
	e.must("network", "ls")
	f := e.file(net)
	if len(f.Endpoints) != 0 {
		t.Fatalf("endpoint of the destroyed namespace still in state")
	}
	if f.Leases[c].IPv4.String() != ep.IPv4.String() {
		t.Errorf("lease forgotten: %+v", f.Leases)
	}
}

// A container given as a PID (or its /proc/PID/ns/net path) works like a
// named namespace.
func TestAgentConnectByPID(t *testing.T) {
	e := newAgentEnv(t)
	testenv.RequireCommand(t, "unshare")
	sub, _, _ := agNextSubnet()
	net := "pid" + agRand()[:4]
	e.network(net, "--subnet", sub)
	proc := exec.Command("unshare", "--net", "sleep", "60")
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proc.Process.Kill(); proc.Wait() })
	pid := strconv.Itoa(proc.Process.Pid)
	// unshare execs sleep once the namespace exists.
	agEventually(t, 5*time.Second, "unshare to enter its namespace", func() bool {
		a, _ := os.Readlink("/proc/" + pid + "/ns/net")
		b, _ := os.Readlink("/proc/self/ns/net")
		return a != "" && a != b
	})
	e.must("connect", net, pid)
	ep := e.endpoint(net, "pid-"+pid)
	if r := e.run("connect", net, "/proc/"+pid+"/ns/net", "--name", "again"); r.code == 0 || !strings.Contains(r.stderr, "already connected") {
		t.Errorf("second connect by path: exit %d %q", r.code, r.stderr)
	}
	peer := agNetns(t)
	e.must("connect", net, peer)
	if err := agPing(peer, ep.IPv4.String()); err != nil {
		t.Fatalf("peer cannot reach the PID's namespace: %v", err)
	}
	e.must("disconnect", net, pid)
	if err := agPing(peer, ep.IPv4.String()); err == nil {
		t.Error("still reachable after disconnect")
	}
}
