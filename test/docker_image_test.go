package test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/netalias/netalias/internal/testenv"
)

// The offline image must run a shell and carry the tools the scenarios use.
func TestBusyboxImageDocker(t *testing.T) {
	testenv.RequireDocker(t)
	img := busyboxImage(t, "docker")
	out, err := exec.Command("docker", "run", "--rm", "--network", "none", img, "sh", "-c", "echo hi; which ping nslookup sleep cat").CombinedOutput()
	if err != nil {
		t.Fatalf("docker run %s: %v\n%s", img, err, out)
	}
	checkBusyboxOutput(t, out)
}

func TestBusyboxImagePodman(t *testing.T) {
	e := podmanEngine(t)
	img := busyboxImage(t, "podman")
	out, err := e.cmd("run", "--rm", "--network", "none", img, "sh", "-c", "echo hi; which ping nslookup sleep cat").CombinedOutput()
	if err != nil {
		t.Fatalf("podman run %s: %v\n%s", img, err, out)
	}
	checkBusyboxOutput(t, out)
}

func checkBusyboxOutput(t *testing.T, out []byte) {
	t.Helper()
	for _, want := range []string{"hi", "/bin/ping", "/bin/nslookup", "/bin/sleep", "/bin/cat"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
