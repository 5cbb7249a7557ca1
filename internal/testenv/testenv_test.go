package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Under `unshare -U -r` the process is uid 0 but has no power over the
// host's network: hostNetAdmin must say so (the child run prints its
// verdict).
func TestHostNetAdminInUserNamespace(t *testing.T) {
	if os.Getenv("TESTENV_CHILD") == "1" {
		ok, reason := hostNetAdmin()
		if ok {
			os.Stdout.WriteString("VERDICT ok\n")
		} else {
			os.Stdout.WriteString("VERDICT no: " + reason + "\n")
		}
		return
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Skip("needs unshare(1)")
	}
	cmd := exec.Command(unshare, "-U", "-r", os.Args[0], "-test.run=^TestHostNetAdminInUserNamespace$")
	cmd.Env = append(os.Environ(), "TESTENV_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Skipf("unshare -U -r not permitted here: %v: %s", err, out)
	}
	if !strings.Contains(string(out), "VERDICT no: uid 0 only inside a user namespace") {
		t.Errorf("inside unshare -U -r: %s", out)
	}
}

// Outside any user namespace of our own, root has the power.
func TestHostNetAdminAsRoot(t *testing.T) {
	self, _ := os.Readlink("/proc/self/ns/user")
	if os.Geteuid() != 0 || self != initUserNS {
		t.Skip("not root in the initial user namespace")
	}
	if ok, reason := hostNetAdmin(); !ok {
		t.Errorf("root in the initial user namespace: %s", reason)
	}
}
