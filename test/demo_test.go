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

// demoHostObjects lists what a run could leave behind: namespaces, bridges,
// nft tables, /etc/netns entries.
func demoHostObjects(t *testing.T) string {
	t.Helper()
	var out bytes.Buffer
	for _, args := range [][]string{
		{"ip", "netns", "list"},
		{"ip", "-o", "link", "show", "type", "bridge"},
		{"ip", "-o", "link", "show", "type", "veth"},
		{"nft", "list", "tables"},
		{"ls", "/etc/netns"},
	} {
		b, _ := exec.Command(args[0], args[1:]...).Output()
		// Link lines carry counters and states that change; keep names only.
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 1 && strings.HasSuffix(f[0], ":") {
				line = f[1]
			}
			out.WriteString(line + "\n")
		}
	}
	return out.String()
}

func demoCommand(t *testing.T, network string) *exec.Cmd {
	bin := filepath.Dir(binary(t, "netalias"))
	binary(t, "coredns")
	cmd := exec.Command("./demo.sh", bin)
	// Names of our own, so the test cannot meet a user's centos-1.
	cmd.Env = append(cmd.Environ(), "DEMO_OFFLINE=1", "DEMO_NETWORK="+network, "DEMO_C1="+network+"-c1", "DEMO_C2="+network+"-c2")
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
	if after := demoHostObjects(t); after != before {
		t.Errorf("demo left objects behind:\nbefore:\n%s\nafter:\n%s", before, after)
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
	if after := demoHostObjects(t); after != before {
		t.Errorf("interrupted demo left objects behind:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}
