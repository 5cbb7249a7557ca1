package netns

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestResolveErrors(t *testing.T) {
	f := filepath.Join(t.TempDir(), "plain")
	os.WriteFile(f, nil, 0o644)
	cases := map[string]string{
		"":                   "empty",
		"nat-does-not-exist": "does not exist",
		f:                    "not a namespace file",
		"99999999":           "no process with PID",
	}
	for arg, want := range cases {
		if _, err := Resolve(arg); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Resolve(%q) = %v, want error containing %q", arg, err, want)
		}
	}
}

func TestResolveForms(t *testing.T) {
	r, _ := Resolve("c1")
	if r.Path != "/run/netns/c1" || r.Name != "c1" {
		t.Errorf("name: %+v", r)
	}
	r, _ = Resolve("/run/netns/c2")
	if r.Name != "c2" {
		t.Errorf("path under /run/netns: %+v", r)
	}
}

func TestStartTime(t *testing.T) {
	st := StartTime(os.Getpid())
	if st == 0 || !Alive(os.Getpid(), st) || Alive(os.Getpid(), st+1) {
		t.Errorf("StartTime/Alive inconsistent: %d", st)
	}
}
