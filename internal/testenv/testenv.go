// Package testenv decides whether tests that need root or a container
// engine run, skip, or fail. On a developer's machine they skip with a
// reason; in CI (.ci/run sets NETALIAS_REQUIRE_ROOT=1 and, where an engine
// runs, NETALIAS_REQUIRE_DOCKER=1) a skip becomes a failure.
package testenv

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

// RequireRoot skips t unless the process is root; fails instead when
// NETALIAS_REQUIRE_ROOT=1.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("NETALIAS_REQUIRE_ROOT") == "1" {
		t.Fatal("test needs root (network namespaces, bridges, nftables) and NETALIAS_REQUIRE_ROOT=1 forbids skipping")
	}
	t.Skip("test needs root (network namespaces, bridges, nftables); run as root or set NETALIAS_REQUIRE_ROOT=1 to make this a failure")
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
