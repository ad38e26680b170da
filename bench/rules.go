package bench

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
)

// ruleLines are n network rules (YAML flow mappings, one a line) for the
// rules scaling runs. They are the same in every run, and they crowd the
// address and port space around the benchmark's own traffic: a quarter
// name an IPv6 prefix, the rest IPv4 prefixes mostly inside the hosts'
// /16, which the lookups must tell apart from the hosts' addresses. None
// matches the benchmark's frames (every rule names a destination prefix
// that holds neither host), so every frame takes the whole lookup and the
// default, allow.
func ruleLines(n int) []string {
	r := rand.New(rand.NewPCG(7, uint64(n)))
	hosts := []netip.Addr{hostSrcIP, hostDstIP}
	prefix4 := func(dst bool) netip.Prefix {
		for {
			b := hostSrcIP.As4()
			if r.IntN(10) < 6 {
				b[2], b[3] = byte(r.IntN(256)), byte(r.IntN(256)) // the hosts' /16
			} else {
				b[1], b[2], b[3] = byte(r.IntN(256)), byte(r.IntN(256)), byte(r.IntN(256))
			}
			p := netip.PrefixFrom(netip.AddrFrom4(b), []int{20, 24, 24, 26, 28, 30, 32, 32}[r.IntN(8)]).Masked()
			if !dst || !p.Contains(hosts[0]) && !p.Contains(hosts[1]) {
				return p
			}
		}
	}
	prefix6 := func() netip.Prefix {
		var b [16]byte
		b[0] = 0xfd
		for i := 1; i < 16; i++ {
			b[i] = byte(r.IntN(256))
		}
		b[1], b[2] = 0, byte(r.IntN(4)) // a few sites
		return netip.PrefixFrom(netip.AddrFrom16(b), []int{48, 56, 64, 64, 128}[r.IntN(5)]).Masked()
	}
	ports := func() string {
		p := 1024 + r.IntN(64000)
		if r.IntN(3) == 0 {
			return fmt.Sprintf(`"%d-%d"`, p, p+r.IntN(500))
		}
		return fmt.Sprintf(`"%d"`, p)
	}
	lines := make([]string, n)
	for i := range lines {
		var f []string
		f = append(f, "action: "+[]string{"allow", "deny"}[r.IntN(2)])
		proto := []string{"tcp", "tcp", "udp", "any"}[r.IntN(4)]
		f = append(f, "proto: "+proto)
		if r.IntN(4) == 0 {
			f = append(f, fmt.Sprintf("dst: [%s]", prefix6()))
			if r.IntN(2) == 0 {
				f = append(f, fmt.Sprintf("src: [%s]", prefix6()))
			}
		} else {
			f = append(f, fmt.Sprintf("dst: [%s]", prefix4(true)))
			if r.IntN(2) == 0 {
				f = append(f, fmt.Sprintf("src: [%s]", prefix4(false)))
			}
		}
		if proto != "any" && r.IntN(4) != 0 {
			f = append(f, "dst_ports: ["+ports()+"]")
		}
		lines[i] = "{" + strings.Join(f, ", ") + "}"
	}
	return lines
}
