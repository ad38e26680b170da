package bench

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
)

// Scenario is what one run measures.
type Scenario struct {
	// Mode is ModePlain (generator → port A → switch → port B → sink),
	// ModeEncap (generator → port A → switch → VXLAN out of the uplink →
	// sink on the remote VTEP) or ModeDecap (remote VTEP's generator →
	// VXLAN into the uplink → switch → port B → sink).
	Mode string
	// Size is the frame size with FCS (64..1518); for VXLAN the inner
	// frame's.
	Size int
	// FDB is how many MACs each side holds (0 or 1: just the two hosts).
	// The sink side's are learned before the run from frames its learner
	// sends; the generator cycles its frames over as many source MACs and
	// over the sink side's MACs as destinations.
	FDB int
	// PortCount is the number of switch ports (2 and more; the ones
	// beyond A and B are idle veth ends).
	PortCount int
	// Rules is how many rules the switch's network has (xdpswitchd only;
	// see ruleLines): none matches, so every frame is looked up in full.
	Rules int
}

// The scenario modes.
const (
	ModePlain = "plain"
	ModeEncap = "vxlan-encap"
	ModeDecap = "vxlan-decap"
)

func (s Scenario) String() string {
	str := fmt.Sprintf("%s %dB", s.Mode, s.Size)
	if s.FDB > 1 {
		str += fmt.Sprintf(" fdb=%d", s.FDB)
	}
	if s.PortCount > 2 {
		str += fmt.Sprintf(" ports=%d", s.PortCount)
	}
	if s.Rules > 0 {
		str += fmt.Sprintf(" rules=%d", s.Rules)
	}
	return str
}

// VXLAN addressing, only ever inside the benchmark's own namespaces.
var (
	localVTEP  = netip.MustParseAddr("10.231.0.1")
	remoteVTEP = netip.MustParseAddr("10.231.0.2")
	hostSrcIP  = netip.MustParseAddr("10.230.0.1")
	hostDstIP  = netip.MustParseAddr("10.230.0.2")
)

const (
	benchVNI  = 42
	vxlanMTU  = 1600
	genDev    = "gen0"
	sinkDev   = "sink0"
	swA       = "swa"
	swB       = "swb"
	uplinkDev = "upl"
	vtepDev   = "vtep"
)

// Topo is the set of namespaces and devices of one run.
//
//	plain:  gen:gen0 ═ sw:swa  [switch]  sw:swb ═ sink:sink0   (+ sw:swiN ═ sw:sipN idle)
//	direct: gen:gen0 ═ sink:sink0                              (generator alone)
//	encap:  gen:gen0 ═ sw:swa  [switch]  sw:upl ═ sink:vtep
//	decap:  gen:vtep ═ sw:upl  [switch]  sw:swb ═ sink:sink0
type Topo struct {
	Scenario
	Gen, Sw, Sink *NS
	// GenDev and SinkDev are where the generator sends and the sink
	// counts.
	GenDev, SinkDev string
	// Ports are the switch's ports in Sw: the two that carry traffic
	// first (for VXLAN only the local one), then the idle ones.
	Ports []string
	// Uplink is the switch's uplink in Sw for VXLAN, "" otherwise.
	Uplink string
	// GenMAC and SinkMAC are the hosts' device addresses; RemoteMAC is the
	// VM behind the remote VTEP (VXLAN), and UplinkMAC/VTEPMAC the
	// underlay's.
	GenMAC, SinkMAC, UplinkMAC, VTEPMAC net.HardwareAddr
	RemoteMAC                           net.HardwareAddr
}

