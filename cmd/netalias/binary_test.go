package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/netalias/netalias/internal/testenv"
)

var (
	buildOnce sync.Once
	binDir    string
	bin       string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binary builds this command once per test run as `make build` does: the
// light build as netalias, the full one beside it as netalias-full.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "netalias-cli-test"); buildErr != nil {
			return
		}
		bin = filepath.Join(binDir, "netalias")
		for _, b := range [][]string{
			{"-tags=netalias_lite", "-o", bin},
			{"-o", filepath.Join(binDir, "netalias-full")},
		} {
			if out, err := exec.Command("go", append(append([]string{"build"}, b...), ".")...).CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v: %s", b, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bin
}

func runBinary(t *testing.T, args ...string) result {
	t.Helper()
	var o, e bytes.Buffer
	c := exec.Command(binary(t), args...)
	c.Stdout, c.Stderr = &o, &e
	err := c.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{o.String(), e.String(), code}
}

// The built binary: help exits 0 (`network create -h` used to exit 2 with
// "flag: help requested"), usage errors exit 2 with one line.
func TestBinaryExitStatus(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		out  string // in stdout, or in stderr when the code is not 0
	}{
		{[]string{"--help"}, 0, "Available Commands:"},
		{[]string{"network", "create", "-h"}, 0, "--subnet CIDR"},
		{[]string{"help", "run"}, 0, "-- CMD..."},
		{[]string{"version"}, 0, "netalias version "},
		{[]string{"frobnicate"}, 2, "netalias: unknown command \"frobnicate\""},
		{[]string{"connect", "a", "b", "--bogus"}, 2, "netalias: connect: flag provided but not defined: --bogus"},
	} {
		r := runBinary(t, tc.args...)
		got := r.stdout
		if tc.code != 0 {
			got = r.stderr
			if strings.Count(got, "\n") != 1 {
				t.Errorf("%q: stderr %q, want one line", tc.args, got)
			}
		}
		if r.code != tc.code || !strings.Contains(got, tc.out) {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want %d and %q", tc.args, r.code, r.stdout, r.stderr, tc.code, tc.out)
		}
	}
}

// The script `netalias completion bash` prints is bash that parses.
func TestBinaryCompletionBashParses(t *testing.T) {
	testenv.RequireCommand(t, "bash")
	r := runBinary(t, "completion", "bash")
	if r.code != 0 {
		t.Fatalf("completion bash: exit %d: %s", r.code, r.stderr)
	}
	script := filepath.Join(t.TempDir(), "netalias.bash")
	if err := os.WriteFile(script, []byte(r.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("bash", "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v: %s", err, out)
	}
	// Sourced, it registers the completion function for netalias.
	out, err := exec.Command("bash", "-c", "source "+script+" && complete -p netalias").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "__start_netalias") {
		t.Errorf("sourcing the script: %v: %s", err, out)
	}
}

// `netalias --state-dir DIR __reap` is what spawnReaper starts (and what
// binaries already running start): it must keep its name, take the global
// flag before it, stay hidden, and with nothing to reap exit 0 silently.
func TestBinaryReap(t *testing.T) {
	dir := t.TempDir()
	r := runBinary(t, "--state-dir", dir, "__reap")
	if r.code != 0 || r.stdout != "" || r.stderr != "" {
		t.Errorf("__reap: exit %d, stdout %q, stderr %q; want 0 and silence", r.code, r.stdout, r.stderr)
	}
	if h := runBinary(t, "--help"); strings.Contains(h.stdout, "__reap") || strings.Contains(h.stdout, "__exec") {
		t.Errorf("help shows the hidden commands")
	}
}

// The light build links neither the etcd nor the Docker client (their
// initialisation doubled every connect's start-up); the full one does.
func TestBinaryLightLinksNoClients(t *testing.T) {
	heavy := []string{"go.etcd.io/etcd/client/v3", "github.com/docker/docker", "google.golang.org/grpc"} // modules
	for _, tc := range []struct {
		name   string
		linked bool
	}{{"netalias", false}, {"netalias-full", true}} {
		out, err := exec.Command("go", "version", "-m", filepath.Join(filepath.Dir(binary(t)), tc.name)).CombinedOutput()
		if err != nil {
			t.Fatalf("go version -m %s: %v: %s", tc.name, err, out)
		}
		for _, mod := range heavy {
			if got := strings.Contains(string(out), "\tdep\t"+mod+"\t"); got != tc.linked {
				t.Errorf("%s links %s: %v, want %v", tc.name, mod, got, tc.linked)
			}
		}
	}
}

// What the light build lacks it hands to netalias-full beside it, with the
// same arguments: docker-plugin (its --help shows the full command's
// flags) and cluster mode (--etcd, or $NETALIAS_ETCD). Without
// netalias-full it says what is missing and changes nothing.
func TestBinaryLightRunsFull(t *testing.T) {
	r := runBinary(t, "docker-plugin", "--help")
	if r.code != 0 || !strings.Contains(r.stdout, "--docker-host") {
		t.Errorf("docker-plugin --help: exit %d, stdout %q, stderr %q; want 0 and the full command's flags", r.code, r.stdout, r.stderr)
	}
	// A bad --vxlan-port is refused by the full build's cluster options
	// before it dials etcd: the message proves which build spoke.
	dir := t.TempDir()
	r = runBinary(t, "--state-dir", dir, "--etcd", "http://127.0.0.1:1", "--vxlan-port", "70000", "network", "ls")
	if r.code != 1 || !strings.Contains(r.stderr, "invalid --vxlan-port 70000") {
		t.Errorf("--etcd through the light build: exit %d, stderr %q; want 1 and the full build's --vxlan-port error", r.code, r.stderr)
	}

	alone := filepath.Join(t.TempDir(), "netalias")
	b, err := os.ReadFile(binary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(alone, b, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--state-dir", dir, "--etcd", "http://127.0.0.1:1", "network", "create", "n1"},
		{"docker-plugin"},
	} {
		c := exec.Command(alone, args...)
		c.Env = append(os.Environ(), "PATH=/nonexistent")
		out, err := c.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "netalias-full") {
			t.Errorf("%q without netalias-full: %v, %q; want exit 1 naming netalias-full", args, err, out)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("the refused commands left %d entries in the state directory", len(entries))
	}
}
