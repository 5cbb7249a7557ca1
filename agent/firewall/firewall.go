// Package firewall renders the nftables rules of a state directory's
// networks: masquerade for outbound traffic, isolation between networks,
// no way out of internal networks. Everything lives in one inet table of
// our own, regenerated in a single transaction. Where the host's `filter`
// FORWARD chain drops by policy (Docker leaves it so), a few accept rules
// for our bridges are added there too, each marked with a comment naming
// our table and the bridge; nothing else in that chain is touched.
package firewall

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/google/nftables/xt"
	"golang.org/x/sys/unix"
)

// BridgePrefix starts every netalias bridge name; isolation drops traffic
// from one of our bridges to any other bridge with this prefix.
const BridgePrefix = "na-"

// DefaultTable is the table of the default state directory.
const DefaultTable = "netalias"

// TableName returns the table of a state directory: "netalias" for the
// default one, "netalias-<8 hex of sha256(abs dir)>" otherwise, so
// separate state directories (tests) never wipe each other's rules.
func TableName(stateDir, defaultDir string) string {
	abs, err := filepath.Abs(stateDir)
	if err != nil {
		abs = stateDir
	}
	if abs == defaultDir {
		return DefaultTable
	}
	sum := sha256.Sum256([]byte(abs))
	return DefaultTable + "-" + hex.EncodeToString(sum[:4])
}

// Net is what the rules need to know about one network.
type Net struct {
	Bridge   string
	Subnet   netip.Prefix
	Subnet6  netip.Prefix
	Internal bool
	// OverlayPort is the VXLAN UDP port of a cluster network (0: none).
	// Containers must not send to it: a hand-made VXLAN packet would be
	// decapsulated into any network (overlay/README.md, Firewall).
	OverlayPort int
}

// comment marks our rules in foreign chains: "netalias:TABLE:BRIDGE".
func comment(table, bridge string) string { return "netalias:" + table + ":" + bridge }

// Rule is one rule of ours in a form that can be applied (Exprs) and
// shown (Render): the chain it goes to and its comment.
type Rule struct {
	Chain   string // "forward" or "postrouting" of our table, or "FORWARD" (the host's)
	Exprs   []expr.Any
	Comment string
}

// Rules returns the rules of our table for nets: isolation in "forward",
// masquerade in "postrouting".
func Rules(table string, nets []Net) []Rule {
	var out []Rule
	for _, n := range nets {
		add := func(chain string, ex ...expr.Any) {
			out = append(out, Rule{Chain: chain, Exprs: ex, Comment: comment(table, n.Bridge)})
		}
		// Isolation: nothing from this bridge to another netalias bridge.
		add("forward", cat(ifname(expr.MetaKeyIIFNAME, n.Bridge, true), ifprefix(expr.MetaKeyOIFNAME, BridgePrefix),
			ifname(expr.MetaKeyOIFNAME, n.Bridge, false), verdict(expr.VerdictDrop))...)
		if n.Internal {
			add("forward", cat(ifname(expr.MetaKeyIIFNAME, n.Bridge, true), ifname(expr.MetaKeyOIFNAME, n.Bridge, false), verdict(expr.VerdictDrop))...)
			add("forward", cat(ifname(expr.MetaKeyOIFNAME, n.Bridge, true), ifname(expr.MetaKeyIIFNAME, n.Bridge, false), verdict(expr.VerdictDrop))...)
			continue
		}
		for _, s := range []netip.Prefix{n.Subnet, n.Subnet6} {
			if s.IsValid() {
				add("postrouting", cat(saddr(s), ifname(expr.MetaKeyOIFNAME, n.Bridge, false), []expr.Any{&expr.Masq{}})...)
			}
		}
	}
	out = append(out, overlayRules(table, nets)...)
	return out
}

