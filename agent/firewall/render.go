package firewall

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/google/nftables/expr"
	"github.com/google/nftables/xt"
)

// Render shows rules as text, one per line, each expression the way
// `nft --debug=netlink` lists it ([ meta load iifname => reg 1 ] …), so
// that a change to the rules shows in review (the golden files in
// testdata). Only the expressions this package makes are known; others
// render as their Go type, which makes a golden test fail loudly.
func Render(rules []Rule) string {
	var order []string
	byChain := map[string][]Rule{}
	for _, r := range rules {
		if _, ok := byChain[r.Chain]; !ok {
			order = append(order, r.Chain)
		}
		byChain[r.Chain] = append(byChain[r.Chain], r) // the kernel's order within a chain
	}
	var b strings.Builder
	for _, chain := range order {
		fmt.Fprintf(&b, "chain %s\n", chain)
		for _, r := range byChain[chain] {
			parts := make([]string, 0, len(r.Exprs))
			for _, e := range r.Exprs {
				parts = append(parts, "[ "+renderExpr(e)+" ]")
			}
			fmt.Fprintf(&b, "  %s comment %q\n", strings.Join(parts, " "), r.Comment)
		}
	}
	return b.String()
}

func renderExpr(e expr.Any) string {
	switch e := e.(type) {
	case *expr.Meta:
		return fmt.Sprintf("meta load %s => reg %d", metaKey(e.Key), e.Register)
	case *expr.Cmp:
		return fmt.Sprintf("cmp %s reg %d %s", cmpOp(e.Op), e.Register, bytesText(e.Data))
	case *expr.Payload:
		base := map[expr.PayloadBase]string{expr.PayloadBaseLLHeader: "link", expr.PayloadBaseNetworkHeader: "network",
			expr.PayloadBaseTransportHeader: "transport"}[e.Base]
		return fmt.Sprintf("payload load %db @ %s header + %d => reg %d", e.Len, base, e.Offset, e.DestRegister)
	case *expr.Bitwise:
		return fmt.Sprintf("bitwise reg %d = ( reg %d & %s ) ^ %s", e.DestRegister, e.SourceRegister, hexText(e.Mask), hexText(e.Xor))
	case *expr.Masq:
		return "masq"
	case *expr.Verdict:
		return verdictName(e.Kind)
	case *expr.Match:
		if info, ok := e.Info.(*xt.ConntrackMtinfo3); ok {
			return fmt.Sprintf("match name %s rev %d flags %#x state %s", e.Name, e.Rev, info.MatchFlags, ctStates(info.StateMask))
		}
		return fmt.Sprintf("match name %s rev %d info %T", e.Name, e.Rev, e.Info)
	default:
		return fmt.Sprintf("%T", e)
	}
}

func metaKey(k expr.MetaKey) string {
	switch k {
	case expr.MetaKeyIIFNAME:
		return "iifname"
	case expr.MetaKeyOIFNAME:
		return "oifname"
	case expr.MetaKeyNFPROTO:
		return "nfproto"
	case expr.MetaKeyL4PROTO:
		return "l4proto"
	}
	return "key" + strconv.Itoa(int(k))
}

func cmpOp(op expr.CmpOp) string {
	switch op {
	case expr.CmpOpEq:
		return "eq"
	case expr.CmpOpNeq:
		return "neq"
	}
	return "op" + strconv.Itoa(int(op))
}

func verdictName(k expr.VerdictKind) string {
	switch k {
	case expr.VerdictAccept:
		return "immediate reg 0 accept"
	case expr.VerdictDrop:
		return "immediate reg 0 drop"
	}
	return "immediate reg 0 verdict " + strconv.Itoa(int(k))
}

// bytesText shows interface names as strings (with their NUL) and
// everything else in hex.
func bytesText(b []byte) string {
	s := strings.TrimSuffix(string(b), "\x00")
	for _, c := range []byte(s) {
		if c < 0x20 || c > 0x7e {
			return hexText(b)
		}
	}
	if len(s) == 0 {
		return hexText(b)
	}
	if len(s) < len(b) {
		return strconv.Quote(s) + `\0`
	}
	return strconv.Quote(s)
}

func hexText(b []byte) string { return fmt.Sprintf("0x%x", b) }

func ctStates(mask uint16) string {
	var out []string
	for _, s := range []struct {
		bit  uint32
		name string
	}{{expr.CtStateBitINVALID, "invalid"}, {expr.CtStateBitESTABLISHED, "established"},
		{expr.CtStateBitRELATED, "related"}, {expr.CtStateBitNEW, "new"}} {
		if uint32(mask)&s.bit != 0 {
			out = append(out, s.name)
		}
	}
	return strings.Join(out, ",")
}
