package resolvconf

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteRemove(t *testing.T) {
	EtcNetns = t.TempDir()
	if err := Write("c1", "10.201.1.1", []string{"testnet", "backend"}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(Path("c1"))
	if err != nil {
		t.Fatal(err)
	}
	want := marker + "nameserver 10.201.1.1\nsearch testnet backend\n"
	if string(b) != want {
		t.Fatalf("got %q, want %q", b, want)
	}
	if err := Remove("c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(Path("c1"))); !os.IsNotExist(err) {
		t.Fatalf("directory left behind: %v", err)
	}
}

func TestRemoveLeavesForeignFile(t *testing.T) {
	EtcNetns = t.TempDir()
	os.MkdirAll(filepath.Dir(Path("c2")), 0o755)
	os.WriteFile(Path("c2"), []byte("nameserver 1.1.1.1\n"), 0o644)
	if err := Remove("c2"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(Path("c2")); err != nil {
		t.Fatalf("foreign resolv.conf removed: %v", err)
	}
}
