package store

import (
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/netalias/netalias/state"
)

func TestLoadCollectsCorruptFilesAndKeepsThem(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	good := &state.File{Network: state.Network{ID: state.NewID(), Name: "good", Subnet: netip.MustParsePrefix("10.201.0.0/24")}}
	if err := s.Write(good); err != nil {
		t.Fatal(err)
	}
	bad := state.NetworkPath(s.Dir, "bad")
	os.WriteFile(bad, []byte("{nope"), 0o644)
	// A file whose content names another network is corrupt too.
	renamed := &state.File{Version: state.Version, Network: state.Network{ID: state.NewID(), Name: "other", Subnet: netip.MustParsePrefix("10.201.1.0/24")}}
	data, _ := state.Encode(renamed)
	os.WriteFile(state.NetworkPath(s.Dir, "liar"), data, 0o644)
	os.WriteFile(state.NetworkPath(s.Dir, ".good.json.tmp-1"), []byte("junk"), 0o644)

	snap, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	if len(snap.Files) != 1 || snap.Files["good"] == nil {
		t.Fatalf("files: %v", snap.Names())
	}
	if len(snap.Corrupt) != 2 {
		t.Fatalf("corrupt: %v", snap.Corrupt)
	}
	var ce *state.CorruptError
	if err := snap.CorruptFor("bad"); !errors.As(err, &ce) || ce.Path != bad {
		t.Errorf("CorruptFor(bad) = %v", err)
	}
	if b, _ := os.ReadFile(bad); string(b) != "{nope" {
		t.Error("corrupt file modified")
	}
}

func TestLockSerializes(t *testing.T) {
	s, _ := Open(t.TempDir())
	l1, err := s.Lock()
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan struct{})
	go func() {
		l2, err := s.Lock()
		if err == nil {
			l2.Unlock()
		}
		close(got)
	}()
	select {
	case <-got:
		t.Fatal("second lock taken while the first is held")
	case <-time.After(100 * time.Millisecond):
	}
	l1.Unlock()
	<-got
}
