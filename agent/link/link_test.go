package link

import (
	"crypto/rand"
	"encoding/hex"
	"runtime"
	"testing"

	"github.com/netalias/netalias/agent/netns"
	"github.com/netalias/netalias/internal/testenv"
	"golang.org/x/sys/unix"
)

// LinkNames answers for the network namespace it runs in (what netlink
// sees), not for whatever /sys/class/net the mount namespace shows: from a
// thread inside a fresh namespace it sees only lo.
func TestLinkNamesAsksNetlink(t *testing.T) {
	testenv.RequireRoot(t)
	var b [4]byte
	rand.Read(b[:])
	name := "nat-" + hex.EncodeToString(b[:])
	p, err := netns.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer netns.Delete(name)
	type result struct {
		names map[string]bool
		err   error
	}
	done := make(chan result, 1)
	go func() {
		// Never unlocked: the thread dies with this goroutine.
		runtime.LockOSThread()
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			done <- result{err: err}
			return
		}
		names, err := LinkNames()
		done <- result{names, err}
	}()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if len(r.names) != 1 || !r.names["lo"] {
		t.Errorf("LinkNames inside a fresh namespace = %v, want only lo", r.names)
	}
}

// Handle works on a namespace and leaves the calling thread where it was.
func TestHandleKeepsThreadHome(t *testing.T) {
	testenv.RequireRoot(t)
	var b [4]byte
	rand.Read(b[:])
	name := "nat-" + hex.EncodeToString(b[:])
	p, err := netns.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer netns.Delete(name)
	var before, after unix.Stat_t
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Stat("/proc/thread-self/ns/net", &before); err != nil {
		t.Fatal(err)
	}
	v4, v6, err := DefaultRoutes(p)
	if err != nil || v4 || v6 {
		t.Fatalf("DefaultRoutes(fresh namespace) = %v, %v, %v", v4, v6, err)
	}
	if err := unix.Stat("/proc/thread-self/ns/net", &after); err != nil {
		t.Fatal(err)
	}
	if before.Ino != after.Ino {
		t.Error("the calling thread changed namespace")
	}
}
