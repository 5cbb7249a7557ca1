package test

import (
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestCrashSoak replays the hostile experiment of the reliability issue
// (issue 9): 40 connects and 40 disconnects SIGKILLed at a random instant
// of their life (0 to 1.2 times how long an uninterrupted one of the same
// command last took: a fixed 0–30 ms window mostly misses commands that
// finish in 10 ms), then an ordinary connect of all 40 namespaces again, which
// must leave every namespace with exactly one interface on the network,
// its resolver file, distinct addresses, and no temp file in the state
// directory (the oracle, invariantViolations, asserts each of these; and
// `netalias check` must agree). Then the same for network create/rm and
// run. Rounds: 3 (1 with -short); at least 200 kills must land in the
// full run, which stays well under 90 s.
func TestCrashSoak(t *testing.T) {
	e := newAgentEnv(t)
	const N = 40
	rounds := 3
	if testing.Short() {
		rounds = 1
	}
	start := time.Now()
	e.network("soaknet")
	var nss []string
	for range N {
		nss = append(nss, agNetns(t))
	}
	kills := map[string]int{}
	life := map[string]time.Duration{} // last uninterrupted run per command
	attempts := 0
	try := func(max time.Duration, args ...string) {
		attempts++
		cmd := args[0]
		if cmd == "network" {
			cmd += " " + args[1]
		}
		if d, ok := life[cmd]; ok && d*6/5 < max {
			max = d * 6 / 5
		}
		killed, ran := e.killAt(randDelay(max), args...)
		if killed {
			kills[cmd]++
		} else {
			life[cmd] = ran
		}
	}
	found := 0
	verify := func(stage string) {
		t.Helper()
		bad := settle(t, e.dir, nss, 5*time.Second)
		if r := e.run("check"); r.code != 0 {
			bad = append(bad, "netalias check: "+strings.TrimSpace(r.stdout+r.stderr))
		}
		if len(bad) > 0 {
			found += len(bad)
			t.Errorf("%s: %d inconsistencies:\n%s", stage, len(bad), strings.Join(bad, "\n"))
		}
	}
	for round := range rounds {
		for _, ns := range nss {
			try(30*time.Millisecond, "connect", "soaknet", ns)
		}
		for _, ns := range nss {
			try(30*time.Millisecond, "disconnect", "soaknet", ns)
		}
		// One ordinary command per namespace: connect again. A connect
		// that completed before its kill left the namespace connected.
		for _, ns := range nss {
			if r := e.run("connect", "soaknet", ns); r.code != 0 && !strings.Contains(r.stderr, "already connected") {
				t.Fatalf("round %d: connect %s after the kills: %s", round, ns, r.stderr)
			}
		}
		verify(fmt.Sprintf("round %d: the experiment (40 killed connects, 40 killed disconnects, 40 connects)", round))
		for _, ns := range nss {
			e.must("disconnect", "soaknet", ns)
		}
		verify(fmt.Sprintf("round %d: after ordinary disconnects", round))

		// Networks: create and remove killed midway, then ordinary ones.
		for range 20 {
			try(30*time.Millisecond, "network", "create", "soakb")
			try(30*time.Millisecond, "network", "rm", "soakb")
		}
		if r := e.run("network", "rm", "soakb"); r.code != 0 && !strings.Contains(r.stderr, "not found") {
			t.Fatalf("round %d: network rm soakb after the kills: %s", round, r.stderr)
		}
		verify(fmt.Sprintf("round %d: after killed network create/rm", round))
		e.must("network", "create", "soakb")
		e.must("connect", "soakb", nss[0])
		verify(fmt.Sprintf("round %d: after an ordinary network create", round))
		e.must("network", "rm", "--force", "soakb")

		// run, killed while it sets up, runs its command or cleans up.
		var runs []string
		for range 10 {
			name := "nat-" + agRand()
			runs = append(runs, name)
			try(40*time.Millisecond, "run", "--name", name, "--network", "soaknet", "--", "sleep", "0.02")
		}
		e.must("network", "ls")
		verify(fmt.Sprintf("round %d: after killed runs", round))
		for _, name := range runs {
			// Every killed run's namespace is reclaimed (by its endpoints'
			// owner, or by its run record before it had any).
			if _, err := os.Stat("/run/netns/" + name); err == nil {
				found++
				t.Errorf("round %d: killed run's namespace %s left behind", round, name)
				exec.Command("ip", "netns", "del", name).Run()
			}
		}
	}
	total := 0
	var per []string
	for cmd, n := range kills {
		total += n
		per = append(per, fmt.Sprintf("%s %d", cmd, n))
	}
	sort.Strings(per)
	t.Logf("soak: %d kills landed out of %d attempts over %d round(s) in %s (%s); %d inconsistencies",
		total, attempts, rounds, time.Since(start).Round(time.Second), strings.Join(per, ", "), found)
	if want := 200 * rounds / 3; total < want {
		t.Errorf("only %d kills landed; the soak needs at least %d", total, want)
	}
	if d := time.Since(start); d > 90*time.Second {
		t.Errorf("the soak took %s, more than its 90 s budget", d.Round(time.Second))
	}
}
