package test

import (
	"bufio"
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netalias/netalias/internal/testenv"
)

// demoHostObjects lists the kinds of object a demo run makes: namespaces,
// netalias bridges and veths, netalias nft tables, /etc/netns entries.
func demoHostObjects(t *testing.T) map[string]bool {
	t.Helper()
	objs := map[string]bool{}
	add := func(kind string, args ...string) {
		b, _ := exec.Command(args[0], args[1:]...).Output()
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			switch {
			case len(f) == 0:
				continue
			case kind == "link" && len(f) > 1:
				f[0] = strings.SplitN(f[1], "@", 2)[0] // "3: name@peer: ..."
			case kind == "table" && len(f) == 3:
				f[0] = f[2] // "table inet NAME"
			}
			objs[kind+" "+strings.TrimSuffix(f[0], ":")] = true
		}
	}
	add("netns", "ip", "netns", "list")
	add("link", "ip", "-o", "link", "show")
	add("table", "nft", "list", "tables")
	add("etc-netns", "ls", "/etc/netns")
	return objs
}

// demoLeaks waits up to 5 s (veth deletion is deferred to a reaper) for
// every object that appeared since before to go, and returns what stays.
func demoLeaks(t *testing.T, before map[string]bool) []string {
	t.Helper()
	var leaked []string
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		leaked = leaked[:0]
		for obj := range demoHostObjects(t) {
			if !before[obj] && demoOwned(obj) {
				leaked = append(leaked, obj)
			}
		}
		if len(leaked) == 0 || time.Now().After(deadline) {
			return leaked
		}
	}
}

// demoOwned tells objects the demo can make from those other tests' engines
// (Docker, Podman) make and remove on their own schedule.
func demoOwned(obj string) bool {
	kind, name, _ := strings.Cut(obj, " ")
	switch kind {
	case "netns", "etc-netns":
		return strings.HasPrefix(name, "demo")
	case "link":
		return strings.HasPrefix(name, "na-") || strings.HasPrefix(name, "nav")
	case "table":
		return strings.HasPrefix(name, "netalias")
	}
	return false
}

func demoCommand(t *testing.T, network string) *exec.Cmd {
	bin := filepath.Dir(binary(t, "netalias"))
	binary(t, "coredns")
	cmd := exec.Command("./demo.sh", bin)
	// Names of our own, so the test cannot meet a user's centos-1.
	cmd.Env = append(cmd.Environ(), "DEMO_NETWORK="+network, "DEMO_C1="+network+"-c1", "DEMO_C2="+network+"-c2")
	return cmd
}

// The README's demo: centos-2 pings centos-1 by alias, the host resolves
// centos-1.testnet, and nothing is left behind.
func TestDemo(t *testing.T) {
	testenv.RequireRoot(t)
	for _, c := range []string{"dig", "nft", "jq", "ping"} {
		testenv.RequireCommand(t, c)
	}
	before := demoHostObjects(t)
	out, err := demoCommand(t, "demonet").CombinedOutput()
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out)
	}
	for _, want := range []string{
		"the host resolves demonet-c1.demonet to",
		"demonet-c2 reached demonet-c1 by name",
		"after disconnect, demonet-c1.demonet is gone",
		"(sticky address)",
		"demo complete",
	} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	if leaked := demoLeaks(t, before); len(leaked) > 0 {
		t.Errorf("demo left objects behind: %v", leaked)
	}
}

// Ctrl-C in the middle of the demo still removes everything it made.
func TestDemoInterrupted(t *testing.T) {
	testenv.RequireRoot(t)
	for _, c := range []string{"dig", "nft", "jq", "ping"} {
		testenv.RequireCommand(t, c)
	}
	before := demoHostObjects(t)
	cmd := demoCommand(t, "demoint")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		// Interrupt once the first container is connected: network, DNS
		// server, namespace and veth all exist at that point.
		sc := bufio.NewScanner(stdout)
		var log strings.Builder
		sent := false
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if !sent && strings.Contains(sc.Text(), "has eth0") {
				cmd.Process.Signal(syscall.SIGINT)
				sent = true
			}
		}
		err := cmd.Wait()
		if !sent {
			t.Errorf("demo never reached the interruption point:\n%s", log.String())
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Error("interrupted demo exited 0")
		}
	case <-time.After(3 * time.Minute):
		cmd.Process.Kill()
		t.Fatal("interrupted demo did not exit")
	}
	if leaked := demoLeaks(t, before); len(leaked) > 0 {
		t.Errorf("interrupted demo left objects behind: %v", leaked)
	}
}
