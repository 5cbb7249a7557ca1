package test

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netalias/netalias/internal/testenv"
)

func demoClusterCommand(t *testing.T, prefix string) *exec.Cmd {
	bin := filepath.Dir(binary(t, "netalias"))
	binary(t, "coredns")
	if etcd := etcdBinary(t); filepath.Dir(etcd) != bin {
		t.Fatalf("netalias-etcd built into %s, not beside netalias in %s", etcd, bin)
	}
	cmd := exec.Command("./demo-cluster.sh", bin)
	// Names of our own, so the test cannot meet a user's centos-1.
	cmd.Env = append(cmd.Environ(), "DEMO_PREFIX="+prefix, "DEMO_C1="+prefix+"-c1", "DEMO_C2="+prefix+"-c2")
	return cmd
}

// demoClusterLeaks is demoLeaks plus the demo's VXLAN devices, host
// namespaces (named after prefix) and processes (agents, DNS servers and
// etcd members running from the test's binary directory).
func demoClusterLeaks(t *testing.T, before map[string]bool, prefix string) []string {
	var out []string
	bin := filepath.Dir(binary(t, "netalias"))
	procs, _ := filepath.Glob("/proc/[0-9]*/exe")
	for _, p := range procs {
		exe, err := os.Readlink(p)
		if err != nil || !strings.HasPrefix(exe, bin+"/") {
			continue
		}
		// The demo's long-running processes, not a detached veth reaper.
		cmdline, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "cmdline"))
		if filepath.Base(exe) != "netalias" || strings.Contains(string(cmdline), "\x00agent") {
			pid := strings.Split(p, "/")[2]
			out = append(out, "process "+pid+" "+exe)
			if pid, err := strconv.Atoi(pid); err == nil {
				syscall.Kill(pid, syscall.SIGKILL) // ours: never leave it running
			}
		}
	}
	out = append(out, demoLeaks(t, before)...)
	for obj := range demoHostObjects(t) {
		if !before[obj] && (strings.Contains(obj, prefix) || strings.HasPrefix(obj, "link nvx")) {
			out = append(out, obj)
		}
	}
	return out
}

// The cluster demo: centos-2 on host 1 pings centos-1 on host 2 by name,
// host 1 resolves centos-1.testnet, host 2 dies and the name goes; nothing
// is left behind.
func TestDemoCluster(t *testing.T) {
	testenv.RequireRoot(t)
	for _, c := range []string{"dig", "ping", "bridge"} {
		testenv.RequireCommand(t, c)
	}
	before := demoHostObjects(t)
	out, err := demoClusterCommand(t, "democl").CombinedOutput()
	if err != nil {
		t.Fatalf("demo-cluster failed: %v\n%s", err, out)
	}
	for _, want := range []string{
		"host 1 resolves democl-c1.testnet to",
		"democl-c2 reached democl-c1 by name across hosts",
		"democl-c1.testnet is gone on host 1 after",
		"demo complete",
	} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("demo-cluster output lacks %q:\n%s", want, out)
		}
	}
	if leaked := demoClusterLeaks(t, before, "democl"); len(leaked) > 0 {
		t.Errorf("demo-cluster left objects behind: %v", leaked)
	}
}

// Ctrl-C in the middle of the cluster demo still removes everything.
func TestDemoClusterInterrupted(t *testing.T) {
	testenv.RequireRoot(t)
	for _, c := range []string{"dig", "ping", "bridge"} {
		testenv.RequireCommand(t, c)
	}
	before := demoHostObjects(t)
	cmd := demoClusterCommand(t, "democi")
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
		// Interrupt once both containers are connected: hosts, members,
		// agents, DNS servers, bridges and VXLAN devices all exist.
		sc := bufio.NewScanner(stdout)
		var log strings.Builder
		sent := false
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if !sent && strings.Contains(sc.Text(), "each host allocates") {
				cmd.Process.Signal(syscall.SIGINT)
				sent = true
			}
		}
		err := cmd.Wait()
		if !sent {
			t.Errorf("demo-cluster never reached the interruption point:\n%s", log.String())
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Error("interrupted demo-cluster exited 0")
		}
	case <-time.After(3 * time.Minute):
		cmd.Process.Kill()
		t.Fatal("interrupted demo-cluster did not exit")
	}
	if leaked := demoClusterLeaks(t, before, "democi"); len(leaked) > 0 {
		t.Errorf("interrupted demo-cluster left objects behind: %v", leaked)
	}
}
