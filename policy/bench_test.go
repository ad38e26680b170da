package policy

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// threadCPU is the CPU time the calling thread has used. The machines
// that run these benchmarks are shared, so wall-clock ns/op swings with
// the load; CPU time per op (reported as cpu-ns/op) does much less.
func threadCPU() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_THREAD, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchSizes are the ruleset sizes of the benchmarks.
var benchSizes = []int{1, 100, 1000, 10000}

// benchPackets makes the traffic for a ruleset: mostly packets with random
// addresses and ports from the same address pools as the rules (they
// mostly miss: every rule names an address or a port), and one in ten
// made to hit one of the last tenth of the rules, which a linear scan
// would reach last.
func benchPackets(g *gen, rs *Ruleset, n int) []Packet {
	ps := make([]Packet, n)
	for i := range ps {
		if i%10 == 0 && len(rs.Rules) > 0 {
			late := len(rs.Rules) - 1 - g.pick(len(rs.Rules)/10+1)
			ps[i] = g.packetFor(&rs.Rules[late])
		} else {
			ps[i] = g.packet()
		}
	}
	return ps
}

var sink int

// BenchmarkMatch is the classifier's cost per packet as the ruleset grows.
// It reports how many packets hit a rule and how many hit one of the last
// tenth of the rules.
func BenchmarkMatch(b *testing.B) {
	for _, n := range benchSizes {
		g := newGen(42, false)
		rs := g.ruleset(n)
		c := mustCompile(b, rs)
		ps := benchPackets(g, &rs, 4096)
		hits, late := 0, 0
		for i := range ps {
			if _, r := c.Match(&ps[i]); r >= 0 {
				hits++
				if r >= n-n/10-1 {
					late++
				}
			}
		}
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cpu := threadCPU()
			i := 0
			for b.Loop() {
				_, r := c.Match(&ps[i&(len(ps)-1)])
				sink += r
				i++
			}
			b.ReportMetric(float64(threadCPU()-cpu)/float64(b.N), "cpu-ns/op")
			b.ReportMetric(100*float64(hits)/float64(len(ps)), "hit%")
			b.ReportMetric(100*float64(late)/float64(len(ps)), "late%")
		})
	}
}

// BenchmarkMatchFamily is BenchmarkMatch for IPv4 and IPv6 packets
// apart: IPv6 addresses take a level more (site, subnet, host).
func BenchmarkMatchFamily(b *testing.B) {
	for _, n := range benchSizes {
		g := newGen(42, false)
		rs := g.ruleset(n)
		c := mustCompile(b, rs)
		var fam [2][]Packet
		for _, p := range benchPackets(g, &rs, 8*4096) {
			if f := &fam[b2i(p.IPv6)]; len(*f) < 4096 {
				*f = append(*f, p)
			}
		}
		if len(fam[0]) != 4096 || len(fam[1]) != 4096 {
			b.Fatal("not enough packets of a family")
		}
		for i, name := range []string{"ipv4", "ipv6"} {
			ps := fam[i]
			b.Run(fmt.Sprintf("%s/rules=%d", name, n), func(b *testing.B) {
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				cpu := threadCPU()
				i := 0
				for b.Loop() {
					_, r := c.Match(&ps[i&(len(ps)-1)])
					sink += r
					i++
				}
				b.ReportMetric(float64(threadCPU()-cpu)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// BenchmarkMatchCounted adds the per-loop counters, as the dataplane
// uses them: count every packet, publish every 64.
func BenchmarkMatchCounted(b *testing.B) {
	for _, n := range benchSizes {
		g := newGen(42, false)
		rs := g.ruleset(n)
		t := NewTable(mustCompile(b, rs))
		m := t.Matcher()
		ps := benchPackets(g, &rs, 4096)
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if i&63 == 0 {
					m.Flush()
					m.Begin()
				}
				_, r := m.Match(&ps[i&(len(ps)-1)])
				sink += r
				i++
			}
		})
	}
}

// BenchmarkLinear is the rules scanned in order, for scale.
func BenchmarkLinear(b *testing.B) {
	for _, n := range benchSizes {
		g := newGen(42, false)
		rs := g.ruleset(n)
		ps := benchPackets(g, &rs, 4096)
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			i := 0
			for b.Loop() {
				_, r := naiveMatch(&rs, &ps[i&(len(ps)-1)])
				sink += r
				i++
			}
		})
	}
}

// BenchmarkCompile is the cost of replacing a ruleset.
func BenchmarkCompile(b *testing.B) {
	for _, n := range benchSizes {
		rs := newGen(42, false).ruleset(n)
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := Compile(rs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func TestBenchRulesets(t *testing.T) {
	for _, n := range benchSizes {
		g := newGen(42, false)
		rs := g.ruleset(n)
		c := mustCompile(t, rs)
		t.Logf("rules=%d: %v", n, c.Info())
		ps := benchPackets(g, &rs, 4096)
		for i := range ps {
			a, r := c.Match(&ps[i])
			if na, nr := naiveMatch(&rs, &ps[i]); a != na || r != nr {
				t.Fatalf("rules=%d: %+v: got %d, want %d", n, ps[i], r, nr)
			}
		}
	}
}
