package test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"

	"github.com/netalias/netalias/state"
)

// The three-host topology of cluster_helpers_test.go with the real parts
// on each host: `netalias agent --etcd … --host hN --vtep …` and a coredns
// with the netalias `cluster` option, both inside the host's namespace,
// each host with its own state directory. Containers are namespaces
// "nacl-<host>-<name>-RND" attached with `netalias connect` run inside
// the host namespace (the veth is made there and its peer moved into the
// container). Cluster networks use 10.212.32.0/19.

const clLeaseTTL = 2 * time.Second

// clAgent is a host's agent side: state directory, agent and DNS server.
type clAgent struct {
	h        *clHost
	c        *clTopo
	dir      string
	agent    *exec.Cmd
	coredns  *exec.Cmd
	agentLog string
	dnsLog   string
	exited   map[*exec.Cmd]chan struct{}
}

// env is the cluster environment of h's netalias commands. Each host
// talks to its own etcd member (as a control plane stacked on its hosts
// does): a client spreading requests over every member would keep some on
// a partitioned one, and lose its lease there.
func (a *clAgent) env() []string {
	return append(os.Environ(),
		"NETALIAS_ETCD="+a.h.clientURL(), "NETALIAS_HOST="+a.h.name, "NETALIAS_VTEP="+a.h.ip,
		"NETALIAS_STATE_DIR="+a.dir)
}