// overlayRules drop UDP to each overlay port coming from any of our
// bridges: to this host's VTEP (input) and routed towards another host's
// (forward). One pair per port, after the per-network rules.
func overlayRules(table string, nets []Net) []Rule {
	seen := map[int]bool{}
	var out []Rule
	for _, n := range nets {
		p := n.OverlayPort
		if p == 0 || seen[p] {
			continue
		}
		seen[p] = true
		c := "netalias:" + table + ":overlay:" + strconv.Itoa(p)
		out = append(out,
			Rule{Chain: "input", Comment: c, Exprs: cat(ifprefix(expr.MetaKeyIIFNAME, BridgePrefix), udpDport(p), verdict(expr.VerdictDrop))},
			Rule{Chain: "forward", Comment: c, Exprs: cat(ifprefix(expr.MetaKeyIIFNAME, BridgePrefix), ifprefixNeq(expr.MetaKeyOIFNAME, BridgePrefix), udpDport(p), verdict(expr.VerdictDrop))})
	}
	return out
}

// udpDport matches UDP destination port p.
func udpDport(p int) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(p >> 8), byte(p)}},
	}
}

// ifprefixNeq matches interface names not starting with p.
func ifprefixNeq(key expr.MetaKey, p string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte(p)},
	}
}

// ForwardRules returns the accept rules for nets that go into every host
// `filter` FORWARD chain (ip, ip6) whose policy is drop.
func ForwardRules(table string, nets []Net) []Rule {
	var out []Rule
	for _, n := range nets {
		add := func(ex ...expr.Any) {
			out = append(out, Rule{Chain: "FORWARD", Exprs: ex, Comment: comment(table, n.Bridge)})
		}
		// Inside one network: -i BR -o BR -j ACCEPT.
		add(cat(ifname(expr.MetaKeyIIFNAME, n.Bridge, true), ifname(expr.MetaKeyOIFNAME, n.Bridge, true), verdict(expr.VerdictAccept))...)
		if n.Internal {
			continue
		}
		// Out: -i BR ! -o BR -j ACCEPT; replies: -o BR --ctstate RELATED,ESTABLISHED -j ACCEPT.
		add(cat(ifname(expr.MetaKeyIIFNAME, n.Bridge, true), ifname(expr.MetaKeyOIFNAME, n.Bridge, false), verdict(expr.VerdictAccept))...)
		add(cat(ifname(expr.MetaKeyOIFNAME, n.Bridge, true), established(), verdict(expr.VerdictAccept))...)
	}
	return out
}

func userData(c string) []byte {
	return userdata.Append(nil, userdata.TypeComment, append([]byte(c), 0))
}

// Sync makes the kernel's rules match nets, in one transaction: our table
// is replaced whole (removed when nets is empty) and our marked rules in
// the host's dropping FORWARD chains are replaced.
func Sync(table string, nets []Net) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	t := &nftables.Table{Name: table, Family: nftables.TableFamilyINet}
	// Add-then-delete removes the table whether or not it exists, inside
	// the same batch as its replacement.
	c.AddTable(t)
	c.DelTable(t)
	if len(nets) > 0 {
		c.AddTable(t)
		chains := map[string]*nftables.Chain{
			"forward": c.AddChain(&nftables.Chain{Name: "forward", Table: t, Type: nftables.ChainTypeFilter,
				Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: policy(nftables.ChainPolicyAccept)}),
			"postrouting": c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
				Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: policy(nftables.ChainPolicyAccept)}),
		}
		if len(overlayRules(table, nets)) > 0 {
			chains["input"] = c.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
				Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: policy(nftables.ChainPolicyAccept)})
		}
		for _, r := range Rules(table, nets) {
			c.AddRule(&nftables.Rule{Table: t, Chain: chains[r.Chain], Exprs: r.Exprs, UserData: userData(r.Comment)})
		}
	}
	if err := hostForward(c, table, nets); err != nil {
		return err
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables transaction for table %s: %w", table, err)
	}
	return nil
}

// hostForward queues the replacement of our marked rules in every
// `filter` FORWARD chain (ip, ip6) whose policy is drop.
func hostForward(c *nftables.Conn, table string, nets []Net) error {
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
		chains, err := c.ListChainsOfTableFamily(fam)
		if err != nil {
			return fmt.Errorf("list nftables chains: %w", err)
		}
		for _, ch := range chains {
			if ch.Table.Name != "filter" || ch.Name != "FORWARD" || ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookForward {
				continue
			}
			rules, err := c.GetRules(ch.Table, ch)
			if err != nil {
				return fmt.Errorf("list rules of %s filter FORWARD: %w", famName(fam), err)
			}
			prefix := "netalias:" + table + ":"
			for _, r := range rules {
				if strings.HasPrefix(ruleComment(r), prefix) {
					if err := c.DelRule(r); err != nil {
						return err
					}
				}
			}
			if ch.Policy == nil || *ch.Policy != nftables.ChainPolicyDrop {
				continue // nothing to open: traffic already flows
			}
			for _, r := range ForwardRules(table, nets) {
				c.AddRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: r.Exprs, UserData: userData(r.Comment)})
			}
		}
	}
	return nil
}

