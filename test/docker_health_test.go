package test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/miekg/dns"

	"github.com/netalias/netalias/internal/testenv"
	"github.com/netalias/netalias/netwatch"
)

// One coredns serves the three policies side by side, on the same
// addresses: prefer (the default) on port 53, strict and off on these.
const (
	strictPort = "5301"
	offPort    = "5302"
)

// healthArgs are `run` options for a member of alias on net whose health
// the test flips with /ok: checked every second, one failure makes it
// unhealthy.
func healthArgs(net, alias string) []string {
	return []string{"--network", net, "--network-alias", alias,
		"--health-cmd", "test -f /ok", "--health-interval", "1s", "--health-retries", "1", "--health-timeout", "2s"}
}

// startPolicyDNS runs our coredns with one netalias block per policy, each
// following the real Docker Engine, bound to 127.0.3.1 and the extra
// addresses (a network's gateway, for containers); stopped at cleanup.
func startPolicyDNS(t testing.TB, bind ...string) {
	t.Helper()
	addrs := strings.Join(append([]string{dnsHost}, bind...), " ")
	block := func(port, policy, extra string) string {
		return fmt.Sprintf(`.:%s {
    bind %s
    netalias {
        netlink off
        state off
        docker unix:///var/run/docker.sock
        healthcheck %s
    }
%s    errors
}
`, port, addrs, policy, extra)
	}
	corefile := block("53", "prefer", fmt.Sprintf("    ready %s\n    prometheus %s\n", readyAddr, metricsAt)) +
		block(strictPort, "strict", "") + block(offPort, "off", "")
	dir := t.TempDir()
	conf := filepath.Join(dir, "Corefile")
	if err := os.WriteFile(conf, []byte(corefile), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "coredns.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binary(t, "coredns"), "-conf", conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("coredns log:\n%s", b)
		}
		logf.Close()
	})
	deadline := time.Now().Add(15 * time.Second)
	for readyCode() != http.StatusOK {
		select {
		case err := <-done:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("coredns exited: %v\n%s\nCorefile:\n%s", err, b, corefile)
		default:
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("coredns not ready after 15s\n%s", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// answer is what a server said about a name: its rcode, sorted A
// addresses, and whether the SOA came with a negative answer.
type answer struct {
	rcode int
	addrs []netip.Addr
	soa   bool
}

func (a answer) String() string {
	return fmt.Sprintf("%s %v soa=%v", dns.RcodeToString[a.rcode], a.addrs, a.soa)
}

// askHost asks our server on the host, at port, for name's A records.
func askHost(t testing.TB, port, name string) answer {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	c := dns.Client{Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, dnsHost+":"+port)
	if err != nil {
		t.Fatalf("query %s at port %s: %v", name, port, err)
	}
	out := answer{rcode: r.Rcode}
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			ip, _ := netip.AddrFromSlice(a.A)
			out.addrs = append(out.addrs, ip.Unmap())
		}
	}
	for _, rr := range r.Ns {
		if _, ok := rr.(*dns.SOA); ok {
			out.soa = true
		}
	}
	slices.SortFunc(out.addrs, netip.Addr.Compare)
	return out
}

// lookupIn runs busybox nslookup for name (type A) in container ctr
// against server (host:port) and returns the sorted IPv4 addresses of the
// answer (none for NXDOMAIN or NODATA).
func lookupIn(t testing.TB, e engine, ctr, name, server string) []netip.Addr {
	t.Helper()
	out, _ := e.inContainer(t, ctr, "nslookup", "-type=a", name, server)
	// The first paragraph names the server; the answers follow.
	_, body, _ := strings.Cut(out, "\n\n")
	var addrs []netip.Addr
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Address:"); ok {
			if a, err := netip.ParseAddr(strings.TrimSpace(v)); err == nil && a.Is4() {
				addrs = append(addrs, a)
			}
		}
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	return addrs
}

