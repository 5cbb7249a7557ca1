package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/netalias/netalias/state"
)

// Every bad input gets one clear line on stderr naming the problem, a
// non-zero exit, and changes nothing: state files, links, nftables.
func TestAgentBadInput(t *testing.T) {
	e := newAgentEnv(t)
	s1, _, _ := agNextSubnet()
	s2, _, _ := agNextSubnet()
	net := "good" + agRand()[:4]
	e.network(net, "--subnet", s1)
	c1, c2 := agNetns(t), agNetns(t)
	e.must("connect", net, c1, "--name", "web")
	used := e.endpoint(net, "web").IPv4.String()
	// A process inside c1: its PID names the same namespace as c1.
	inside := exec.Command("ip", "netns", "exec", c1, "sleep", "60")
	if err := inside.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inside.Process.Kill(); inside.Wait() })
	insidePID := strconv.Itoa(inside.Process.Pid)
	agEventually(t, 5*time.Second, "ip netns exec to enter "+c1, func() bool {
		a, _ := os.Readlink("/proc/" + insidePID + "/ns/net")
		b, _ := os.Readlink("/proc/self/ns/net")
		return a != "" && a != b
	})
	base := strings.TrimSuffix(s1, ".0/24")

	cases := []struct {
		name string
		args []string
		want string // in the error line
		code int
	}{
		{"network name not a label", []string{"network", "create", "bad_name"}, `invalid network name "bad_name"`, 1},
		{"network name with dot", []string{"network", "create", "a.b"}, `invalid network name "a.b"`, 1},
		{"network exists", []string{"network", "create", net}, "already exists", 1},
		{"overlapping subnet", []string{"network", "create", "--subnet", s1, "other"}, "overlaps network " + `"` + net + `"`, 1},
		{"gateway outside", []string{"network", "create", "--subnet", s2, "--gateway", base + ".1", "other"}, "is not inside subnet", 1},
		{"gateway is broadcast", []string{"network", "create", "--subnet", s2, "--gateway", strings.TrimSuffix(s2, ".0/24") + ".255", "other"}, "broadcast address", 1},
		{"subnet host bits", []string{"network", "create", "--subnet", strings.TrimSuffix(s2, ".0/24") + ".9/24", "other"}, "host bits set", 1},
		{"subnet not CIDR", []string{"network", "create", "--subnet", "banana", "other"}, `invalid --subnet "banana"`, 1},
		{"subnet overlaps host", []string{"network", "create", "--subnet", "127.0.0.0/24", "other"}, "already in use on this host", 1},
		{"unknown network", []string{"connect", "nosuchnet", c2}, `network "nosuchnet" not found`, 1},
		{"unknown namespace", []string{"connect", net, "nat-nosuch"}, `namespace "nat-nosuch"`, 1},
		{"host namespace", []string{"connect", net, strconv.Itoa(os.Getpid())}, "host's own network namespace", 1},
		{"unknown pid", []string{"connect", net, "999999999"}, "no process with PID", 1},
		{"duplicate endpoint name", []string{"connect", net, c2, "--name", "web"}, `endpoint name "web" is already in use`, 1},
		{"namespace already connected", []string{"connect", net, c1}, "already connected", 1},
		{"same namespace by PID", []string{"connect", net, insidePID, "--name", "other"}, "already connected", 1},
		{"address in use", []string{"connect", net, c2, "--ip", used}, "already in use", 1},
		{"address outside subnet", []string{"connect", net, c2, "--ip", "10.201.250.7"}, "is not inside subnet", 1},
		{"address is gateway", []string{"connect", net, c2, "--ip", base + ".1"}, "is the gateway of network", 1},
		{"IPv6 address on an IPv4-only network", []string{"connect", net, c2, "--ip6", "fd00:201::5"}, "has no IPv6 subnet", 1},
		{"events without an agent", []string{"events"}, "no agent listening", 1},
		{"address not an IP", []string{"connect", net, c2, "--ip", "x"}, `invalid --ip "x"`, 1},
		{"endpoint name invalid", []string{"connect", net, c2, "--name", "a_b"}, `invalid endpoint name "a_b"`, 1},
		{"alias invalid", []string{"connect", net, c2, "--alias", "bad alias"}, `invalid alias "bad alias"`, 1},
		{"link invalid", []string{"connect", net, c2, "--link", "a_b:x"}, `invalid link target "a_b"`, 1},
		{"disconnect not connected", []string{"disconnect", net, c2}, "is not connected", 1},
		{"rm unknown", []string{"network", "rm", "nosuchnet"}, `network "nosuchnet" not found`, 1},
		{"rm with endpoints", []string{"network", "rm", net}, "disconnect them first or use --force", 1},
		{"run unknown network", []string{"run", "--name", "nat-x" + agRand()[:4], "--network", "nosuchnet", "--", "true"}, `network "nosuchnet" not found`, 1},
		{"connect missing args", []string{"connect", net}, "want NETWORK NETNS", 2},
		{"unknown flag", []string{"connect", net, c2, "--bogus"}, "flag provided but not defined", 2},
		{"unknown command", []string{"frobnicate"}, "unknown command", 2},
		{"unknown shorthand flag", []string{"network", "rm", "-x", net}, "flag provided but not defined: -x", 2},
		{"rm without names", []string{"network", "rm"}, "want NAME...", 2},
		{"run argument before --", []string{"run", "--network", net, "sh", "--", "true"}, `unexpected "sh" before --`, 2},
		{"help on unknown command", []string{"help", "frobnicate"}, "unknown command", 2},
		{"agent interval not positive", []string{"agent", "--interval", "0s"}, "must be positive", 2},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			digest, links, nft := agDigest(t, e.dir), agOurLinks(t), e.ourNft()
			nsLinks, _ := agExec(c2, "ip", "-br", "link")
			r := e.run(c.args...)
			if r.code != c.code {
				t.Errorf("exit %d, want %d (stderr %q)", r.code, c.code, r.stderr)
			}
			lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "netalias: ") || !strings.Contains(lines[0], c.want) {
				t.Errorf("stderr %q: want one line \"netalias: …%s…\"", r.stderr, c.want)
			}
			if got := agDigest(t, e.dir); !mapsEqual(got, digest) {
				t.Errorf("state changed")
			}
			if got := agOurLinks(t); !slices.Equal(got, links) {
				t.Errorf("links changed: %v -> %v", links, got)
			}
			if got := e.ourNft(); got != nft {
				t.Errorf("nftables changed")
			}
			if got, _ := agExec(c2, "ip", "-br", "link"); got != nsLinks {
				t.Errorf("namespace links changed: %q -> %q", nsLinks, got)
			}
		})
	}
}