// HostForwardRules counts our marked rules in the host's filter FORWARD
// chains (for tests and diagnostics).
func HostForwardRules(table string) (int, error) {
	c, err := nftables.New()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
		chains, err := c.ListChainsOfTableFamily(fam)
		if err != nil {
			return 0, err
		}
		for _, ch := range chains {
			if ch.Table.Name != "filter" || ch.Name != "FORWARD" {
				continue
			}
			rules, err := c.GetRules(ch.Table, ch)
			if err != nil {
				return 0, err
			}
			for _, r := range rules {
				if strings.HasPrefix(ruleComment(r), "netalias:"+table+":") {
					n++
				}
			}
		}
	}
	return n, nil
}

func famName(f nftables.TableFamily) string {
	if f == nftables.TableFamilyIPv6 {
		return "ip6"
	}
	return "ip"
}

func ruleComment(r *nftables.Rule) string {
	b := userdata.Get(r.UserData, userdata.TypeComment)
	return strings.TrimRight(string(b), "\x00")
}

func policy(p nftables.ChainPolicy) *nftables.ChainPolicy { return &p }

func cat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// ifname matches an interface name exactly (eq) or not (neq), the way nft
// and iptables-nft encode it: the name and its NUL terminator.
func ifname(key expr.MetaKey, name string, eq bool) []expr.Any {
	op := expr.CmpOpEq
	if !eq {
		op = expr.CmpOpNeq
	}
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: append([]byte(name), 0)},
	}
}

// ifprefix matches interface names starting with p ("na-*" in nft).
func ifprefix(key expr.MetaKey, p string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(p)},
	}
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

// established is iptables' "-m conntrack --ctstate RELATED,ESTABLISHED",
// encoded as the xt match iptables-nft itself writes, so `iptables -S`
// (and Docker, which edits this chain with iptables) can still parse the
// chain. A native nft "ct state" expression would make it "incompatible".
func established() []expr.Any {
	info := &xt.ConntrackMtinfo3{}
	info.MatchFlags = uint16(xt.ConntrackState)
	info.StateMask = uint16(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED)
	return []expr.Any{&expr.Match{Name: "conntrack", Rev: 3, Info: info}}
}

// saddr matches the source address against prefix s (inet table: check
// the protocol first).
func saddr(s netip.Prefix) []expr.Any {
	proto, off, n := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4)
	if s.Addr().Is6() {
		proto, off, n = byte(unix.NFPROTO_IPV6), 8, 16
	}
	mask := make([]byte, n)
	for i := 0; i < s.Bits(); i++ {
		mask[i/8] |= 1 << (7 - i%8)
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: s.Masked().Addr().AsSlice()},
	}
}

// Healthy reports whether the kernel still holds what Sync made for nets:
// our table (when there are networks) and the expected number of marked
// rules in every dropping `filter` FORWARD chain. A Docker or firewalld
// restart that rewrites FORWARD makes it false; the agent then re-syncs.
func Healthy(table string, nets []Net) (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, err
	}
	if len(nets) > 0 {
		if _, err := c.ListTableOfFamily(table, nftables.TableFamilyINet); err != nil {
			return false, nil
		}
	}
	want := len(ForwardRules(table, nets))
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
		chains, err := c.ListChainsOfTableFamily(fam)
		if err != nil {
			return false, err
		}
		for _, ch := range chains {
			if ch.Table.Name != "filter" || ch.Name != "FORWARD" || ch.Policy == nil || *ch.Policy != nftables.ChainPolicyDrop {
				continue
			}
			rules, err := c.GetRules(ch.Table, ch)
			if err != nil {
				return false, err
			}
			got := 0
			for _, r := range rules {
				if strings.HasPrefix(ruleComment(r), "netalias:"+table+":") {
					got++
				}
			}
			if got != want {
				return false, nil
			}
		}
	}
	return true, nil
}
