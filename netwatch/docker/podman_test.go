package docker

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/netalias/netalias/netwatch"
)

func TestPodmanLineID(t *testing.T) {
	for line, want := range map[string]string{
		`{"ID":"abc","Name":"c1","Status":"start","Type":"container"}`:               "abc",
		`{"ID":"abc","Name":"c1","Status":"died","Type":"container"}`:                "abc",
		`{"ID":"abc","Name":"c1","network":"n","Status":"connect","Type":"network"}`: "abc",
		`{"ID":"abc","Name":"c1","Status":"exec","Type":"container"}`:                "",
		// Podman 4.3 logs the status before the check ran: only a nudge.
		`{"ID":"abc","Name":"c1","Status":"health_status","Type":"container","health_status":"starting"}`: "abc",
		`{"ID":"img","Name":"localhost/bb:latest","Status":"remove","Type":"image"}`:                      "",
		`not json`: "",
	} {
		if got := podmanLineID([]byte(line)); got != want {
			t.Errorf("podmanLineID(%s) = %q, want %q", line, got, want)
		}
	}
}

// New lines (whole ones only, whatever the write boundaries) nudge their
// container; what was in the file before does not; a truncated file is
// followed from its start.
func TestFollowPodmanLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.log")
	if err := os.WriteFile(path, []byte(`{"ID":"old","Status":"start","Type":"container"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := followPodmanLog(ctx, path, netwatch.Printf(t.Logf))
	if ch == nil {
		t.Fatal("no channel for an existing file")
	}
	appendTo := func(s string) {
		f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(s)
		f.Close()
	}
	next := func() string {
		select {
		case id := <-ch:
			return id
		case <-time.After(5 * time.Second):
			return "<timeout>"
		}
	}
	appendTo(`{"ID":"a1","Status":"start","Type":"con`)
	appendTo(`tainer"}` + "\n" + `{"ID":"x","Status":"exec","Type":"container"}` + "\n")
	if got := next(); got != "a1" {
		t.Fatalf("first nudge %q, want a1 (not the line already there)", got)
	}
	appendTo(`{"ID":"b2","Status":"remove","Type":"container"}` + "\n")
	if got := next(); got != "b2" {
		t.Fatalf("second nudge %q, want b2", got)
	}
	if err := os.WriteFile(path, []byte(`{"ID":"c3","Status":"start","Type":"container"}`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := next(); got != "c3" {
		t.Fatalf("after truncation %q, want c3", got)
	}
	if followPodmanLog(ctx, filepath.Join(t.TempDir(), "absent.log"), netwatch.Printf(t.Logf)) != nil {
		t.Error("a channel for an absent file")
	}
	cancel()
	for range ch { // closes once ctx ends
	}
}
