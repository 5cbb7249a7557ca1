package nlsafe

import (
	"errors"
	"testing"

	"github.com/vishvananda/netlink"
)

func TestRetryRepeatsInterruptedDumps(t *testing.T) {
	calls := 0
	v, err := Retry(func() ([]int, error) {
		calls++
		if calls < 3 {
			return []int{1}, netlink.ErrDumpInterrupted
		}
		return []int{1, 2}, nil
	})
	if err != nil || len(v) != 2 || calls != 3 {
		t.Fatalf("got %v, %v after %d calls; want the full dump after 3", v, err, calls)
	}
}

func TestRetryGivesUpWithoutPartialData(t *testing.T) {
	calls := 0
	v, err := Retry(func() ([]int, error) {
		calls++
		return []int{1}, netlink.ErrDumpInterrupted
	})
	if !errors.Is(err, netlink.ErrDumpInterrupted) || v != nil || calls != Attempts {
		t.Fatalf("got %v, %v after %d calls; want nil data and the interruption after %d", v, err, calls, Attempts)
	}
}

func TestRetryPassesOtherErrorsAtOnce(t *testing.T) {
	boom := errors.New("boom")
	calls := 0
	_, err := Retry(func() (int, error) { calls++; return 0, boom })
	if err != boom || calls != 1 {
		t.Fatalf("got %v after %d calls; want boom after 1", err, calls)
	}
}
