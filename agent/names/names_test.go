package names

import "testing"

func TestLabel(t *testing.T) {
	good := []string{"testnet", "centos-1", "a", "A1", "x-y-z"}
	bad := []string{"", "-a", "a-", "a.b", "a_b", "héllo", "a b", string(make([]byte, 64))}
	for _, s := range good {
		if err := Label("name", s); err != nil {
			t.Errorf("Label(%q) = %v, want nil", s, err)
		}
	}
	for _, s := range bad {
		if err := Label("name", s); err == nil {
			t.Errorf("Label(%q) = nil, want error", s)
		}
	}
}

func TestDNSName(t *testing.T) {
	if err := DNSName("alias", "db.internal"); err != nil {
		t.Error(err)
	}
	for _, s := range []string{"", "a..b", "a.", ".a", "a_b.c"} {
		if err := DNSName("alias", s); err == nil {
			t.Errorf("DNSName(%q) = nil, want error", s)
		}
	}
}
