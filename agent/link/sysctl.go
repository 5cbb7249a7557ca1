package link

import "os"

func writeFile(path, v string) error {
	b, err := os.ReadFile(path)
	if err == nil && string(b) == v+"\n" {
		return nil
	}
	return os.WriteFile(path, []byte(v), 0o644)
}

// EnableForwarding turns on IPv4 (and optionally IPv6) forwarding, as
// Docker does for non-internal networks.
func EnableForwarding(v6 bool) error {
	if err := writeFile("/proc/sys/net/ipv4/ip_forward", "1"); err != nil {
		return err
	}
	if v6 {
		return writeFile("/proc/sys/net/ipv6/conf/all/forwarding", "1")
	}
	return nil
}
