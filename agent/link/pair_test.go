package link

import (
	"crypto/rand"
	"encoding/hex"
	"net"
	"runtime"
	"testing"

	"github.com/netalias/netalias/agent/netns"
	"github.com/netalias/netalias/internal/testenv"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// inFreshNetns runs fn on a thread inside a new namespace (the host's
// links are never touched) and returns its error.
func inFreshNetns(t *testing.T, fn func(other string) error) {
	t.Helper()
	testenv.RequireRoot(t)
	var b [4]byte
	rand.Read(b[:])
	name := "nat-" + hex.EncodeToString(b[:])
	p, err := netns.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer netns.Delete(name)
	other, err := netns.Create(name + "o")
	if err != nil {
		t.Fatal(err)
	}
	defer netns.Delete(name + "o")
	done := make(chan error, 1)
	go func() {
		// Never unlocked: the thread dies with this goroutine.
		runtime.LockOSThread()
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		done <- fn(other)
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// CreatePair makes both ends in the namespace it runs in, the host end up
// on the bridge and the peer down with its MAC; PeerOf finds the peer
// while it is there and not once a runtime moved it; UnplugHost takes the
// host end down and off the bridge; deleting the host end deletes the
// moved peer too.
func TestCreatePairBothEndsOnHost(t *testing.T) {
	inFreshNetns(t, func(other string) error {
		la := netlink.NewLinkAttrs()
		la.Name = "natbr0"
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
			return err
		}
		mac := net.HardwareAddr{0x02, 0x42, 10, 9, 8, 7}
		p := Pair{HostName: "nav-test", PeerName: "nap-test", Bridge: "natbr0", MTU: 1400, MAC: mac}
		if err := CreatePair(p); err != nil {
			return err
		}
		if err := CreatePair(p); err == nil {
			t.Errorf("a second CreatePair with the same names succeeded")
		}
		br, _ := netlink.LinkByName("natbr0")
		host, err := netlink.LinkByName("nav-test")
		if err != nil {
			return err
		}
		peer, err := netlink.LinkByName("nap-test")
		if err != nil {
			return err
		}
		if host.Attrs().MasterIndex != br.Attrs().Index || host.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("host end %+v: want up on natbr0", host.Attrs())
		}
		if peer.Attrs().Flags&net.FlagUp != 0 || peer.Attrs().HardwareAddr.String() != mac.String() || peer.Attrs().MTU != 1400 {
			t.Errorf("peer %+v: want down, MAC %s, MTU 1400", peer.Attrs(), mac)
		}
		if got, err := PeerOf("nav-test"); err != nil || got != "nap-test" {
			t.Errorf("PeerOf = %q, %v; want nap-test", got, err)
		}
		if err := UnplugHost("nav-test", 0x6e61abcd); err != nil {
			return err
		}
		host, _ = netlink.LinkByName("nav-test")
		if host.Attrs().MasterIndex != 0 || host.Attrs().Flags&net.FlagUp != 0 || host.Attrs().Group != 0x6e61abcd {
			t.Errorf("after UnplugHost: %+v", host.Attrs())
		}
		// Docker moves the peer into the container.
		fd, err := unix.Open(other, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := netlink.LinkSetNsFd(peer, fd); err != nil {
			return err
		}
		if got, err := PeerOf("nav-test"); err != nil || got != "" {
			t.Errorf("PeerOf a moved peer = %q, %v; want \"\"", got, err)
		}
		if err := DeleteLink("nav-test"); err != nil {
			return err
		}
		return netns.WithHandle(other, func(h *netlink.Handle) error {
			if _, err := h.LinkByName("nap-test"); !NotFound(err) {
				t.Errorf("the moved peer survives its host end: %v", err)
			}
			return nil
		})
	})
	if err := UnplugHost("nav-missing0", 1); err != nil {
		t.Errorf("UnplugHost of a missing link: %v", err)
	}
}
