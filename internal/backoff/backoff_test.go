package backoff

import (
	"context"
	"testing"
	"time"
)

func TestNextGrowsToMaxAndResets(t *testing.T) {
	b := Backoff{Min: 100 * time.Millisecond, Max: 400 * time.Millisecond}
	for i, want := range []time.Duration{100, 200, 400, 400} {
		want *= time.Millisecond
		if d := b.Next(); d < want*8/10 || d > want*12/10 {
			t.Fatalf("attempt %d: delay %v, want %v ±20%%", i, d, want)
		}
	}
	b.Reset()
	if d := b.Next(); d > 120*time.Millisecond {
		t.Fatalf("after Reset: delay %v, want about Min", d)
	}
}

func TestZeroValueUsesDefaults(t *testing.T) {
	var b Backoff
	if d := b.Next(); d < DefaultMin*8/10 || d > DefaultMin*12/10 {
		t.Fatalf("first delay %v, want about %v", d, DefaultMin)
	}
}

func TestWaitStopsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b := Backoff{Min: time.Hour, Max: time.Hour}
	if b.Wait(ctx) {
		t.Fatal("Wait reported a live context after cancel")
	}
}