// startAgents starts an agent and a coredns on every host.
func (c *clTopo) startAgents() []*clAgent {
	c.t.Helper()
	var out []*clAgent
	for _, h := range c.hosts {
		a := &clAgent{h: h, c: c, dir: filepath.Join(c.t.TempDir(), "state"), exited: map[*exec.Cmd]chan struct{}{}}
		a.agentLog = filepath.Join(h.dataDir, "agent.log")
		a.dnsLog = filepath.Join(h.dataDir, "coredns.log")
		a.agent = a.spawn(a.agentLog, binary(c.t, "netalias"), "agent", "--interval", "1s", "--lease-ttl", clLeaseTTL.String())
		corefile := filepath.Join(h.dataDir, "Corefile")
		cf := fmt.Sprintf(`.:53 {
    errors
    netalias {
        state %s
        ttl 5
        clients 127.0.0.0/8 10.212.0.0/16
        cluster %s {
            host %s
        }
    }
}
`, a.dir, h.clientURL(), h.name)
		if err := os.WriteFile(corefile, []byte(cf), 0o644); err != nil {
			c.t.Fatal(err)
		}
		a.coredns = a.spawn(a.dnsLog, binary(c.t, "coredns"), "-conf", corefile)
		out = append(out, a)
		c.t.Cleanup(func() {
			a.stop()
			if c.t.Failed() {
				for _, l := range []string{a.agentLog, a.dnsLog, filepath.Join(h.dataDir, "..", h.name+"-etcd.log")} {
					b, _ := os.ReadFile(l)
					c.t.Logf("%s %s:\n%s", h.name, filepath.Base(l), b)
				}
			}
		})
	}
	for _, a := range out {
		deadline := time.Now().Add(20 * time.Second)
		for {
			if _, err := a.query("probe.invalid.", dns.TypeA); err == nil {
				break
			}
			if time.Now().After(deadline) {
				b, _ := os.ReadFile(a.dnsLog)
				c.t.Fatalf("coredns on %s not answering after 20s:\n%s", a.h.name, b)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return out
}

// spawn starts a process in h's namespace, in its own process group.
func (a *clAgent) spawn(logPath, bin string, args ...string) *exec.Cmd {
	a.c.t.Helper()
	lf, err := os.Create(logPath)
	if err != nil {
		a.c.t.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", a.h.ns, bin}, args...)...)
	cmd.Env = a.env()
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		a.c.t.Fatalf("start %s on %s: %v", filepath.Base(bin), a.h.name, err)
	}
	done := make(chan struct{})
	a.exited[cmd] = done
	go func() { cmd.Wait(); lf.Close(); close(done) }()
	return cmd
}

// stop SIGKILLs the agent and the DNS server (a host dying) and waits.
func (a *clAgent) stop() {
	for _, cmd := range []*exec.Cmd{a.agent, a.coredns} {
		if cmd == nil || cmd.Process == nil {
			continue
		}
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-a.exited[cmd]:
		case <-time.After(10 * time.Second):
			a.c.t.Errorf("%s: pid %d did not exit after SIGKILL", a.h.name, cmd.Process.Pid)
		}
	}
	a.agent, a.coredns = nil, nil
}

// na runs netalias in h's namespace and returns its stdout.
func (a *clAgent) na(args ...string) (string, error) {
	cmd := exec.Command("ip", append([]string{"netns", "exec", a.h.ns, binary(a.c.t, "netalias")}, args...)...)
	cmd.Env = a.env()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s: netalias %s: %v: %s", a.h.name, strings.Join(args, " "), err, errb.String())
	}
	return out.String(), nil
}

func (a *clAgent) mustNA(args ...string) string {
	a.c.t.Helper()
	out, err := a.na(args...)
	if err != nil {
		a.c.t.Fatal(err)
	}
	return out
}

// container makes namespace nacl-<host>-<name>-RND (deleted at cleanup
// with its resolver directory) and returns its name.
func (a *clAgent) container(name string) string {
	a.c.t.Helper()
	ns := fmt.Sprintf("nacl-%s-%s-%s", a.h.name, name, a.c.rnd)
	clRun(a.c.t, "ip", "netns", "add", ns)
	clRun(a.c.t, "ip", "-n", ns, "link", "set", "lo", "up")
	a.c.containers = append(a.c.containers, ns)
	return ns
}

// query asks h's DNS server over the underlay.
func (a *clAgent) query(name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	cl := &dns.Client{Timeout: 500 * time.Millisecond}
	r, _, err := cl.Exchange(m, net.JoinHostPort(a.h.ip, "53"))
	return r, err
}

// lookup returns the A records of name on h ("" on NXDOMAIN; error on
// anything else).
func (a *clAgent) lookup(name string) ([]string, int, error) {
	r, err := a.query(name, dns.TypeA)
	if err != nil {
		return nil, -1, err
	}
	var out []string
	for _, rr := range r.Answer {
		if aa, ok := rr.(*dns.A); ok {
			out = append(out, aa.A.String())
		}
	}
	return out, r.Rcode, nil
}

// answers reports whether h answers name with ip.
func (a *clAgent) answers(name, ip string) bool {
	got, _, err := a.lookup(name)
	if err != nil {
		return false
	}
	for _, g := range got {
		if g == ip {
			return true
		}
	}
	return false
}

// nsExec runs a command in namespace ns and returns its combined output.
func nsExec(ns string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	return string(out), err
}

// clWait polls cond every 5 ms for up to d; it returns how long it took
// and whether it held.
func clWait(d time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for {
		if cond() {
			return time.Since(start), true
		}
		if time.Since(start) > d {
			return time.Since(start), false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// endpointIP is the IPv4 address of the endpoint connected as name on
// network net of a's host (from `network inspect`).
func (a *clAgent) endpointIP(net, name string) string {
	a.c.t.Helper()
	f, err := state.Read(state.NetworkPath(a.dir, net))
	if err != nil {
		a.c.t.Fatal(err)
	}
	for _, ep := range f.Endpoints {
		if ep.Name == name {
			return ep.IPv4.String()
		}
	}
	a.c.t.Fatalf("%s: no endpoint %s on network %s", a.h.name, name, net)
	return ""
}

// file is a's state file of network net.
func (a *clAgent) file(net string) *state.File {
	a.c.t.Helper()
	f, err := state.Read(state.NetworkPath(a.dir, net))
	if err != nil {
		a.c.t.Fatal(err)
	}
	return f
}

// fdbDsts lists the VXLAN forwarding entries' destinations on a's host.
func (a *clAgent) fdbDsts() string {
	out, _ := exec.Command("ip", "netns", "exec", a.h.ns, "bridge", "fdb", "show").CombinedOutput()
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, " dev nvx") && strings.Contains(l, " dst ") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// healTrace samples, every 100 ms from a partition's heal, what decides
// whether traffic flows: each host's VXLAN forwarding entries and
// neighbours, a ping by address and a lookup of the name from the
// container, each with how long it took. It is reported only when a heal
// is slow, which so far has shown only in full CI runs.
type healTrace struct {
	done chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	log  strings.Builder
}

func startHealTrace(from time.Time, as []*clAgent, ns, ip string) *healTrace {
	tr := &healTrace{done: make(chan struct{})}
	note := func(format string, args ...any) {
		tr.mu.Lock()
		defer tr.mu.Unlock()
		fmt.Fprintf(&tr.log, "%7.3fs ", time.Since(from).Seconds())
		fmt.Fprintf(&tr.log, format, args...)
		tr.log.WriteString("\n")
	}
	timed := func(what string, args ...string) {
		start := time.Now()
		out, err := nsExec(ns, args...)
		note("%s took %v err=%v: %s", what, time.Since(start).Round(time.Millisecond), err, strings.TrimSpace(out))
	}
	loop := func(f func()) {
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			for {
				f()
				select {
				case <-tr.done:
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
		}()
	}
	loop(func() {
		for _, a := range as {
			fdb := a.fdbDsts()
			neigh, _ := exec.Command("ip", "netns", "exec", a.h.ns, "ip", "neigh", "show").CombinedOutput()
			links, _ := exec.Command("ip", "netns", "exec", a.h.ns, "sh", "-c", "ip -br link show type bridge; ip -br -d link show type vxlan").CombinedOutput()
			note("%s fdb:\n%s\n%s neigh:\n%s\n%s bridges and VXLAN devices:\n%s", a.h.name, fdb, a.h.name, strings.TrimSpace(string(neigh)), a.h.name, strings.TrimSpace(string(links)))
		}
		cn, _ := nsExec(ns, "ip", "neigh", "show")
		note("container neigh:\n%s", strings.TrimSpace(cn))
	})
	loop(func() { timed("ping -n "+ip, "ping", "-n", "-c1", "-W1", ip) })
	loop(func() { timed("getent centos-1.testnet", "getent", "ahostsv4", "centos-1.testnet") })
	loop(func() { timed("ping centos-1.testnet", "ping", "-c1", "-W1", "centos-1.testnet") })
	return tr
}

func (tr *healTrace) stop() string {
	close(tr.done)
	tr.wg.Wait()
	return tr.log.String()
}
