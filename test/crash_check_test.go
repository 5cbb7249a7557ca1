package test

import (
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/netalias/netalias/state"
)

// TestCrashCheckRealKernel damages a real network the way a crash or a
// hand would, one kind at a time: `netalias check` must exit 1 with a
// line naming the object, `check --repair` must fix what reconcile fixes
// and exit 0 (or keep reporting what it cannot fix), and the independent
// oracle must agree.
func TestCrashCheckRealKernel(t *testing.T) {
	e := newAgentEnv(t)
	e.network("ck")
	ns := agNetns(t)
	e.must("connect", "ck", ns)
	if r := e.run("check"); r.code != 0 {
		t.Fatalf("check on a healthy directory: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	abs, _ := filepath.Abs(e.dir)
	sum := sha256.Sum256([]byte(abs))
	liveGroup := 0x6e620000 | uint32(sum[0])<<8 | uint32(sum[1])
	t.Cleanup(func() { exec.Command("ip", "link", "del", "navcafe0000cafe").Run() })
	sh := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	for _, tc := range []struct {
		name     string
		damage   func(ep state.Endpoint, n state.Network)
		want     string
		repaired bool
	}{
		{"temp file", func(state.Endpoint, state.Network) {
			os.WriteFile(filepath.Join(state.NetworksPath(e.dir), ".ck.json.tmp-42"), []byte("{"), 0o644)
		}, ".ck.json.tmp-42: stray temp file", true},
		{"resolver file missing", func(state.Endpoint, state.Network) {
			os.Remove("/etc/netns/" + ns + "/resolv.conf")
		}, "namespace /run/netns/" + ns + ": resolver file /etc/netns/" + ns + "/resolv.conf missing", true},
		{"stray veth of ours", func(state.Endpoint, state.Network) {
			sh("ip", "link", "add", "navcafe0000cafe", "group", fmt.Sprint(liveGroup), "type", "veth", "peer", "name", "navcafe0000peer")
		}, "veth navcafe0000cafe: ours", true},
		{"bridge deleted", func(_ state.Endpoint, n state.Network) {
			sh("ip", "link", "del", n.Bridge)
		}, "network ck: bridge na-", true},
		{"address flushed inside", func(ep state.Endpoint, _ state.Network) {
			sh("ip", "-n", ns, "addr", "flush", "dev", ep.IfName, "scope", "global")
		}, fmt.Sprintf("namespace /run/netns/%s: interface eth0 (endpoint %s on network ck) does not hold", ns, ns), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.t = t
			defer func() { e.t = nil }()
			f := e.file("ck")
			tc.damage(f.Endpoints[0], f.Network)
			r := e.run("check")
			if r.code != 1 || !strings.Contains(r.stdout, tc.want) {
				t.Fatalf("check: exit %d, stdout:\n%s\nwant exit 1 and a line with %q (stderr %s)", r.code, r.stdout, tc.want, r.stderr)
			}
			r = e.run("check", "--repair")
			if tc.repaired {
				if r.code != 0 || !strings.Contains(r.stdout, "repaired: ") {
					t.Fatalf("check --repair: exit %d:\n%s%s", r.code, r.stdout, r.stderr)
				}
				if bad := invariantViolations(t, e.dir, []string{ns}); len(bad) > 0 {
					t.Fatalf("oracle after repair: %q", bad)
				}
				return
			}
			if r.code != 1 || !strings.Contains(r.stdout, tc.want) {
				t.Fatalf("check --repair: exit %d:\n%s\nwant %q still reported", r.code, r.stdout, tc.want)
			}
			// What reconcile cannot fix, a reconnect does.
			e.must("disconnect", "ck", ns)
			e.must("connect", "ck", ns)
			if r := e.run("check"); r.code != 0 {
				t.Fatalf("check after reconnect: exit %d: %s", r.code, r.stdout)
			}
		})
	}
	e.t = t
	if r := e.run("check", "extra"); r.code != 2 {
		t.Errorf("check with an argument: exit %d, want 2 (usage)", r.code)
	}
}