// BuildTopo makes the namespaces and devices. direct joins generator and
// sink without a switch.
func BuildTopo(ctx context.Context, cl *Cleanup, sc Scenario, direct bool) (*Topo, error) {
	t := &Topo{Scenario: sc}
	var err error
	if t.Gen, err = NewNS(ctx, cl, "gen"); err != nil {
		return nil, err
	}
	if t.Sink, err = NewNS(ctx, cl, "sink"); err != nil {
		return nil, err
	}
	if direct {
		if sc.Mode != ModePlain {
			return nil, fmt.Errorf("generator alone: only for plain switching")
		}
		t.GenDev, t.SinkDev = genDev, sinkDev
		if err := Veth(ctx, t.Gen, genDev, t.Sink, sinkDev); err != nil {
			return nil, err
		}
		return t, t.readMACs(ctx)
	}
	if t.Sw, err = NewNS(ctx, cl, "sw"); err != nil {
		return nil, err
	}
	switch sc.Mode {
	case ModePlain:
		t.GenDev, t.SinkDev = genDev, sinkDev
		if err := Veth(ctx, t.Sw, swA, t.Gen, genDev); err != nil {
			return nil, err
		}
		if err := Veth(ctx, t.Sw, swB, t.Sink, sinkDev); err != nil {
			return nil, err
		}
		t.Ports = []string{swA, swB}
	case ModeEncap, ModeDecap:
		local, remote := t.Gen, t.Sink
		localDev, localPort := genDev, swA
		t.GenDev, t.SinkDev = genDev, vtepDev
		if sc.Mode == ModeDecap {
			local, remote = t.Sink, t.Gen
			localDev, localPort = sinkDev, swB
			t.GenDev, t.SinkDev = vtepDev, sinkDev
		}
		if err := Veth(ctx, t.Sw, localPort, local, localDev); err != nil {
			return nil, err
		}
		if err := Veth(ctx, t.Sw, uplinkDev, remote, vtepDev); err != nil {
			return nil, err
		}
		for _, e := range []struct {
			ns   *NS
			dev  string
			addr netip.Addr
		}{{t.Sw, uplinkDev, localVTEP}, {remote, vtepDev, remoteVTEP}} {
			if _, err := e.ns.Run(ctx, "ip", "link", "set", e.dev, "mtu", fmt.Sprint(vxlanMTU)); err != nil {
				return nil, err
			}
			if _, err := e.ns.Run(ctx, "ip", "addr", "add", e.addr.String()+"/24", "dev", e.dev); err != nil {
				return nil, err
			}
		}
		t.Ports = []string{localPort}
		t.Uplink = uplinkDev
	default:
		return nil, fmt.Errorf("unknown mode %q", sc.Mode)
	}
	for i := 2; i < sc.PortCount; i++ {
		p, peer := fmt.Sprintf("swi%d", i), fmt.Sprintf("sip%d", i)
		if err := Veth(ctx, t.Sw, p, t.Sw, peer); err != nil {
			return nil, err
		}
		t.Ports = append(t.Ports, p)
	}
	return t, t.readMACs(ctx)
}

func (t *Topo) readMACs(ctx context.Context) error {
	get := func(ns *NS, dev string) (net.HardwareAddr, error) {
		s, err := ns.MAC(ctx, dev)
		if err != nil {
			return nil, err
		}
		return net.ParseMAC(s)
	}
	var err error
	t.RemoteMAC = net.HardwareAddr{0x02, 0x5b, 0xee, 0, 0, 1}
	switch t.Mode {
	case ModePlain:
		if t.GenMAC, err = get(t.Gen, genDev); err != nil {
			return err
		}
		t.SinkMAC, err = get(t.Sink, sinkDev)
		return err
	case ModeEncap:
		if t.GenMAC, err = get(t.Gen, genDev); err != nil {
			return err
		}
		if t.VTEPMAC, err = get(t.Sink, vtepDev); err != nil {
			return err
		}
		t.UplinkMAC, err = get(t.Sw, uplinkDev)
		return err
	case ModeDecap:
		if t.SinkMAC, err = get(t.Sink, sinkDev); err != nil {
			return err
		}
		if t.VTEPMAC, err = get(t.Gen, vtepDev); err != nil {
			return err
		}
		t.UplinkMAC, err = get(t.Sw, uplinkDev)
		return err
	}
	return nil
}

