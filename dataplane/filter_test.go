package dataplane

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/xdpswitch/xdpswitch/dataplane/afxdp"
	"github.com/xdpswitch/xdpswitch/internal/testnet"
	"github.com/xdpswitch/xdpswitch/policy"
)

func ruleset(t *testing.T, doc string) *policy.Ruleset {
	t.Helper()
	var rs policy.Ruleset
	if err := yaml.Unmarshal([]byte(doc), &rs); err != nil {
		t.Fatal(err)
	}
	if err := rs.Check(); err != nil {
		t.Fatal(err)
	}
	return &rs
}

// listenUDP opens a UDP socket inside the host's namespace.
func listenUDP(t *testing.T, h *testnet.Host, addr string) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	if err := h.Do(func() error {
		a, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return err
		}
		c, err = net.ListenUDP("udp", a)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// sendUDP sends one datagram from the host's namespace; the host's kernel
// fragments it to fit the path.
func sendUDP(t *testing.T, h *testnet.Host, to string, payload []byte) {
	t.Helper()
	if err := h.Do(func() error {
		c, err := net.Dial("udp", to)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(payload)
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// receive reads one datagram, or nil when none comes within wait.
func receive(t *testing.T, c *net.UDPConn, wait time.Duration) []byte {
	t.Helper()
	buf := make([]byte, 65536)
	if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
		t.Fatal(err)
	}
	n, err := c.Read(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

func payload(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = seed + byte(i*7)
	}
	return p
}

func enableIPv6(t *testing.T, h *testnet.Host, cidr string) {
	t.Helper()
	h.Run(t, "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0")
	h.Run(t, "ip", "-6", "addr", "add", cidr, "dev", "eth0", "nodad")
}

// TestRulesWithKernelFragments sends 4000-byte UDP datagrams over a
// 1500-byte MTU, fragmented by the sending kernel, through network and
// port rules: an allowed datagram arrives whole, a denied one not at all,
// and every fragment is counted against the rule that judged the first.
func TestRulesWithKernelFragments(t *testing.T) {
	sw := testSwitch(t, "lan")
	hosts := plug(t, sw, "lan", "10.88.0.1/24", "10.88.0.2/24")
	a, b := hosts[0], hosts[1]
	enableIPv6(t, a, "fd00:88::1/64")
	enableIPv6(t, b, "fd00:88::2/64")
	if err := sw.SetNetworkRules("lan", ruleset(t, `
default: deny
rules:
  - {action: allow, proto: icmpv6}
  - {action: allow, proto: udp, dst_ports: ["9000", "9002"]}
`)); err != nil {
		t.Fatal(err)
	}
	if err := sw.SetPortRules(b.Port, ruleset(t, `
rules:
  - {action: deny, direction: out, proto: udp, dst_ports: ["9002"]}
`)); err != nil {
		t.Fatal(err)
	}
	// ARP is outside the rules; ping is not (icmp is denied by default).
	if err := a.Ping(b.IP.String(), 1); err == nil {
		t.Error("ping crossed a network whose rules deny icmp")
	}

	for _, fam := range []struct{ name, a, b string }{
		{"ipv4", "10.88.0.1", "10.88.0.2"},
		{"ipv6", "[fd00:88::1]", "[fd00:88::2]"},
	} {
		t.Run(fam.name, func(t *testing.T) {
			ok, denied, outDenied := listenUDP(t, b, fam.b+":9000"), listenUDP(t, b, fam.b+":9001"), listenUDP(t, b, fam.b+":9002")
			netBefore, _ := sw.NetworkRules("lan")
			portBefore, _ := sw.PortRules(b.Port)

			want := payload(4000, 1)
			// IPv6 neighbour discovery may still be under way: the first
			// datagrams may die in the sender's neighbour queue, so the
			// allowed one is sent until it arrives.
			var got []byte
			for i := 0; i < 10 && got == nil; i++ {
				sendUDP(t, a, fam.b+":9000", want)
				got = receive(t, ok, time.Second)
			}
			if !bytes.Equal(got, want) {
				dumpSwitch(t, sw)
				t.Fatalf("allowed datagram: got %d bytes, want the 4000 sent", len(got))
			}
			sendUDP(t, a, fam.b+":9001", payload(4000, 2))
			sendUDP(t, a, fam.b+":9002", payload(4000, 3))
			if got := receive(t, denied, time.Second); got != nil {
				t.Errorf("denied datagram arrived: %d bytes", len(got))
			}
			if got := receive(t, outDenied, 100*time.Millisecond); got != nil {
				t.Errorf("datagram denied by the port's out rule arrived: %d bytes", len(got))
			}

			// Three fragments each: one lookup, three packets.
			testnet.Eventually(t, 3*time.Second, "rule counters", func() bool {
				n, _ := sw.NetworkRules("lan")
				p, _ := sw.PortRules(b.Port)
				allowed := n.Stats[1].Packets - netBefore.Stats[1].Packets
				deflt := n.Default.Packets - netBefore.Default.Packets
				portDenied := p.Stats[0].Packets - portBefore.Stats[0].Packets
				portMatches := p.Stats[0].Matches - portBefore.Stats[0].Matches
				return allowed >= 6 && allowed%3 == 0 && deflt == 3 && portDenied == 3 && portMatches == 1
			})
			n, _ := sw.NetworkRules("lan")
			if d := n.Default.Matches - netBefore.Default.Matches; d != 1 {
				t.Errorf("default matched %d lookups for one denied datagram, want 1", d)
			}
		})
	}
	if st := sw.FragmentStats(); st.HeldFrames != 0 || st.Firsts == 0 {
		t.Errorf("fragment tracker %+v: want firsts recorded, nothing held", st)
	}
	if c := counters(t, sw, a.Port); c.Drops["policy"] < 3 {
		t.Errorf("drops on the sender's port %v: want the denied fragments under policy", c.Drops)
	}
}

// fragment4 makes one IPv4 fragment: data at byte offset off of the
// datagram's payload.
func fragment4(src, dst net.IP, proto byte, id uint16, off int, more bool, data []byte) []byte {
	ip := ipv4Packet(src, dst, proto, data)
	binary.BigEndian.PutUint16(ip[4:], id)
	fo := uint16(off / 8)
	if more {
		fo |= 0x2000
	}
	binary.BigEndian.PutUint16(ip[6:], fo)
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], checksum(ip[:20]))
	return ip
}

// udpDatagram4 is a UDP header and payload whose checksum is left out
// (zero), which IPv4 allows.
func udpDatagram4(dport uint16, data []byte) []byte { return udpHeader(40000, dport, data) }

// cut splits a datagram's payload into fragments of at most size bytes.
func cut(src, dst net.IP, proto byte, id uint16, dgram []byte, size int) [][]byte {
	var out [][]byte
	for off := 0; off < len(dgram); off += size {
		end := min(off+size, len(dgram))
		out = append(out, fragment4(src, dst, proto, id, off, end < len(dgram), dgram[off:end]))
	}
	return out
}

// TestFragmentsCrafted plays a guest that sends fragments in every order
// and shape through a tap, to a host whose kernel reassembles what it
// gets: the first fragment's verdict holds for all, early fragments wait
// for it, and bad fragments are dropped and counted.
func TestFragmentsCrafted(t *testing.T) {
	umem := afxdp.DefaultUmemConfig()
	umem.NumFrames = 2048
	sw := testSwitchConfig(t, Config{Umem: umem, FillFrames: 128, FragmentTimeout: 3 * time.Second}, "lan")
	vmMAC := net.HardwareAddr{0x52, 0x54, 0, 0x89, 0, 2}
	vmRules := ruleset(t, `
default: deny
rules:
  - {action: allow, direction: in, proto: udp, dst_ports: ["9000"]}
  - {action: allow, direction: out}
`)
	tap := plugTap(t, sw, "lan", PortOptions{Rules: vmRules})
	host := plug(t, sw, "lan", "10.89.0.1/24")[0]
	vm, vmIP := tap.Files[0], net.ParseIP("10.89.0.2")
	ok, denied := listenUDP(t, host, "10.89.0.1:9000"), listenUDP(t, host, "10.89.0.1:9001")

	send := func(pkts ...[]byte) {
		t.Helper()
		for _, p := range pkts {
			if _, err := vm.Write(ethFrame(host.MAC, vmMAC, etherTypeIPv4, p)); err != nil {
				t.Fatal(err)
			}
		}
	}
	drops := func(reason string) uint64 { return counters(t, sw, tap.Name).Drops[reason] }
	expectNone := func(c *net.UDPConn, what string) {
		t.Helper()
		if got := receive(t, c, 300*time.Millisecond); got != nil {
			t.Errorf("%s: a datagram of %d bytes arrived", what, len(got))
		}
	}
	expect := func(c *net.UDPConn, want []byte, what string) {
		t.Helper()
		if got := receive(t, c, 3*time.Second); !bytes.Equal(got, want) {
			dumpSwitch(t, sw)
			t.Fatalf("%s: got %d bytes, want the %d sent", what, len(got), len(want))
		}
	}
	id := uint16(100)
	next := func() uint16 { id++; return id }

	t.Run("in order", func(t *testing.T) {
		data := payload(3000, 4)
		send(cut(vmIP, host.IP, ipProtoUDP, next(), udpDatagram4(9000, data), 1400)...)
		expect(ok, data, "allowed, in order")
	})
	t.Run("reversed, allowed", func(t *testing.T) {
		data := payload(4000, 5)
		fs := cut(vmIP, host.IP, ipProtoUDP, next(), udpDatagram4(9000, data), 1000)
		held := sw.FragmentStats().Held
		for i := len(fs) - 1; i >= 0; i-- {
			send(fs[i])
		}
		expect(ok, data, "allowed, reversed")
		if h := sw.FragmentStats().Held - held; h != uint64(len(fs)-1) {
			t.Errorf("%d fragments held, want the %d sent before the first", h, len(fs)-1)
		}
	})
	t.Run("reversed, denied", func(t *testing.T) {
		before := drops("policy")
		fs := cut(vmIP, host.IP, ipProtoUDP, next(), udpDatagram4(9001, payload(4000, 6)), 1000)
		for i := len(fs) - 1; i >= 0; i-- {
			send(fs[i])
		}
		expectNone(denied, "denied, reversed")
		testnet.Eventually(t, 2*time.Second, "every fragment dropped by policy", func() bool {
			return drops("policy")-before == uint64(len(fs))
		})
	})
	t.Run("interleaved", func(t *testing.T) {
		good, bad := payload(3500, 7), payload(3500, 8)
		fa := cut(vmIP, host.IP, ipProtoUDP, next(), udpDatagram4(9000, good), 800)
		fb := cut(vmIP, host.IP, ipProtoUDP, next(), udpDatagram4(9001, bad), 800)
		// b's later fragments first, then a and b alternating, a's first
		// fragment last.
		send(fb[1:]...)
		for i := len(fa) - 1; i >= 0; i-- {
			send(fa[i])
			if i == 1 {
				send(fb[0])
			}
		}
		expect(ok, good, "allowed, interleaved")
		expectNone(denied, "denied, interleaved")
	})
	t.Run("overlap", func(t *testing.T) {
		before := sw.FragmentStats().DroppedDatagrams["overlap"]
		dgram := udpDatagram4(9000, payload(2400, 9))
		i := next()
		send(fragment4(vmIP, host.IP, ipProtoUDP, i, 0, true, dgram[:1200]),
			fragment4(vmIP, host.IP, ipProtoUDP, i, 1200, true, dgram[1200:1600]),
			fragment4(vmIP, host.IP, ipProtoUDP, i, 1504, false, dgram[1504:]))
		expectNone(ok, "overlapping fragments")
		testnet.Eventually(t, 2*time.Second, "overlap counted", func() bool {
			return sw.FragmentStats().DroppedDatagrams["overlap"] == before+1
		})
	})
	t.Run("tiny first fragment", func(t *testing.T) {
		before := sw.FragmentStats().DroppedDatagrams["tiny_first"]
		tcp := make([]byte, 20+64)
		binary.BigEndian.PutUint16(tcp[0:], 40000)
		binary.BigEndian.PutUint16(tcp[2:], 9000)
		tcp[12] = 5 << 4
		i := next()
		tx := counters(t, sw, host.Port).TxPackets
		// 8 bytes: the ports, but not the TCP flags (RFC 1858).
		send(fragment4(vmIP, host.IP, 6, i, 0, true, tcp[:8]),
			fragment4(vmIP, host.IP, 6, i, 8, false, tcp[8:]))
		testnet.Eventually(t, 2*time.Second, "tiny first fragment counted", func() bool {
			return sw.FragmentStats().DroppedDatagrams["tiny_first"] == before+1
		})
		if got := counters(t, sw, host.Port).TxPackets - tx; got != 0 {
			t.Errorf("%d fragments of a datagram with a tiny first fragment reached the host", got)
		}
	})
	t.Run("port removed while holding", func(t *testing.T) {
		data := payload(3000, 11)
		fs := cut(vmIP, host.IP, ipProtoUDP, next(), udpDatagram4(9000, data), 1400)
		gone := plugTap(t, sw, "lan", PortOptions{Rules: vmRules})
		goneID := portID(sw, gone.Name)
		for _, f := range []int{2, 1} {
			if _, err := gone.Files[0].Write(ethFrame(host.MAC, vmMAC, etherTypeIPv4, fs[f])); err != nil {
				t.Fatal(err)
			}
		}
		testnet.Eventually(t, 2*time.Second, "the later fragments held", func() bool {
			return sw.FragmentStats().HeldFrames == 2
		})
		evicted := sw.FragmentStats().DroppedDatagrams["evicted"]
		if err := sw.RemovePort(gone.Name); err != nil {
			t.Fatal(err)
		}
		if st := sw.FragmentStats(); st.HeldFrames != 0 || st.DroppedDatagrams["evicted"] != evicted+1 {
			t.Errorf("after the port went: %d frames held, %d datagrams evicted, want 0 and %d",
				st.HeldFrames, st.DroppedDatagrams["evicted"], evicted+1)
		}
		if _, err := sw.CheckFrames(); err != nil {
			t.Fatal(err)
		}
		// The next port takes the freed id. The first fragment it sends
		// must not complete the datagram the old port began.
		heir := plugTap(t, sw, "lan", PortOptions{Rules: vmRules})
		if id := portID(sw, heir.Name); id != goneID {
			t.Fatalf("the new port has id %d, want the freed %d", id, goneID)
		}
		if _, err := heir.Files[0].Write(ethFrame(host.MAC, vmMAC, etherTypeIPv4, fs[0])); err != nil {
			t.Fatal(err)
		}
		expectNone(ok, "the old port's fragments with the new port's first")
		if err := sw.RemovePort(heir.Name); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("rules removed while holding", func(t *testing.T) {
		data := payload(3000, 12)
		fs := cut(vmIP, host.IP, ipProtoUDP, next(), udpDatagram4(9000, data), 1400)
		ruled := plugTap(t, sw, "lan", PortOptions{Rules: vmRules})
		defer sw.RemovePort(ruled.Name)
		for _, f := range []int{2, 1} {
			if _, err := ruled.Files[0].Write(ethFrame(host.MAC, vmMAC, etherTypeIPv4, fs[f])); err != nil {
				t.Fatal(err)
			}
		}
		testnet.Eventually(t, 2*time.Second, "the later fragments held", func() bool {
			return sw.FragmentStats().HeldFrames == 2
		})
		// The network's rules keep the ingress stage judging when the
		// port's go.
		if err := sw.SetNetworkRules("lan", ruleset(t, `rules: [{action: allow, proto: udp}]`)); err != nil {
			t.Fatal(err)
		}
		defer sw.SetNetworkRules("lan", nil)
		released := sw.FragmentStats().Released
		if err := sw.SetPortRules(ruled.Name, nil); err != nil {
			t.Fatal(err)
		}
		if st := sw.FragmentStats(); st.Released != released || st.HeldFrames != 2 {
			t.Errorf("with the network's rules left: %d frames released, %d held, want 0 and 2", st.Released-released, st.HeldFrames)
		}
		// Without any rules the first fragment passes unjudged: the held
		// ones must not wait for a verdict that never comes. (The host's
		// MAC is not learned, so they are flooded on, and the first tap's
		// egress stage holds its copies until the first fragment.)
		if err := sw.SetNetworkRules("lan", nil); err != nil {
			t.Fatal(err)
		}
		if st := sw.FragmentStats(); st.Released != released+2 {
			t.Errorf("%d frames released when the rules went, want 2", st.Released-released)
		}
		if _, err := ruled.Files[0].Write(ethFrame(host.MAC, vmMAC, etherTypeIPv4, fs[0])); err != nil {
			t.Fatal(err)
		}
		expect(ok, data, "held fragments after the rules went, and the first")
	})
	t.Run("flood beyond the cap", func(t *testing.T) {
		limit := sw.loops[0].filter.tracker.Config().MaxHeldFrames
		// Later fragments whose first never comes: each waits in the
		// tracker until the caps push the oldest out.
		rx := counters(t, sw, tap.Name).RxPackets
		for n := range 3 * limit {
			send(fragment4(vmIP, host.IP, ipProtoUDP, uint16(20000+n), 800, true, make([]byte, 800)))
			if n%32 == 31 {
				// Paced: the tap's fill ring holds a few batches.
				testnet.Eventually(t, 5*time.Second, "the flood taken in", func() bool {
					return counters(t, sw, tap.Name).RxPackets >= rx+uint64(n+1)
				})
			}
		}
		st := sw.FragmentStats()
		if st.HeldFrames > limit || st.HeldFrames == 0 {
			t.Errorf("%d frames held, want some and at most the cap of %d", st.HeldFrames, limit)
		}
		if st.Dropped["over_memory"] < uint64(limit) {
			t.Errorf("drops %v: want the oldest held fragments dropped for room", st.Dropped)
		}
		if _, err := sw.CheckFrames(); err != nil {
			t.Fatal(err)
		}
		// And the switch still forwards fragmented datagrams.
		data := payload(3000, 10)
		fs := cut(vmIP, host.IP, ipProtoUDP, next(), udpDatagram4(9000, data), 1400)
		send(fs[2], fs[1], fs[0])
		expect(ok, data, "allowed after the flood")

		// The rest time out, and their frames come back.
		testnet.Eventually(t, 10*time.Second, "held fragments timed out", func() bool {
			st := sw.FragmentStats()
			return st.HeldFrames == 0 && st.Dropped["timed_out"] > 0
		})
		acct, err := sw.CheckFrames()
		if err != nil || acct[0].Held != 0 {
			t.Fatalf("frames after the timeout: %+v, %v", acct, err)
		}
	})

	r, err := sw.PortRules(tap.Name)
	if err != nil {
		t.Fatal(err)
	}
	if r.Stats[0].Matches == 0 || r.Stats[0].Packets <= r.Stats[0].Matches {
		t.Errorf("rule 0 stats %+v: want lookups and the fragments that followed them", r.Stats[0])
	}
	if r.Ruleset == nil || len(r.Ruleset.Rules) != 2 {
		t.Errorf("port rules %+v", r.Ruleset)
	}
	t.Logf("tracker %+v", sw.FragmentStats())
}

// portID is the switch's number for a port.
func portID(sw *Switch, name string) uint32 {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	return sw.ports[name].ID
}

// TestFollowAfterSwap: a later fragment counts against the rule that
// decided its datagram's first fragment, and against no rule once the
// rules were replaced, whose numbers mean other rules.
func TestFollowAfterSwap(t *testing.T) {
	compile := func() *policy.Classifier {
		c, err := policy.Compile(policy.Ruleset{Rules: []policy.Rule{
			{Action: policy.Allow, Proto: policy.ProtoTCP},
			{Action: policy.Allow, Proto: policy.ProtoUDP},
		}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tbl := policy.NewTable(compile())
	m := tbl.Matcher()
	tag := uint64(ruleTag(m, 1)) << 32 // the network's half
	follow(nil, m, tag, 100)
	m.Flush()
	if rules, _ := tbl.Load().Stats(); rules[1].Packets != 1 || rules[1].Bytes != 100 {
		t.Fatalf("rule 1 counted %+v, want the fragment", rules[1])
	}
	old := tbl.Swap(compile())
	m.Begin()
	follow(nil, m, tag, 100)
	m.Flush()
	if rules, deflt := tbl.Load().Stats(); rules[0].Packets+rules[1].Packets+deflt.Packets != 0 {
		t.Errorf("the new rules counted %+v and %+v (default %+v), want nothing", rules[0], rules[1], deflt)
	}
	if rules, _ := old.Stats(); rules[1].Packets != 1 {
		t.Errorf("the old rule 1 counted %+v, want the one fragment before the swap", rules[1])
	}
}
