package policy

import (
	"sync"
	"sync/atomic"
	"testing"
)

func TestCounters(t *testing.T) {
	rs := Ruleset{Rules: []Rule{
		{Action: Deny, Proto: ProtoTCP, DstPorts: ports("22")},
		{Action: Allow, Proto: ProtoUDP},
	}}
	c := mustCompile(t, rs)
	k1, k2 := c.NewCounter(), c.NewCounter()
	ssh := pkt(In, ProtoTCP, "10.0.0.1", 1, "10.0.0.2", 22)
	ssh.Len = 100
	dns := pkt(In, ProtoUDP, "10.0.0.1", 1, "10.0.0.2", 53)
	dns.Len = 70
	web := pkt(In, ProtoTCP, "10.0.0.1", 1, "10.0.0.2", 80)
	web.Len = 1500
	for _, p := range []*Packet{ssh, ssh, dns, web} {
		_, r := c.Match(p)
		k1.Count(r, p.Len)
	}
	_, r := c.Match(dns)
	k2.Count(r, dns.Len)
	k2.CountFollowing(r, 1400) // a later fragment of the datagram
	k2.Count(99, 1)            // another classifier's rule: ignored
	if rules, d := c.Stats(); rules[0].Packets != 0 || d.Packets != 0 {
		t.Errorf("counted before Flush: %v %v", rules, d)
	}
	k1.Flush()
	k2.Flush()
	rules, d := c.Stats()
	want := []RuleStats{{2, 2, 200}, {2, 3, 70 + 70 + 1400}}
	if rules[0] != want[0] || rules[1] != want[1] || d != (RuleStats{1, 1, 1500}) {
		t.Errorf("got %v, default %v; want %v, default {1 1 1500}", rules, d, want)
	}
	// Flushing again publishes the same totals.
	k1.Flush()
	if again, _ := c.Stats(); again[0] != want[0] {
		t.Errorf("second flush: %v", again)
	}
	var nilc *Classifier
	var nilk *Counter
	nilk.Count(0, 1)
	nilk.Flush()
	if nilc.NewCounter() != nil {
		t.Error("nil classifier made a counter")
	}
}

// TestSwap runs loops that classify and count while the rules are
// replaced under them, and readers that read the counters; run it with
// -race. Every verdict must be one of the two rulesets', and every packet
// must be counted exactly once, on whichever classifier judged it.
func TestSwap(t *testing.T) {
	g := newGen(11, true)
	rsA, rsB := g.ruleset(200), g.ruleset(200)
	cs := []*Classifier{mustCompile(t, rsA), mustCompile(t, rsB), mustCompile(t, rsA), mustCompile(t, rsB)}
	var packets []Packet
	for range 512 {
		packets = append(packets, g.packet())
	}
	tab := NewTable(cs[0])
	const loops, batches, batch = 3, 400, 32
	var wg, ctl sync.WaitGroup
	var stop atomic.Bool
	for l := range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := tab.Matcher()
			for b := range batches {
				m.Begin()
				for i := range batch {
					p := &packets[(l*7+b*batch+i)%len(packets)]
					a, r := m.Match(p)
					wa, ra := naiveMatch(&rsA, p)
					wb, rb := naiveMatch(&rsB, p)
					if (a != wa || r != ra) && (a != wb || r != rb) {
						t.Errorf("verdict %v %d is neither ruleset's (%v %d, %v %d)", a, r, wa, ra, wb, rb)
						return
					}
				}
				m.Flush()
			}
		}()
	}
	ctl.Add(1)
	go func() { // the control plane swaps and reads
		defer ctl.Done()
		for i := 1; !stop.Load(); i++ {
			tab.Swap(cs[i%len(cs)])
			for _, c := range cs {
				c.Stats()
			}
		}
	}()
	wg.Wait()
	stop.Store(true)
	ctl.Wait()
	var total uint64
	for _, c := range cs {
		rules, d := c.Stats()
		total += d.Matches
		for _, r := range rules {
			total += r.Matches
		}
	}
	if want := uint64(loops * batches * batch); total != want && !t.Failed() {
		t.Errorf("counted %d matches, made %d", total, want)
	}
}

// TestSwapCounts checks that a loop's counts land on the classifier that
// judged the packets, across a swap.
func TestSwapCounts(t *testing.T) {
	rs := Ruleset{Rules: []Rule{{Action: Deny, Proto: ProtoTCP}}}
	cA, cB := mustCompile(t, rs), mustCompile(t, rs)
	tab := NewTable(cA)
	m := tab.Matcher()
	p := pkt(In, ProtoTCP, "10.0.0.1", 1, "10.0.0.2", 2)
	m.Begin()
	m.Match(p)
	m.Match(p)
	m.Flush()
	tab.Swap(cB)
	m.Begin()
	m.Match(p)
	m.CountFollowing(0, 10)
	m.Flush()
	a, _ := cA.Stats()
	b, _ := cB.Stats()
	if a[0].Matches != 2 || b[0].Matches != 1 || b[0].Packets != 2 {
		t.Errorf("A %v, B %v", a, b)
	}
	if m.Classifier() != cB {
		t.Error("the matcher did not pick up the new classifier")
	}
	if err := tab.Replace(Ruleset{Rules: []Rule{{Action: Action(9)}}}); err == nil || tab.Load() != cB {
		t.Errorf("a bad ruleset replaced the good one: %v", err)
	}
	var nilTab = NewTable(nil)
	nm := nilTab.Matcher()
	nm.Begin()
	if a, r := nm.Match(p); a != Allow || r != -1 {
		t.Errorf("empty table: %v %d", a, r)
	}
	nm.Flush()
}
