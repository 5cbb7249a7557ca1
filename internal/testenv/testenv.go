// Package testenv decides whether tests that need root or a container
// engine run, skip, or fail. On a developer's machine they skip with a
// reason; in CI (.ci/run sets NETALIAS_REQUIRE_ROOT=1 and, where an engine
// runs, NETALIAS_REQUIRE_DOCKER=1) a skip becomes a failure.
package testenv

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RequireRoot skips t unless the process has power over the host's
// network (root in the initial user namespace, with CAP_NET_ADMIN); fails
// instead when NETALIAS_REQUIRE_ROOT=1. uid 0 inside a user namespace
// (`unshare -U -r`) is not enough: it cannot touch the host's links or
// nftables.
func RequireRoot(t testing.TB) {
	t.Helper()
	why := "test needs root (network namespaces, bridges, nftables)"
	if os.Geteuid() == 0 {
		ok, reason := hostNetAdmin()
		if ok {
			return
		}
		why += ", but " + reason
	}
	if os.Getenv("NETALIAS_REQUIRE_ROOT") == "1" {
		t.Fatal(why + " and NETALIAS_REQUIRE_ROOT=1 forbids skipping")
	}
	t.Skip(why + "; run as root or set NETALIAS_REQUIRE_ROOT=1 to make this a failure")
}

// initUserNS is the initial user namespace's link (PROC_USER_INIT_INO).
const initUserNS = "user:[4026531837]"

// hostNetAdmin reports whether this process is in the same user namespace
// as PID 1 (else the initial one) and holds CAP_NET_ADMIN there.
func hostNetAdmin() (bool, string) {
	self, err := os.Readlink("/proc/self/ns/user")
	if err != nil {
		return false, "its user namespace cannot be read: " + err.Error()
	}
	want := initUserNS
	if init, err := os.Readlink("/proc/1/ns/user"); err == nil {
		want = init
	}
	if self != want {
		return false, "uid 0 only inside a user namespace (" + self + ", not " + want + ")"
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false, "/proc/self/status: " + err.Error()
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return false, "cannot parse CapEff: " + err.Error()
			}
			const capNetAdmin = 12
			if caps&(1<<capNetAdmin) == 0 {
				return false, "without CAP_NET_ADMIN"
			}
			return true, ""
		}
	}
	return false, "no CapEff in /proc/self/status"
}

// RequireDocker skips t unless a Docker Engine answers `docker info`;
// fails instead when NETALIAS_REQUIRE_DOCKER=1.
func RequireDocker(t testing.TB) {
	t.Helper()
	RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := exec.CommandContext(ctx, "docker", "info").Run(); err == nil {
		return
	} else if os.Getenv("NETALIAS_REQUIRE_DOCKER") == "1" {
		t.Fatalf("test needs a Docker Engine (`docker info` failed: %v) and NETALIAS_REQUIRE_DOCKER=1 forbids skipping", err)
	}
	t.Skip("test needs a Docker Engine; `docker info` failed")
}

// RequireCommand skips t unless name is on PATH; under
// NETALIAS_REQUIRE_ROOT=1 (CI, where .ci/run installs everything) it fails.
func RequireCommand(t testing.TB, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err == nil {
		return
	}
	if os.Getenv("NETALIAS_REQUIRE_ROOT") == "1" {
		t.Fatalf("test needs %q on PATH; .ci/run should have installed it", name)
	}
	t.Skipf("test needs %q on PATH", name)
}
