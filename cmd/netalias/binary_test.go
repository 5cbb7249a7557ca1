package main

import (
	"bytes"
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

// binary builds this command once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "netalias-cli-test"); buildErr != nil {
			return
		}
		bin = filepath.Join(binDir, "netalias")
		if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v: %s", err, out)
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
