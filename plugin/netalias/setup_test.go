package netalias

import (
	"strings"
	"testing"

	"github.com/coredns/caddy"
	"github.com/coredns/coredns/plugin/test"

	"github.com/netalias/netalias/netwatch"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string
		check   func(*testing.T, *config)
	}{
		{in: `netalias`, check: func(t *testing.T, c *config) {
			if c.ttl != 5 || c.stateDir != "/var/lib/netalias" || !c.clients.Managed || len(c.docker) != 0 || c.zones[0] != "." || c.health != netwatch.HealthPrefer {
				t.Errorf("defaults: %+v", c)
			}
		}},
		{in: "netalias example.org {\n state /tmp/x\n ttl 0\n clients managed 10.0.0.0/8 192.0.2.1\n fallthrough\n}", check: func(t *testing.T, c *config) {
			if c.ttl != 0 || c.stateDir != "/tmp/x" || len(c.clients.Prefixes) != 2 || !c.fall.set || c.zones[0] != "example.org." {
				t.Errorf("got %+v", c)
			}
		}},
		{in: "netalias {\n clients any\n docker\n docker unix:///run/podman/podman.sock\n state off\n}", check: func(t *testing.T, c *config) {
			if !c.clients.Any || c.stateDir != "" || len(c.docker) != 2 || c.docker[0] != "unix:///var/run/docker.sock" {
				t.Errorf("got %+v", c)
			}
		}},
		{in: "netalias {\n healthcheck strict\n}", check: func(t *testing.T, c *config) {
			if c.health != netwatch.HealthStrict {
				t.Errorf("healthcheck strict: %v", c.health)
			}
		}},
		{in: "netalias {\n healthcheck off\n}", check: func(t *testing.T, c *config) {
			if c.health != netwatch.HealthOff {
				t.Errorf("healthcheck off: %v", c.health)
			}
		}},
		{in: "netalias {\n healthcheck prefer\n}", check: func(t *testing.T, c *config) {
			if c.health != netwatch.HealthPrefer {
				t.Errorf("healthcheck prefer: %v", c.health)
			}
		}},
		{in: "netalias {\n healthcheck sometimes\n}", wantErr: `healthcheck takes prefer, strict or off, got "sometimes"`},
		{in: "netalias {\n healthcheck\n}", wantErr: "healthcheck takes prefer, strict or off"},
		{in: "netalias {\n healthcheck strict off\n}", wantErr: "healthcheck takes prefer, strict or off"},
		{in: "netalias {\n ttl -1\n}", wantErr: "ttl"},
		{in: "netalias {\n ttl abc\n}", wantErr: "ttl"},
		{in: "netalias {\n clients 10.0.0.0/33\n}", wantErr: "10.0.0.0/33"},
		{in: "netalias {\n clients\n}", wantErr: "clients"},
		{in: "netalias {\n bogus\n}", wantErr: "unknown property 'bogus'"},
		{in: "netalias {\n state\n}", wantErr: "Wrong argument count"},
		{in: "netalias {\n state off\n}", wantErr: "no source"},
		{in: "netalias\nnetalias", wantErr: "once"},
	}
	for _, tt := range tests {
		c, err := parse(caddy.NewTestController("dns", tt.in))
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: error %v, want one containing %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		tt.check(t, c)
	}
}

func TestGateGrowsStackOnlyBehindOtherPlugins(t *testing.T) {
	h := newHandler(testStore())
	if newGate(h, h).grow {
		t.Error("netalias first in the chain: the gate grows the stack")
	}
	if !newGate(h, test.ErrorHandler()).grow {
		t.Error("another plugin before netalias: the gate does not grow the stack")
	}
}