// pollUntil polls got until it equals want or timeout passes.
func pollUntil[T any](t testing.TB, timeout time.Duration, what string, want T, got func() T, eq func(a, b T) bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		last := got()
		if eq(last, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s: got %v, want %v", timeout, what, last, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func sameAddrs(a, b []netip.Addr) bool { return slices.Equal(a, b) }

func sameAnswer(a, b answer) bool {
	return a.rcode == b.rcode && a.soa == b.soa && slices.Equal(a.addrs, b.addrs)
}

// setHealth makes each container's check pass (true) or fail and waits
// until Docker reports the resulting status.
func setHealth(t testing.TB, e engine, want map[string]bool) {
	t.Helper()
	for ctr, ok := range want {
		if ok {
			e.must(t, "exec", ctr, "touch", "/ok")
		} else {
			e.must(t, "exec", ctr, "rm", "-f", "/ok")
		}
	}
	for ctr, ok := range want {
		status := "unhealthy"
		if ok {
			status = "healthy"
		}
		eventually(t, 10*time.Second, ctr+" "+status+" by Docker", func() bool {
			return e.must(t, "inspect", "-f", "{{.State.Health.Status}}", ctr) == status
		})
	}
}

// healthMetric reads coredns_netalias_health_excluded_total for the
// server on port, and coredns_netalias_unready_endpoints.
func healthMetrics(t testing.TB, port string) (excluded float64, unready int) {
	t.Helper()
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + metricsAt + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if m := regexp.MustCompile(`(?m)^coredns_netalias_health_excluded_total\{server="[^"]*:` + port + `"\} (\S+)`).FindSubmatch(b); m != nil {
		excluded, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	m := regexp.MustCompile(`(?m)^coredns_netalias_unready_endpoints (\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no coredns_netalias_unready_endpoints in /metrics")
	}
	f, _ := strconv.ParseFloat(string(m[1]), 64)
	return excluded, int(f)
}

// TestDockerHealthDNS is issue 14 with the real Docker Engine: three
// replicas share an alias with a fourth that stays starting; their health
// flips with /ok; each policy is checked from the host and from another
// container, and `off` against Docker's own embedded DNS.
func TestDockerHealthDNS(t *testing.T) {
	testenv.RequireDocker(t)
	e := engine{bin: "docker"}
	img := busyboxImage(t, "docker")
	net, third := e.networkIn(t, "10.203", nil)
	gw := fmt.Sprintf("10.203.%d.1", third)

	var r [3]string
	var ip [3]netip.Addr
	for i := range r {
		r[i] = natestName("hc")
		e.run(t, r[i], append(healthArgs(net, "web"), img, "sleep", "600")...)
		ip[i] = e.ip(t, r[i], net)
	}
	// A member still in its start period: failing checks keep it starting.
	slow := natestName("hcslow")
	e.run(t, slow, append(healthArgs(net, "web"), "--health-start-period", "600s", img, "sleep", "600")...)
	ipSlow := e.ip(t, slow, net)
	client := natestName("hcclient")
	e.run(t, client, "--network", net, img, "sleep", "600")
	startPolicyDNS(t, gw)

	every := addrs(ip[0], ip[1], ip[2], ipSlow)
	web, all := "web."+net, "_all.web."+net
	onHost := func(port, name string, want answer) {
		t.Helper()
		pollUntil(t, 2*time.Second, fmt.Sprintf("%s at port %s from the host", name, port), want,
			func() answer { return askHost(t, port, name) }, sameAnswer)
	}
	inCtr := func(port, name string, want []netip.Addr) {
		t.Helper()
		pollUntil(t, 2*time.Second, fmt.Sprintf("%s at port %s from a container", name, port), want,
			func() []netip.Addr { return lookupIn(t, e, client, name, gw+":"+port) }, sameAddrs)
	}
	ok := func(a ...netip.Addr) answer { return answer{rcode: dns.RcodeSuccess, addrs: addrs(a...)} }
	nodata := answer{rcode: dns.RcodeSuccess, soa: true}
	// off answers what Docker's embedded DNS answers, bare and qualified.
	matchesDocker := func() {
		t.Helper()
		docker := lookupIn(t, e, client, "web.", "127.0.0.11")
		if !slices.Equal(docker, every) {
			t.Errorf("Docker's DNS answers web with %v, want every member %v", docker, every)
		}
		inCtr(offPort, "web.", docker)
		inCtr(offPort, web+".", docker)
		onHost(offPort, web, ok(docker...))
	}

	// Two healthy, one unhealthy, one starting.
	setHealth(t, e, map[string]bool{r[0]: true, r[1]: true, r[2]: false})
	for _, port := range []string{"53", strictPort} {
		onHost(port, web, ok(ip[0], ip[1]))
		inCtr(port, web+".", addrs(ip[0], ip[1]))
		inCtr(port, "web.", addrs(ip[0], ip[1]))
		onHost(port, all, ok(every...))
		inCtr(port, "_all.web.", every)
	}
	onHost(offPort, web, ok(every...))
	matchesDocker()
	// A member's own name: prefer keeps a lone member, strict leaves it out.
	onHost("53", r[2]+"."+net, ok(ip[2]))
	onHost(strictPort, r[2]+"."+net, nodata)
	onHost(strictPort, slow+"."+net, nodata)
	onHost(strictPort, "_all."+slow+"."+net, ok(ipSlow))
	// PTR is unaffected.
	if got := ptrOf(t, ip[2]); !slices.Contains(got, r[2]+"."+net+".") {
		t.Errorf("PTR of the unhealthy member %v = %v", ip[2], got)
	}
	excluded, unready := healthMetrics(t, strictPort)
	if excluded == 0 || unready != 2 {
		t.Errorf("metrics: excluded %v at the strict server, unready %d; want > 0 and 2", excluded, unready)
	}

	// None ready: prefer falls back to every member, strict answers NODATA
	// (the name exists), off and _all every member.
	setHealth(t, e, map[string]bool{r[0]: false, r[1]: false})
	onHost("53", web, ok(every...))
	inCtr("53", "web.", every)
	onHost(strictPort, web, nodata)
	inCtr(strictPort, web+".", nil)
	inCtr(strictPort, "web.", nil)
	onHost(strictPort, all, ok(every...))
	inCtr(strictPort, "_all.web.", every)
	matchesDocker()
	if _, unready := healthMetrics(t, strictPort); unready != 4 {
		t.Errorf("unready endpoints %d, want 4", unready)
	}

	// One recovers: it alone answers under prefer and strict.
	setHealth(t, e, map[string]bool{r[1]: true})
	onHost("53", web, ok(ip[1]))
	inCtr("53", "web.", addrs(ip[1]))
	onHost(strictPort, web, ok(ip[1]))
	inCtr(strictPort, web+".", addrs(ip[1]))
	matchesDocker()

	// Restarted, a member is starting again (Docker sends no event for
	// that; the start event's inspect says so): running but left out, so
	// NODATA (while it was stopped, its name was NXDOMAIN), then back once
	// its first check passes.
	e.must(t, "restart", "-t", "0", r[1])
	ip[1] = e.ip(t, r[1], net)
	onHost(strictPort, r[1]+"."+net, nodata)
	onHost(strictPort, r[1]+"."+net, ok(ip[1]))
	onHost("53", web, ok(ip[1]))
}

// healthEvents follows Docker's health_status events of container ctr and
// returns a function that waits for the next one reporting status after
// since, and gives the engine's timestamp of it.
func healthEvents(tb testing.TB, ctr string) func(status string, since time.Time) time.Time {
	cli, err := client.NewClientWithOpts(client.WithHost("unix:///var/run/docker.sock"), client.WithAPIVersionNegotiation())
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(func() { cancel(); cli.Close() })
	msgs, errs := cli.Events(ctx, events.ListOptions{Filters: filters.NewArgs(
		filters.Arg("type", "container"), filters.Arg("container", ctr), filters.Arg("event", "health_status"))})
	return func(status string, since time.Time) time.Time {
		for {
			select {
			case m := <-msgs:
				if string(m.Action) == "health_status: "+status && m.TimeNano > since.UnixNano() {
					return time.Unix(0, m.TimeNano)
				}
			case err := <-errs:
				tb.Fatal(err)
			case <-time.After(10 * time.Second):
				tb.Fatalf("no health_status: %s event", status)
			}
		}
	}
}

// BenchmarkDockerHealthToAnswer: from the Docker Engine's health_status
// event (its own timestamp) to the first answer of our coredns that
// reflects it. One member of web flips between healthy and unhealthy, the
// other has no healthcheck; under strict, web answers two addresses or
// one. Each iteration is one flip; run with -benchtime 20x or more.
// Target (issue 14): median under 50 ms.
func BenchmarkDockerHealthToAnswer(b *testing.B) {
	testenv.RequireDocker(b)
	e := engine{bin: "docker"}
	img := busyboxImage(b, "docker")
	net, _ := e.networkIn(b, "10.203", nil)
	flip := natestName("flip")
	e.run(b, flip, append(healthArgs(net, "web"), img, "sleep", "3600")...)
	e.run(b, natestName("steady"), "--network", net, "--network-alias", "web", img, "sleep", "3600")
	startPolicyDNS(b)
	setHealth(b, e, map[string]bool{flip: false})
	next := healthEvents(b, flip)
	name := "web." + net
	strict := dnsHost + ":" + strictPort
	var lat []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		healthy := i%2 == 0
		since := time.Now()
		status, want := "unhealthy", 1
		if healthy {
			status, want = "healthy", 2
			e.must(b, "exec", flip, "touch", "/ok")
		} else {
			e.must(b, "exec", flip, "rm", "/ok")
		}
		t0 := next(status, since)
		d := race(b, t0, func() bool { rc, n := askAt(strict, name); return rc == dns.RcodeSuccess && n == want })
		lat = append(lat, d[0])
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(median(lat), "ms-median")
	b.ReportMetric(float64(lat[len(lat)*9/10].Microseconds())/1000, "ms-p90")
	b.ReportMetric(float64(slices.Max(lat).Microseconds())/1000, "ms-max")
}

// TestPodmanHealth: what Podman 4.3's compat service gives the source.
// Without systemd (these machines) Podman runs no healthcheck on its own
// (its timers are systemd units): checks run here by `podman healthcheck
// run`. Its stream's health_status events name no status, so each is
// followed by an inspect, whose State.Health is right.
func TestPodmanHealth(t *testing.T) {
	p := newPodman(t)
	e := p.eng
	img := busyboxImage(t, "podman")
	net, _ := e.networkIn(t, "10.204", nil)
	c := natestName("phc")
	e.run(t, c, "--network", net, "--health-cmd", "test -f /ok", "--health-interval", "1s", "--health-retries", "1", img, "sleep", "600")
	src, sink := startSource(t, p.endpoint())
	eventually(t, 10*time.Second, "first sync", src.Synced)
	health := func() netwatch.Health {
		ep, _ := sink.endpoint(c, net)
		return ep.Health
	}
	pollUntil(t, 2*time.Second, c+" starting", netwatch.HealthStarting, health, func(a, b netwatch.Health) bool { return a == b })
	for _, step := range []struct {
		cmd  []string
		want netwatch.Health
	}{
		{[]string{"touch", "/ok"}, netwatch.HealthHealthy},
		{[]string{"rm", "/ok"}, netwatch.HealthUnhealthy},
		{[]string{"touch", "/ok"}, netwatch.HealthHealthy},
	} {
		e.must(t, append([]string{"exec", c}, step.cmd...)...)
		e.cmd("healthcheck", "run", c).Run() // exits 1 when the check fails
		pollUntil(t, 2*time.Second, c+" "+step.want.String(), step.want, health, func(a, b netwatch.Health) bool { return a == b })
	}
}