// `network rm -f` is `--force`: it disconnects the endpoints, then removes
// the network, its bridge and its state file.
func TestAgentRmForceShorthand(t *testing.T) {
	e := newAgentEnv(t)
	sub, _, _ := agNextSubnet()
	net := "force" + agRand()[:4]
	e.network(net, "--subnet", sub)
	c := agNetns(t)
	e.must("connect", net, c)
	f := e.file(net)
	bridge, veth := f.Network.Bridge, f.Endpoints[0].HostVeth
	if out := e.must("network", "rm", "-f", net); out != net+"\n" {
		t.Errorf("network rm -f: stdout %q, want the name", out)
	}
	if _, err := os.Stat(state.NetworkPath(e.dir, net)); !os.IsNotExist(err) {
		t.Errorf("state file still there: %v", err)
	}
	agEventually(t, 5*time.Second, "bridge and veth deletion", func() bool {
		return !agHasLink(t, bridge) && !agHasLink(t, veth)
	})
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// A corrupt state file is reported with its path, never rewritten, and the
// other networks keep working.
func TestAgentCorruptStateFile(t *testing.T) {
	e := newAgentEnv(t)
	s1, _, _ := agNextSubnet()
	good := "good" + agRand()[:4]
	e.network(good, "--subnet", s1)
	bad := state.NetworkPath(e.dir, "broken")
	garbage := []byte("{\"version\": 1, \"network\": {\"name\": \"broken\", \"subnet\": \"nonsense\"")
	if err := os.WriteFile(bad, garbage, 0o644); err != nil {
		t.Fatal(err)
	}
	r := e.run("network", "ls")
	if r.code != 0 || !strings.Contains(r.stderr, bad) || !strings.Contains(r.stdout, good) {
		t.Errorf("ls: exit %d, stdout %q, stderr %q: want the good network listed and the corrupt file named", r.code, r.stdout, r.stderr)
	}
	c := agNetns(t)
	for _, args := range [][]string{{"connect", "broken", c}, {"network", "rm", "broken"}, {"network", "create", "broken"}, {"network", "inspect", "broken"}} {
		r := e.run(args...)
		if r.code == 0 || !strings.Contains(r.stderr, bad) {
			t.Errorf("%v: exit %d, stderr %q: want an error naming %s", args, r.code, r.stderr, bad)
		}
	}
	e.must("connect", good, c)
	e.must("disconnect", good, c)
	if b, _ := os.ReadFile(bad); string(b) != string(garbage) {
		t.Errorf("corrupt file was rewritten: %q", b)
	}
	if ents, _ := os.ReadDir(filepath.Dir(bad)); len(ents) != 2 {
		t.Errorf("unexpected files in %s: %v", filepath.Dir(bad), ents)
	}
}
