package bench

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/xdpswitch/xdpswitch/internal/testnet"
	"github.com/xdpswitch/xdpswitch/policy"
)

// The benchmark's own plumbing, checked for correctness only: the
// generator sends N frames, the sink counts exactly N after a Linux bridge
// and after xdpswitchd. Frames go out in windows no larger than the
// switch's receive buffer, each window waiting for the last to arrive, so
// a count can only differ through a bug, never through load or timing.

const (
	testFrames = 3000
	testWindow = 64 // at most this many frames in flight: below the daemon's 128 fill frames
)

// sendCounted sends n frames in windows and waits for each window to be
// counted, failing after a bounded wait.
func sendCounted(t *testing.T, ctx context.Context, gen *Generator, sink *Sink, n int) {
	t.Helper()
	base, _, err := sink.Count()
	if err != nil {
		t.Fatal(err)
	}
	for sent := 0; sent < n; {
		k := min(testWindow, n-sent)
		got, err := gen.Send(ctx, 0, uint64(k))
		if err != nil {
			t.Fatalf("after %d frames: %v", sent, err)
		}
		if got != uint64(k) {
			t.Fatalf("generator sent %d of %d frames", got, k)
		}
		sent += k
		deadline := time.Now().Add(10 * time.Second)
		for {
			c, _, err := sink.Count()
			if err != nil {
				t.Fatal(err)
			}
			if c-base == uint64(sent) {
				break
			}
			if c-base > uint64(sent) {
				t.Fatalf("sink counted %d frames, %d were sent", c-base, sent)
			}
			if time.Now().After(deadline) {
				t.Fatalf("sink counted %d of %d frames", c-base, sent)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	if off := gen.Offered(); off < uint64(n) {
		t.Fatalf("generator completed %d of %d frames", off, n)
	}
}

// plumb builds the topology, starts cand, learns and returns generator
// and sink; everything is removed when the test ends.
func plumb(t *testing.T, ctx context.Context, env *Env, cand Candidate, sc Scenario) (*Generator, *Sink) {
	t.Helper()
	cl := &Cleanup{}
	t.Cleanup(func() {
		if err := cl.Run(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	topo, err := BuildTopo(ctx, cl, sc, cand.Direct())
	if err != nil {
		t.Fatal(err)
	}
	sink, err := NewSink(benchPort)
	if err != nil {
		t.Fatal(err)
	}
	cl.Push("sink", sink.Close)
	if err := sink.Attach(topo.Sink, topo.SinkDev, cl); err != nil {
		t.Fatal(err)
	}
	if _, err := cand.Start(ctx, topo, env, cl); err != nil {
		t.Fatal(err)
	}
	frame, err := topo.GenFrame()
	if err != nil {
		t.Fatal(err)
	}
	gen, err := NewGenerator(topo.Gen, topo.GenDev, frame)
	if err != nil {
		t.Fatal(err)
	}
	cl.Push("generator", gen.Close)
	if !cand.Direct() {
		if err := learn(ctx, topo, Options{LearnRate: 20000}); err != nil {
			t.Fatal(err)
		}
	}
	if sc.FDB > 1 {
		gen.SetMACs(macPairs(sc.FDB))
	}
	return gen, sink
}

func testEnv(t *testing.T) *Env {
	return &Env{TempDir: t.TempDir(), SwitchCPU: -1, Log: t.Logf}
}

func TestGeneratorSinkDirect(t *testing.T) {
	if !testnet.InNamespace(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	gen, sink := plumb(t, ctx, testEnv(t), GenAlone{}, Scenario{Mode: ModePlain, Size: 64, PortCount: 2})
	sendCounted(t, ctx, gen, sink, testFrames)
}

func TestGeneratorSinkBridge(t *testing.T) {
	if !testnet.InNamespace(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, sc := range []Scenario{
		{Mode: ModePlain, Size: 64, PortCount: 2},
		{Mode: ModePlain, Size: 1518, PortCount: 3},
		{Mode: ModePlain, Size: 64, PortCount: 2, FDB: 100},
	} {
		t.Run(sc.String(), func(t *testing.T) {
			gen, sink := plumb(t, ctx, testEnv(t), Bridge{}, sc)
			sendCounted(t, ctx, gen, sink, testFrames)
		})
	}
}

func TestGeneratorSinkXdpswitchd(t *testing.T) {
	if !testnet.InNamespace(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env := testEnv(t)
	env.Daemon = filepath.Join(env.TempDir, "xdpswitchd")
	out, err := exec.CommandContext(ctx, "go", "build", "-o", env.Daemon, "../cmd/xdpswitchd").CombinedOutput()
	if err != nil {
		t.Fatalf("building xdpswitchd: %v\n%s", err, out)
	}
	for _, sc := range []Scenario{
		{Mode: ModePlain, Size: 64, PortCount: 2},
		{Mode: ModePlain, Size: 1518, PortCount: 3},
		{Mode: ModePlain, Size: 64, PortCount: 2, FDB: 100},
		{Mode: ModePlain, Size: 64, PortCount: 2, Rules: 1000}, // none matches: every frame arrives
	} {
		t.Run(sc.String(), func(t *testing.T) {
			gen, sink := plumb(t, ctx, env, Daemon{}, sc)
			sendCounted(t, ctx, gen, sink, testFrames)
		})
	}
}

// The frame builders' bytes: what the sink's program and the switches
// look at.
func TestFrames(t *testing.T) {
	f := UDPFrame{Dst: benchMAC(1, 2), Src: benchMAC(3, 4), SrcIP: hostSrcIP, DstIP: hostDstIP,
		SrcPort: benchSport, Port: benchPort, Size: 64}
	b := make([]byte, 2048)
	n, err := f.Build(b)
	if err != nil || n != 60 {
		t.Fatalf("64-byte frame: %d bytes, %v", n, err)
	}
	if b[12] != 0x08 || b[13] != 0x00 || b[14] != 0x45 || b[23] != 17 || b[36] != 0 || b[37] != benchPort {
		t.Fatalf("headers: % x", b[:42])
	}
	if ipChecksum(b[14:34]) != 0 {
		t.Fatal("IPv4 checksum does not verify")
	}
	f.Size = 1518
	if n, _ := f.Build(b); n != 1514 {
		t.Fatalf("1518-byte frame: %d bytes", n)
	}
	f.Size = 1519
	if _, err := f.Build(b); err == nil {
		t.Fatal("oversized frame accepted")
	}
	v := VXLANFrame{OuterDst: benchMAC(5, 6), OuterSrc: benchMAC(7, 8), SrcIP: remoteVTEP, DstIP: localVTEP, VNI: benchVNI,
		Inner: UDPFrame{Dst: benchMAC(1, 2), Src: benchMAC(3, 4), SrcIP: hostSrcIP, DstIP: hostDstIP, SrcPort: benchSport, Port: benchPort, Size: 64}}
	n, err = v.Build(b)
	if err != nil || n != 110 {
		t.Fatalf("vxlan frame: %d bytes, %v", n, err)
	}
	if b[36] != vxlanPort>>8 || b[37] != vxlanPort&0xff || b[42] != 0x08 || b[46] != 0 || b[47] != 0 || b[48] != benchVNI {
		t.Fatalf("vxlan headers: % x", b[:60])
	}
	if ipChecksum(b[14:34]) != 0 || ipChecksum(b[64:84]) != 0 {
		t.Fatal("IPv4 checksums do not verify")
	}
}

// TestRuleLines checks the rules scaling runs' rules: valid, as many as
// asked, and none matching the benchmark's frames either way, which the
// default must allow.
func TestRuleLines(t *testing.T) {
	const n = 2000
	c := compileRuleLines(t, n)
	if c.Len() != n {
		t.Fatalf("%d rules, want %d", c.Len(), n)
	}
	for _, p := range benchPackets() {
		if a, r := c.Match(&p); a != policy.Allow || r != -1 {
			t.Errorf("%v -> %v: rule %d (%v) matched, want none", p.SrcAddr(), p.DstAddr(), r, a)
		}
	}
	if !slices.Equal(ruleLines(n), ruleLines(n)) {
		t.Error("the rules differ from one call to the next")
	}
}

// compileRuleLines compiles the rules scaling runs' rules as the daemon
// does: a network's, the default allow.
func compileRuleLines(t testing.TB, n int) *policy.Classifier {
	t.Helper()
	var rs policy.Ruleset
	doc := "default: allow\nrules:\n  - " + strings.Join(ruleLines(n), "\n  - ") + "\n"
	if err := yaml.Unmarshal([]byte(doc), &rs); err != nil {
		t.Fatal(err)
	}
	if err := rs.CheckNetwork(); err != nil {
		t.Fatal(err)
	}
	c, err := policy.Compile(rs)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// benchPackets are what the rules see of the benchmark's frames: the
// generator's, and the sink's that teach the switch its MAC.
func benchPackets() []policy.Packet {
	var ps []policy.Packet
	for _, f := range []struct {
		src, dst     netip.Addr
		sport, dport uint16
	}{{hostSrcIP, hostDstIP, benchSport, benchPort}, {hostDstIP, hostSrcIP, benchSport, learnPort}} {
		p := policy.Packet{Dir: policy.Both, Proto: policy.ProtoUDP, SrcPort: f.sport, DstPort: f.dport}
		p.SetAddrs(f.src, f.dst)
		ps = append(ps, p)
	}
	return ps
}

// BenchmarkRuleLookup is the lookup the rules scaling runs make for every
// frame, alone: the benchmark's flow, among rules crowded around its
// hosts (policy's BenchmarkMatch takes random traffic instead).
func BenchmarkRuleLookup(b *testing.B) {
	for _, n := range []int{1, 100, 1000, 10000} {
		c := compileRuleLines(b, n)
		p := benchPackets()[0]
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			for b.Loop() {
				if _, r := c.Match(&p); r != -1 {
					b.Fatalf("rule %d matched", r)
				}
			}
		})
	}
}
