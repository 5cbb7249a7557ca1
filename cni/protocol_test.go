package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func TestVersionListsEverySpecVersion(t *testing.T) {
	e := newEnv(t, testnet())
	out, _, code := e.run(map[string]string{"CNI_COMMAND": "VERSION"}, "")
	if code != 0 {
		t.Fatalf("VERSION exit %d: %s", code, out)
	}
	var v struct {
		CNIVersion string   `json:"cniVersion"`
		Supported  []string `json:"supportedVersions"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("VERSION output %q: %v", out, err)
	}
	want := []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}
	if !slices.Equal(v.Supported, want) {
		t.Errorf("supportedVersions = %v, want %v", v.Supported, want)
	}
	// And as a runtime asks.
	info, err := e.lib.GetVersionInfo(ctx, "netalias")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(info.SupportedVersions(), want) {
		t.Errorf("libcni GetVersionInfo = %v, want %v", info.SupportedVersions(), want)
	}
}

func TestNoCommandPrintsAbout(t *testing.T) {
	e := newEnv(t, testnet())
	out, errOut, code := e.run(nil, "")
	if code != 0 || out != "" || !strings.Contains(errOut, "CNI plugin netalias") || !strings.Contains(errOut, "1.1.0") {
		t.Errorf("no CNI_COMMAND: exit %d, stdout %q, stderr %q; want exit 0 and the about text on stderr", code, out, errOut)
	}
}

// TestErrorCodes drives the binary with what a broken runtime or a bad
// conflist sends: each failure is the spec's JSON on stdout, a non-zero
// exit, the right code, and a message naming what is wrong.
func TestErrorCodes(t *testing.T) {
	e := newEnv(t, testnet())
	ns := e.netns("ns1")
	good := `{"cniVersion":"1.1.0","name":"testnet","type":"netalias","network":"testnet","stateDir":"` + e.dir + `"}`
	withKey := func(kv string) string { return strings.TrimSuffix(good, "}") + "," + kv + "}" }
	addEnv := func(extra ...string) map[string]string {
		m := map[string]string{"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c0ffee000001", "CNI_NETNS": ns, "CNI_IFNAME": "eth0"}
		for i := 0; i+1 < len(extra); i += 2 {
			if extra[i+1] == "" {
				delete(m, extra[i])
			} else {
				m[extra[i]] = extra[i+1]
			}
		}
		return m
	}
	cases := []struct {
		name  string
		env   map[string]string
		stdin string
		code  uint
		says  string
	}{
		{"ADD without CNI_CONTAINERID", addEnv("CNI_CONTAINERID", ""), good, 4, "CNI_CONTAINERID"},
		{"ADD without CNI_NETNS", addEnv("CNI_NETNS", ""), good, 4, "CNI_NETNS"},
		{"ADD without CNI_IFNAME", addEnv("CNI_IFNAME", ""), good, 4, "CNI_IFNAME"},
		{"DEL without CNI_IFNAME", addEnv("CNI_COMMAND", "DEL", "CNI_IFNAME", ""), good, 4, "CNI_IFNAME"},
		{"interface name too long", addEnv("CNI_IFNAME", "eth0123456789abc"), good, 4, "interface name"},
		{"unknown command", addEnv("CNI_COMMAND", "FROB"), good, 4, "FROB"},
		{"CNI_ARGS not K=V", addEnv("CNI_ARGS", "IgnoreUnknown=1;oops"), good, 4, "CNI_ARGS"},
		{"CNI_ARGS bad IP", addEnv("CNI_ARGS", "IP=10.88.7.300"), good, 4, "CNI_ARGS IP"},
		{"CNI_ARGS two IPv4", addEnv("CNI_ARGS", "IP=10.88.7.5,10.88.7.6"), good, 4, "more than one IPv4"},
		{"CNI_ARGS bad MAC", addEnv("CNI_ARGS", "MAC=01:00:5e:00:00:01"), good, 4, "multicast"},
		{"DEL bad CNI_ARGS", addEnv("CNI_COMMAND", "DEL", "CNI_ARGS", "junk"), good, 4, "CNI_ARGS"},
		{"bad JSON", addEnv(), `{"cniVersion":`, 6, "network config"},
		{"bad JSON on DEL", addEnv("CNI_COMMAND", "DEL"), `[]`, 6, ""},
		{"missing network", addEnv(), `{"cniVersion":"1.1.0","name":"n1","type":"netalias"}`, 7, `"network"`},
		{"missing network on DEL", addEnv("CNI_COMMAND", "DEL"), `{"cniVersion":"1.1.0","name":"n1","type":"netalias"}`, 7, `"network"`},
		{"network not a label", addEnv(), strings.Replace(good, `"network":"testnet"`, `"network":"test_net"`, 1), 7, `"network"`},
		{"foreign ipam", addEnv(), withKey(`"ipam":{"type":"host-local","subnet":"10.1.0.0/24"}`), 7, "host-local"},
		{"subnet key", addEnv(), withKey(`"subnet":"10.9.0.0/24"`), 7, "netalias network create --subnet 10.9.0.0/24 testnet"},
		{"relative stateDir", addEnv(), strings.Replace(good, e.dir, "var/lib/netalias", 1), 7, "stateDir"},
		{"bad ips capability", addEnv(), withKey(`"runtimeConfig":{"ips":["nope"]}`), 7, "runtimeConfig.ips"},
		{"bad mac capability", addEnv(), withKey(`"runtimeConfig":{"mac":"zz"}`), 7, "runtimeConfig.mac"},
		{"unknown network", addEnv(), strings.Replace(good, `"network":"testnet"`, `"network":"nonet"`, 1), 7, "netalias network create nonet"},
		{"unsupported version", addEnv(), strings.Replace(good, "1.1.0", "2.0.0", 1), 1, "incompatible"},
		{"CHECK on 0.3.1", addEnv("CNI_COMMAND", "CHECK"), strings.Replace(good, "1.1.0", "0.3.1", 1), 1, "CHECK"},
		{"GC on 1.0.0", addEnv("CNI_COMMAND", "GC"), strings.Replace(good, "1.1.0", "1.0.0", 1), 1, "GC"},
		{"STATUS on 1.0.0", addEnv("CNI_COMMAND", "STATUS"), strings.Replace(good, "1.1.0", "1.0.0", 1), 1, "STATUS"},
		{"missing state directory", addEnv(), strings.Replace(good, e.dir, e.dir+"/absent", 1), 5, e.dir + "/absent"},
		{"missing conf name", addEnv(), `{"cniVersion":"1.1.0","type":"netalias","network":"testnet"}`, 7, "name"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, _, code := e.run(c.env, c.stdin)
			if code == 0 {
				t.Fatalf("exit 0, want failure; stdout %q", out)
			}
			te := e.cniError(out)
			if te.Code != c.code {
				t.Errorf("code %d (%s), want %d", te.Code, te.Error(), c.code)
			}
			if !strings.Contains(te.Error(), c.says) {
				t.Errorf("message %q does not mention %q", te.Error(), c.says)
			}
		})
	}
	if n := len(e.state().Networks["testnet"].Attachments); n != 0 {
		t.Errorf("failed calls left %d attachments", n)
	}
}

// TestErrorMapping pins the code each backend error becomes.
func TestErrorMapping(t *testing.T) {
	wrap := func(s error) error { return fmt.Errorf("network %q: %w", "testnet", s) }
	ctxCanceled, errPlain := context.Canceled, errors.New("something odd")
	cases := []struct {
		cmd  string
		err  error
		code uint
	}{
		{"ADD", wrap(ErrUnknownNetwork), 7},
		{"ADD", wrap(ErrInvalid), 7},
		{"ADD", wrap(ErrNoFreeAddress), CodeNoFreeAddress},
		{"ADD", wrap(ErrAddressInUse), CodeAddressInUse},
		{"ADD", wrap(ErrExists), CodeExists},
		{"ADD", wrap(ErrNameInUse), CodeExists},
		{"ADD", wrap(ErrNetns), 4},
		{"ADD", wrap(ErrStateIO), 5},
		{"ADD", wrap(ErrBusy), 11},
		{"ADD", wrap(ctxCanceled), 11},
		{"ADD", wrap(errPlain), types.ErrInternal},
		{"ADD", types.NewError(42, "own", ""), 42},
		{"CHECK", wrap(ErrNotAttached), 3},
		{"CHECK", wrap(ErrDamaged), CodeDamaged},
		{"STATUS", wrap(ErrUnavailable), 50},
		{"STATUS", wrap(ErrDegraded), 51},
		{"STATUS", wrap(ErrNoFreeAddress), 50},
		{"STATUS", wrap(ErrUnknownNetwork), 50},
		{"STATUS", wrap(ErrStateIO), 50},
		{"STATUS", wrap(errPlain), 50},
	}
	for _, c := range cases {
		got := codeOf(toCNIError(c.cmd, c.err))
		if got != c.code {
			t.Errorf("%s %v: code %d, want %d", c.cmd, c.err, got, c.code)
		}
	}
	if err := toCNIError("ADD", fmt.Errorf("open /run/netns/x: %w", ErrNetns)); !strings.HasPrefix(err.Error(), "CNI_NETNS: ") {
		t.Errorf("code 4 message %q does not name CNI_NETNS", err)
	}
	if toCNIError("ADD", nil) != nil {
		t.Error("toCNIError(nil) is not a nil error")
	}
}