// PathDevices are the devices whose kernel drop counters count as the
// switch's (or the veths') reported losses: the generator's device (a veth
// that cannot hand a frame to its peer counts it as a tx drop) and every
// switch-side device. The sink's device is left out: its rx_dropped
// counts the sink's own XDP_DROPs.
func (t *Topo) PathDevices() []nsDev {
	devs := []nsDev{{t.Gen, t.GenDev}}
	if t.Sw != nil {
		for _, p := range t.Ports {
			devs = append(devs, nsDev{t.Sw, p})
		}
		if t.Uplink != "" {
			devs = append(devs, nsDev{t.Sw, t.Uplink})
		}
	}
	return devs
}

var debugStats = os.Getenv("XSBENCH_DEBUG") != ""

type nsDev struct {
	ns  *NS
	dev string
}

// deviceDrops sums rx/tx dropped and errors over devs.
func deviceDrops(ctx context.Context, devs []nsDev) (uint64, error) {
	var sum uint64
	for _, d := range devs {
		s, err := d.ns.Stats(ctx, d.dev)
		if err != nil {
			return 0, err
		}
		sum += s.RxDropped + s.TxDropped + s.RxErrors + s.TxErrors
		if debugStats {
			fmt.Fprintf(os.Stderr, "  %s: %+v\n", d.dev, s)
		}
	}
	return sum, nil
}

// GenFrame is the frame the generator sends (before MAC cycling).
func (t *Topo) GenFrame() ([]byte, error) {
	buf := make([]byte, genFrameSize)
	inner := UDPFrame{Dst: t.SinkMAC, Src: t.GenMAC, SrcIP: hostSrcIP, DstIP: hostDstIP,
		SrcPort: benchSport, Port: benchPort, Size: t.Size}
	var n int
	var err error
	switch t.Mode {
	case ModeEncap:
		inner.Dst = t.RemoteMAC
		n, err = inner.Build(buf)
	case ModeDecap:
		inner.Src = t.RemoteMAC
		n, err = VXLANFrame{OuterDst: t.UplinkMAC, OuterSrc: t.VTEPMAC, SrcIP: remoteVTEP, DstIP: localVTEP,
			VNI: benchVNI, Inner: inner}.Build(buf)
	default:
		n, err = inner.Build(buf)
	}
	return buf[:n], err
}

// LearnFrame is what the sink side sends before the run so that the switch
// learns where the destination lives: from the sink (plain, decap) or
// from the remote VM through the tunnel (encap). Its UDP port is not the
// counted one.
func (t *Topo) LearnFrame() (dev string, ns *NS, frame []byte, err error) {
	buf := make([]byte, genFrameSize)
	f := UDPFrame{Dst: t.GenMAC, Src: t.SinkMAC, SrcIP: hostDstIP, DstIP: hostSrcIP,
		SrcPort: benchSport, Port: learnPort, Size: minFrame}
	var n int
	switch t.Mode {
	case ModeEncap:
		f.Src = t.RemoteMAC
		n, err = VXLANFrame{OuterDst: t.UplinkMAC, OuterSrc: t.VTEPMAC, SrcIP: remoteVTEP, DstIP: localVTEP,
			VNI: benchVNI, Inner: f}.Build(buf)
		return vtepDev, t.Sink, buf[:n], err
	case ModeDecap:
		f.Dst = t.RemoteMAC
	}
	n, err = f.Build(buf)
	return sinkDev, t.Sink, buf[:n], err
}

// macPairs are the generator's (destination, source) pairs for an FDB
// run: destination i is the sink side's learned MAC i, source i the
// generator side's MAC i.
func macPairs(n int) [][12]byte {
	pairs := make([][12]byte, n)
	for i := range pairs {
		copy(pairs[i][0:6], benchMAC(0xb0, i))
		copy(pairs[i][6:12], benchMAC(0xa0, i))
	}
	return pairs
}

// learnPairs are the learner's pairs for an FDB run: source i is the
// sink side's MAC i, sent to the generator's own MAC.
func learnPairs(n int, gen net.HardwareAddr) [][12]byte {
	pairs := make([][12]byte, n)
	for i := range pairs {
		copy(pairs[i][0:6], gen)
		copy(pairs[i][6:12], benchMAC(0xb0, i))
	}
	return pairs
}
