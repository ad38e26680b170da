package bpf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpswitch/xdpswitch/dataplane/afxdp"
	"github.com/xdpswitch/xdpswitch/internal/testnet"
)

// Hand-built frames for the uplink program. Checksums are filled in where
// the kernel's stack would look at them; the program itself checks none.

const (
	xdpDrop     = 1
	xdpPass     = 2
	xdpRedirect = 4

	protoUDP = 17
	protoTCP = 6
)

var (
	macA = net.HardwareAddr{0x02, 0, 0, 0, 0x93, 0x01}
	macB = net.HardwareAddr{0x02, 0, 0, 0, 0x93, 0x02}
)

func ethFrame(dst, src net.HardwareAddr, etherType uint16, payload []byte) []byte {
	b := make([]byte, 14, 14+len(payload))
	copy(b[0:6], dst)
	copy(b[6:12], src)
	binary.BigEndian.PutUint16(b[12:14], etherType)
	return append(b, payload...)
}

// vlanFrame is ethFrame with one tag of type tpid (0x8100 or 0x88a8).
func vlanFrame(dst, src net.HardwareAddr, tpid, vid, etherType uint16, payload []byte) []byte {
	tag := make([]byte, 4, 4+len(payload))
	binary.BigEndian.PutUint16(tag[0:2], vid)
	binary.BigEndian.PutUint16(tag[2:4], etherType)
	return ethFrame(dst, src, tpid, append(tag, payload...))
}

func csum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

// ipv4Packet builds an IPv4 header with options of optLen bytes (a multiple
// of 4) and a correct checksum; frag is the flags+offset field (0x2000 MF,
// low 13 bits the offset in 8-byte units).
func ipv4Packet(src, dst netip.Addr, proto uint8, id, frag uint16, optLen int, payload []byte) []byte {
	hlen := 20 + optLen
	b := make([]byte, hlen, hlen+len(payload))
	b[0] = 0x40 | byte(hlen/4)
	binary.BigEndian.PutUint16(b[2:4], uint16(hlen+len(payload)))
	binary.BigEndian.PutUint16(b[4:6], id)
	binary.BigEndian.PutUint16(b[6:8], frag)
	b[8] = 64
	b[9] = proto
	s4, d4 := src.As4(), dst.As4()
	copy(b[12:16], s4[:])
	copy(b[16:20], d4[:])
	for i := 20; i < hlen; i++ {
		b[i] = 1 // NOP options
	}
	binary.BigEndian.PutUint16(b[10:12], csum(b[:hlen]))
	return append(b, payload...)
}

func ipv6Packet(src, dst netip.Addr, next uint8, payload []byte) []byte {
	b := make([]byte, 40, 40+len(payload))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:6], uint16(len(payload)))
	b[6] = next
	b[7] = 64
	s16, d16 := src.As16(), dst.As16()
	copy(b[8:24], s16[:])
	copy(b[24:40], d16[:])
	return append(b, payload...)
}

// ipv6Frag is an IPv6 Fragment header followed by payload; offset in bytes.
func ipv6Frag(next uint8, offset int, more bool, id uint32, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	b[0] = next
	fo := uint16(offset) &^ 7
	if more {
		fo |= 1
	}
	binary.BigEndian.PutUint16(b[2:4], fo)
	binary.BigEndian.PutUint32(b[4:8], id)
	return append(b, payload...)
}

// udpDatagram has a zero checksum, which IPv4 allows and the program does
// not check (nor does the kernel for the tunnel ports here).
func udpDatagram(sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:2], sport)
	binary.BigEndian.PutUint16(b[2:4], dport)
	binary.BigEndian.PutUint16(b[4:6], uint16(8+len(payload)))
	return append(b, payload...)
}

func vxlanHeader(vni uint32, inner []byte) []byte {
	b := make([]byte, 8, 8+len(inner))
	b[0] = 0x08
	binary.BigEndian.PutUint32(b[4:8], vni<<8)
	return append(b, inner...)
}

// innerFrame is a 74-byte Ethernet frame with a recognisable payload.
func innerFrame(tag string) []byte {
	payload := make([]byte, 60)
	copy(payload, "inner:"+tag)
	for i := 20; i < len(payload); i++ {
		payload[i] = byte(i)
	}
	return ethFrame(net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}, net.HardwareAddr{0x52, 0x54, 0, 0, 0, 2}, 0x88b5, payload)
}

func clone(b []byte) []byte { return append([]byte(nil), b...) }

// xdpMD is the kernel's struct xdp_md, the context of BPF_PROG_TEST_RUN.
// Out of a run, Data is the length of the metadata and DataEnd that plus
// the length of the frame.
type xdpMD struct {
	Data, DataEnd, DataMeta, IngressIfindex, RxQueueIndex, EgressIfindex uint32
}

type runResult struct {
	verdict uint32
	meta    []byte // the kernel's metadata area after the run
	data    []byte // the frame after the run, a record in front of it if ours
}

func runUplink(t *testing.T, u *Uplink, pkt []byte) runResult {
	t.Helper()
	out := make([]byte, len(pkt)+512)
	var ctx xdpMD
	opts := &ebpf.RunOptions{
		Data:       pkt,
		DataOut:    out,
		Context:    xdpMD{DataEnd: uint32(len(pkt))},
		ContextOut: &ctx,
		Repeat:     1,
	}
	verdict, err := u.Program().Run(opts)
	if err != nil {
		t.Fatalf("run uplink program: %v", err)
	}
	if int(ctx.DataEnd) != len(opts.DataOut) || ctx.Data > ctx.DataEnd {
		t.Fatalf("context out %+v does not fit %d bytes of output", ctx, len(opts.DataOut))
	}
	return runResult{verdict: verdict, meta: opts.DataOut[:ctx.Data], data: opts.DataOut[ctx.Data:]}
}

func statsDelta(t *testing.T, u *Uplink, before map[string]uint64) map[string]uint64 {
	t.Helper()
	now, err := u.Stats()
	if err != nil {
		t.Fatal(err)
	}
	d := map[string]uint64{}
	for k, v := range now {
		if v != before[k] {
			d[k] = v - before[k]
		}
	}
	return d
}

// xdpSocket is an AF_XDP socket, unbound: enough for the XSKMAP, and for
// bpf_redirect_map to answer XDP_REDIRECT in a test run, which only picks
// the target and delivers nothing.
func xdpSocket(t *testing.T) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("AF_XDP socket: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

var (
	vtep4   = netip.MustParseAddr("10.93.1.1")
	vtep6   = netip.MustParseAddr("fd00:93:1::1")
	remote4 = netip.MustParseAddr("10.93.1.2")
	remote6 = netip.MustParseAddr("fd00:93:1::2")
	other4  = netip.MustParseAddr("10.93.1.99")
	other6  = netip.MustParseAddr("fd00:93:1::99")
)

func testUplinkConfig() UplinkConfig {
	return UplinkConfig{
		Local: []netip.Addr{vtep4, vtep6},
		VNIs:  map[uint32]uint32{100: 7, 0xabcdef: 9},
	}
}

func loadTestUplink(t *testing.T, cfg UplinkConfig) *Uplink {
	t.Helper()
	u, err := LoadUplinkProgram(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := u.Close(); err != nil {
			t.Error(err)
		}
	})
	return u
}

// vx4 is a good VXLAN frame over IPv4 from remote4 to vtep4.
func vx4(vni uint32, inner []byte) []byte {
	return ethFrame(macA, macB, 0x0800, ipv4Packet(remote4, vtep4, protoUDP, 1, 0, 0,
		udpDatagram(49152, 4789, vxlanHeader(vni, inner))))
}

// vx6 is a good VXLAN frame over IPv6 from remote6 to vtep6.
func vx6(vni uint32, inner []byte) []byte {
	return ethFrame(macA, macB, 0x86dd, ipv6Packet(remote6, vtep6, protoUDP,
		udpDatagram(50000, 4789, vxlanHeader(vni, inner))))
}

// mutate returns a copy of pkt changed by f.
func mutate(pkt []byte, f func(b []byte)) []byte {
	b := clone(pkt)
	f(b)
	return b
}

type outcome int

const (
	untouched outcome = iota // XDP_PASS, the frame as it came, no metadata
	decapped                 // XDP_REDIRECT, the inner frame after a record
	rawFrag                  // XDP_REDIRECT, the frame as it came after a record
)

type uplinkCase struct {
	name string
	pkt  []byte
	out  outcome
	stat string
	// for decapped and rawFrag
	inner []byte
	meta  UplinkMeta
}

func checkCase(t *testing.T, u *Uplink, c uplinkCase) {
	t.Helper()
	before, err := u.Stats()
	if err != nil {
		t.Fatal(err)
	}
	r := runUplink(t, u, c.pkt)
	if d := statsDelta(t, u, before); len(d) != 1 || d[c.stat] != 1 {
		t.Errorf("counters moved by %v, want %s +1", d, c.stat)
	}
	switch c.out {
	case untouched:
		if r.verdict != xdpPass {
			t.Errorf("verdict %d, want XDP_PASS", r.verdict)
		}
		if len(r.meta) != 0 {
			t.Errorf("%d bytes of metadata on a passed frame", len(r.meta))
		}
		if !bytes.Equal(r.data, c.pkt) {
			t.Errorf("passed frame changed:\n got %x\nwant %x", r.data, c.pkt)
		}
		return
	case decapped:
		if len(r.data) < UplinkMetaSize || !bytes.Equal(r.data[UplinkMetaSize:], c.inner) {
			t.Errorf("decapsulated frame after the record:\n got %x\nwant %x", r.data, c.inner)
		}
	case rawFrag:
		if len(r.data) < UplinkMetaSize || !bytes.Equal(r.data[UplinkMetaSize:], c.pkt) {
			t.Errorf("raw fragment after the record changed:\n got %x\nwant %x", r.data, c.pkt)
		}
	}
	if r.verdict != xdpRedirect {
		t.Errorf("verdict %d, want XDP_REDIRECT", r.verdict)
	}
	if len(r.meta) != 0 {
		t.Errorf("%d bytes in the kernel's metadata area, want none", len(r.meta))
	}
	if len(r.data) < UplinkMetaSize {
		t.Fatalf("%d bytes out, too short for a record", len(r.data))
	}
	m, err := ParseUplinkMeta(r.data[:UplinkMetaSize])
	if err != nil {
		t.Fatalf("record %x: %v", r.data[:UplinkMetaSize], err)
	}
	if m != c.meta {
		t.Errorf("record %+v, want %+v", m, c.meta)
	}
}

func metaFor(src netip.Addr, sport uint16, vni, network uint32, flags uint8) UplinkMeta {
	return UplinkMeta{
		Version: 1, Flags: flags, OuterSrcPort: sport, VNI: vni, Network: network, OuterSrc: src,
		OuterIPv6:   flags&UplinkMetaOuterIPv6 != 0,
		OuterVLAN:   flags&UplinkMetaOuterVLAN != 0,
		RawFragment: flags&UplinkMetaRawFragment != 0,
	}
}

// TestUplinkVerdicts runs the uplink program on hand-built frames with
// BPF_PROG_TEST_RUN. A socket sits in the XSKMAP so that bpf_redirect_map
// answers XDP_REDIRECT; the output shows whether the frame was stripped
// (the inner frame after a metadata record) or left alone.
func TestUplinkVerdicts(t *testing.T) {
	testnet.RequireRoot(t)
	u := loadTestUplink(t, testUplinkConfig())
	if err := u.Register(0, xdpSocket(t)); err != nil {
		t.Fatal(err)
	}

	in := innerFrame("a")
	good4 := vx4(100, in)
	good6 := vx6(0xabcdef, in)
	meta4 := metaFor(remote4, 49152, 100, 7, 0)
	meta6 := metaFor(remote6, 50000, 0xabcdef, 9, UplinkMetaOuterIPv6)
	const (
		ipOff  = 14
		udpOff = ipOff + 20
		vxOff  = udpOff + 8
	)
	udpv4 := func(b []byte) []byte { return b[udpOff:] }

	// Frames whose headers were cut short, but whose lengths say so
	// consistently: at each header boundary.
	consistent := func(l4 []byte) []byte {
		return ethFrame(macA, macB, 0x0800, ipv4Packet(remote4, vtep4, protoUDP, 1, 0, 0, l4))
	}
	udpOnly := udpDatagram(49152, 4789, nil)
	vxOnly := udpDatagram(49152, 4789, vxlanHeader(100, nil))
	short := udpDatagram(49152, 4789, vxlanHeader(100, in[:13]))

	cases := []uplinkCase{
		{name: "vxlan over ipv4", pkt: good4, out: decapped, stat: "decap_v4", inner: in, meta: meta4},
		{name: "vxlan over ipv6", pkt: good6, out: decapped, stat: "decap_v6", inner: in, meta: meta6},
		{name: "802.1Q tagged, ipv4", pkt: vlanFrame(macA, macB, 0x8100, 42, 0x0800, good4[ipOff:]),
			out: decapped, stat: "decap_v4", inner: in, meta: metaFor(remote4, 49152, 100, 7, UplinkMetaOuterVLAN)},
		{name: "802.1ad tagged, ipv6", pkt: vlanFrame(macA, macB, 0x88a8, 42, 0x86dd, good6[ipOff:]),
			out: decapped, stat: "decap_v6", inner: in, meta: metaFor(remote6, 50000, 0xabcdef, 9, UplinkMetaOuterIPv6|UplinkMetaOuterVLAN)},
		{name: "ipv4 with options", pkt: ethFrame(macA, macB, 0x0800, ipv4Packet(remote4, vtep4, protoUDP, 1, 0, 8, udpv4(good4))),
			out: decapped, stat: "decap_v4", inner: in, meta: meta4},
		{name: "ipv6 atomic fragment", pkt: ethFrame(macA, macB, 0x86dd, ipv6Packet(remote6, vtep6, 44, ipv6Frag(protoUDP, 0, false, 77, good6[14+40:]))),
			out: decapped, stat: "decap_v6", inner: in, meta: meta6},
		{name: "padding after the ip packet is trimmed", pkt: append(clone(good4), make([]byte, 10)...),
			out: decapped, stat: "decap_v4", inner: in, meta: meta4},
		{name: "udp length shorter than the ip payload", pkt: mutate(good4, func(b []byte) {
			binary.BigEndian.PutUint16(b[udpOff+4:], uint16(8+8+60))
		}), out: decapped, stat: "decap_v4", inner: in[:60], meta: meta4},
		{name: "inner frame of exactly 14 bytes", pkt: vx4(100, in[:14]), out: decapped, stat: "decap_v4", inner: in[:14], meta: meta4},

		{name: "unknown vni", pkt: vx4(101, in), out: untouched, stat: "pass_unknown_vni"},
		{name: "ipv6 unknown vni", pkt: vx6(100<<1, in), out: untouched, stat: "pass_unknown_vni"},
		{name: "not a local address", pkt: ethFrame(macA, macB, 0x0800, ipv4Packet(remote4, other4, protoUDP, 1, 0, 0, udpv4(good4))),
			out: untouched, stat: "pass_not_local"},
		{name: "ipv6 not a local address", pkt: ethFrame(macA, macB, 0x86dd, ipv6Packet(remote6, other6, protoUDP, good6[14+40:])),
			out: untouched, stat: "pass_not_local"},
		{name: "another udp port", pkt: mutate(good4, func(b []byte) { binary.BigEndian.PutUint16(b[udpOff+2:], 4790) }),
			out: untouched, stat: "pass_not_vxlan"},
		{name: "tcp to a local address", pkt: ethFrame(macA, macB, 0x0800, ipv4Packet(remote4, vtep4, protoTCP, 1, 0, 0, udpv4(good4))),
			out: untouched, stat: "pass_not_vxlan"},
		{name: "arp", pkt: ethFrame(macA, macB, 0x0806, make([]byte, 28)), out: untouched, stat: "pass_not_vxlan"},
		{name: "two vlan tags", pkt: vlanFrame(macA, macB, 0x88a8, 1, 0x8100, append([]byte{0, 2, 0x08, 0x00}, good4[ipOff:]...)),
			out: untouched, stat: "pass_not_vxlan"},
		{name: "ipv6 extension header before udp", pkt: ethFrame(macA, macB, 0x86dd, ipv6Packet(remote6, vtep6, 60, append([]byte{protoUDP, 0, 1, 4, 0, 0, 0, 0}, good6[14+40:]...))),
			out: untouched, stat: "pass_not_vxlan"},

		{name: "vxlan I flag clear", pkt: mutate(good4, func(b []byte) { b[vxOff] = 0 }), out: untouched, stat: "pass_malformed"},
		// What the host's stack would refuse is not decapsulated past it.
		{name: "ipv4 header checksum wrong", pkt: mutate(good4, func(b []byte) { b[ipOff+10] ^= 1 }), out: untouched, stat: "pass_malformed"},
		{name: "ipv4 multicast source", pkt: ethFrame(macA, macB, 0x0800, ipv4Packet(netip.MustParseAddr("224.0.0.5"), vtep4, protoUDP, 1, 0, 0, udpv4(good4))),
			out: untouched, stat: "pass_malformed"},
		{name: "ipv4 broadcast source", pkt: ethFrame(macA, macB, 0x0800, ipv4Packet(netip.MustParseAddr("255.255.255.255"), vtep4, protoUDP, 1, 0, 0, udpv4(good4))),
			out: untouched, stat: "pass_malformed"},
		{name: "ipv6 multicast source", pkt: ethFrame(macA, macB, 0x86dd, ipv6Packet(netip.MustParseAddr("ff02::1"), vtep6, protoUDP, good6[14+40:])),
			out: untouched, stat: "pass_malformed"},
		{name: "ipv6 unspecified source", pkt: ethFrame(macA, macB, 0x86dd, ipv6Packet(netip.IPv6Unspecified(), vtep6, protoUDP, good6[14+40:])),
			out: untouched, stat: "pass_malformed"},
		{name: "ipv6 to the ipv4 vtep, v4-mapped", pkt: ethFrame(macA, macB, 0x86dd, ipv6Packet(remote6, netip.AddrFrom16(vtep4.As16()), protoUDP, good6[14+40:])),
			out: untouched, stat: "pass_malformed"},
		{name: "vxlan reserved flag bit", pkt: mutate(good4, func(b []byte) { b[vxOff] = 0x0c }), out: untouched, stat: "pass_malformed"},
		{name: "vxlan reserved 24 bits", pkt: mutate(good4, func(b []byte) { b[vxOff+2] = 1 }), out: untouched, stat: "pass_malformed"},
		{name: "vxlan reserved last byte", pkt: mutate(good4, func(b []byte) { b[vxOff+7] = 1 }), out: untouched, stat: "pass_malformed"},
		{name: "inner frame of 13 bytes", pkt: consistent(short), out: untouched, stat: "pass_malformed"},
		{name: "udp length beyond the ip payload", pkt: mutate(good4, func(b []byte) {
			binary.BigEndian.PutUint16(b[udpOff+4:], uint16(len(b)-udpOff+1))
		}), out: untouched, stat: "pass_malformed"},
		{name: "udp length below its header", pkt: mutate(good4, func(b []byte) { binary.BigEndian.PutUint16(b[udpOff+4:], 4) }),
			out: untouched, stat: "pass_malformed"},
		{name: "ipv4 ihl 4", pkt: mutate(good4, func(b []byte) { b[ipOff] = 0x44 }), out: untouched, stat: "pass_malformed"},
		{name: "ipv4 version 6", pkt: mutate(good4, func(b []byte) { b[ipOff] = 0x65 }), out: untouched, stat: "pass_malformed"},
		{name: "ipv4 total length beyond the frame", pkt: mutate(good4, func(b []byte) {
			binary.BigEndian.PutUint16(b[ipOff+2:], uint16(len(b)-ipOff+1))
		}), out: untouched, stat: "pass_malformed"},
		{name: "ipv4 total length below the header", pkt: mutate(good4, func(b []byte) { binary.BigEndian.PutUint16(b[ipOff+2:], 19) }),
			out: untouched, stat: "pass_malformed"},
		{name: "ipv6 payload length beyond the frame", pkt: mutate(good6, func(b []byte) {
			binary.BigEndian.PutUint16(b[ipOff+4:], uint16(len(b)-ipOff-40+1))
		}), out: untouched, stat: "pass_malformed"},
		{name: "ipv6 payload length 0", pkt: mutate(good6, func(b []byte) { binary.BigEndian.PutUint16(b[ipOff+4:], 0) }),
			out: untouched, stat: "pass_malformed"},
		{name: "ipv6 version 4", pkt: mutate(good6, func(b []byte) { b[ipOff] = 0x40 }), out: untouched, stat: "pass_malformed"},
		{name: "vlan tag cut short", pkt: append(ethFrame(macA, macB, 0x8100, nil), 0, 42), out: untouched, stat: "pass_malformed"},
		{name: "consistent: udp header cut short", pkt: consistent(udpOnly[:4]), out: untouched, stat: "pass_malformed"},
		{name: "consistent: udp header, no vxlan", pkt: consistent(udpOnly), out: untouched, stat: "pass_malformed"},
		{name: "consistent: vxlan header cut short", pkt: consistent(udpDatagram(49152, 4789, vxlanHeader(100, nil)[:4])), out: untouched, stat: "pass_malformed"},
		{name: "consistent: vxlan header, no inner frame", pkt: consistent(vxOnly), out: untouched, stat: "pass_malformed"},
	}
	// Truncated frames, their lengths still those of the whole: cut at
	// every header boundary of a good frame (and in the middle of each).
	for _, n := range []int{14, 14 + 10, udpOff, udpOff + 4, vxOff, vxOff + 4, vxOff + 8, vxOff + 8 + 13} {
		cases = append(cases, uplinkCase{name: fmt.Sprintf("ipv4 frame cut at %d", n), pkt: clone(good4[:n]), out: untouched, stat: "pass_malformed"})
	}
	for _, n := range []int{14, 14 + 20, 14 + 40, 14 + 40 + 8, 14 + 40 + 16, 14 + 40 + 16 + 13} {
		cases = append(cases, uplinkCase{name: fmt.Sprintf("ipv6 frame cut at %d", n), pkt: clone(good6[:n]), out: untouched, stat: "pass_malformed"})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { checkCase(t, u, c) })
	}

	parent := t
	// No socket on the queue: VXLAN goes to the host as it came, not
	// stripped (the host would take the inner frame for its own).
	t.Run("no socket", func(t *testing.T) {
		if err := u.Unregister(0); err != nil {
			t.Fatal(err)
		}
		// The socket must outlive the subtest: closing it empties its
		// XSKMAP slot.
		fd := xdpSocket(parent)
		defer func() {
			if err := u.Register(0, fd); err != nil {
				t.Fatal(err)
			}
		}()
		checkCase(t, u, uplinkCase{pkt: good4, out: untouched, stat: "pass_no_socket"})
		checkCase(t, u, uplinkCase{pkt: good6, out: untouched, stat: "pass_no_socket"})
	})

	// VNIs come and go at run time.
	t.Run("set and delete vni", func(t *testing.T) {
		if err := u.SetVNI(101, 11); err != nil {
			t.Fatal(err)
		}
		checkCase(t, u, uplinkCase{pkt: vx4(101, in), out: decapped, stat: "decap_v4", inner: in, meta: metaFor(remote4, 49152, 101, 11, 0)})
		if err := u.DeleteVNI(101); err != nil {
			t.Fatal(err)
		}
		if err := u.DeleteVNI(101); err != nil {
			t.Errorf("deleting an absent VNI: %v", err)
		}
		checkCase(t, u, uplinkCase{pkt: vx4(101, in), out: untouched, stat: "pass_unknown_vni"})
		if err := u.SetVNI(1<<24, 1); err == nil {
			t.Error("VNI beyond 24 bits accepted")
		}
	})
}

// frag4 is an outer IPv4 fragment from src to dst: frag is the flags and
// offset field.
func frag4(src, dst netip.Addr, id, frag uint16, payload []byte) []byte {
	return ethFrame(macA, macB, 0x0800, ipv4Packet(src, dst, protoUDP, id, frag, 0, payload))
}

func frag6(src, dst netip.Addr, id uint32, offset int, more bool, payload []byte) []byte {
	return ethFrame(macA, macB, 0x86dd, ipv6Packet(src, dst, 44, ipv6Frag(protoUDP, offset, more, id, payload)))
}

// TestUplinkFragments: the first fragment of a VXLAN datagram and the later
// fragments that follow it go to the socket raw; later fragments without a
// VXLAN first fragment go to the host.
func TestUplinkFragments(t *testing.T) {
	testnet.RequireRoot(t)
	u := loadTestUplink(t, testUplinkConfig())
	if err := u.Register(0, xdpSocket(t)); err != nil {
		t.Fatal(err)
	}
	// A VXLAN datagram of 8+8+74 bytes in two fragments: 48 bytes, then 42.
	dgram := udpDatagram(40000, 4789, vxlanHeader(100, innerFrame("frag")))
	unknown := udpDatagram(40000, 4789, vxlanHeader(101, innerFrame("frag")))
	gbp := slices.Clone(dgram)
	gbp[8] |= 0x80                                // the G flag of group-based policy
	badSum := func(b []byte) { b[14+10] ^= 0x01 } // the outer IPv4 header checksum
	first4 := func(id uint16) []byte { return frag4(remote4, vtep4, id, 0x2000, dgram[:48]) }
	later4 := func(id uint16) []byte { return frag4(remote4, vtep4, id, 48/8, dgram[48:]) }
	raw4first := metaFor(remote4, 40000, 0, 0, UplinkMetaRawFragment)
	raw4later := metaFor(remote4, 0, 0, 0, UplinkMetaRawFragment)
	first6 := func(id uint32) []byte { return frag6(remote6, vtep6, id, 0, true, dgram[:48]) }
	later6 := func(id uint32) []byte { return frag6(remote6, vtep6, id, 48, false, dgram[48:]) }
	raw6first := metaFor(remote6, 40000, 0, 0, UplinkMetaRawFragment|UplinkMetaOuterIPv6)
	raw6later := metaFor(remote6, 0, 0, 0, UplinkMetaRawFragment|UplinkMetaOuterIPv6)

	steps := []uplinkCase{
		{name: "later fragment before its first", pkt: later4(1), out: untouched, stat: "frag_passed"},
		{name: "first fragment of vxlan", pkt: first4(2), out: rawFrag, stat: "frag_redirected", meta: raw4first},
		{name: "later fragment after its first", pkt: later4(2), out: rawFrag, stat: "frag_redirected", meta: raw4later},
		{name: "a middle fragment after the last", pkt: frag4(remote4, vtep4, 2, 0x2000|3, dgram[24:48]), out: rawFrag, stat: "frag_redirected", meta: raw4later},
		{name: "same id, other source", pkt: frag4(other4, vtep4, 2, 48/8, dgram[48:]), out: untouched, stat: "frag_passed"},
		{name: "fragment to another address", pkt: frag4(remote4, other4, 2, 48/8, dgram[48:]), out: untouched, stat: "pass_not_local"},
		{name: "first fragment to another address", pkt: frag4(remote4, other4, 3, 0x2000, dgram[:48]), out: untouched, stat: "pass_not_local"},
		{name: "first fragment of another port", pkt: frag4(remote4, vtep4, 4, 0x2000, udpDatagram(40000, 53, make([]byte, 40))), out: untouched, stat: "pass_not_vxlan"},
		{name: "its later fragment", pkt: later4(4), out: untouched, stat: "frag_passed"},
		// The id is used again, now for a datagram to a host service:
		// its first fragment erases the record of the VXLAN one.
		{name: "id reused by host traffic", pkt: frag4(remote4, vtep4, 2, 0x2000, udpDatagram(40000, 53, make([]byte, 40))), out: untouched, stat: "pass_not_vxlan"},
		{name: "later fragment of the reused id", pkt: later4(2), out: untouched, stat: "frag_passed"},

		{name: "ipv6 later fragment before its first", pkt: later6(1), out: untouched, stat: "frag_passed"},
		{name: "ipv6 first fragment of vxlan", pkt: first6(2), out: rawFrag, stat: "frag_redirected", meta: raw6first},
		{name: "ipv6 later fragment after its first", pkt: later6(2), out: rawFrag, stat: "frag_redirected", meta: raw6later},
		{name: "ipv6 other identification", pkt: later6(3), out: untouched, stat: "frag_passed"},
		{name: "ipv6 first fragment, tagged", pkt: vlanFrame(macA, macB, 0x8100, 5, 0x86dd, first6(5)[14:]), out: rawFrag, stat: "frag_redirected",
			meta: metaFor(remote6, 40000, 0, 0, UplinkMetaRawFragment|UplinkMetaOuterIPv6|UplinkMetaOuterVLAN)},
		{name: "ipv6 later fragment, tagged", pkt: vlanFrame(macA, macB, 0x8100, 5, 0x86dd, later6(5)[14:]), out: rawFrag, stat: "frag_redirected",
			meta: metaFor(remote6, 0, 0, 0, UplinkMetaRawFragment|UplinkMetaOuterIPv6|UplinkMetaOuterVLAN)},
		{name: "ipv4 first fragment cut inside the udp header", pkt: frag4(remote4, vtep4, 6, 0x2000, dgram[:4]), out: untouched, stat: "pass_malformed"},
		// VXLAN the switch does not serve goes to the host whole or in
		// fragments alike, every fragment of it.
		{name: "first fragment of an unknown vni", pkt: frag4(remote4, vtep4, 10, 0x2000, unknown[:48]), out: untouched, stat: "pass_unknown_vni"},
		{name: "its later fragment", pkt: later4(10), out: untouched, stat: "frag_passed"},
		{name: "first fragment with flags not ours", pkt: frag4(remote4, vtep4, 11, 0x2000, gbp[:48]), out: untouched, stat: "pass_malformed"},
		{name: "ipv6 first fragment of an unknown vni", pkt: frag6(remote6, vtep6, 12, 0, true, unknown[:48]), out: untouched, stat: "pass_unknown_vni"},
		// Outer headers the host would refuse: the fragment goes to it.
		{name: "first fragment, bad header checksum", pkt: mutate(first4(13), badSum), out: untouched, stat: "pass_malformed"},
		{name: "its later fragment", pkt: later4(13), out: untouched, stat: "frag_passed"},
		{name: "first fragment of vxlan again", pkt: first4(14), out: rawFrag, stat: "frag_redirected", meta: raw4first},
		{name: "later fragment, bad header checksum", pkt: mutate(later4(14), badSum), out: untouched, stat: "pass_malformed"},
		{name: "first fragment from a multicast source", pkt: frag4(netip.MustParseAddr("224.0.0.9"), vtep4, 15, 0x2000, dgram[:48]), out: untouched, stat: "pass_malformed"},
	}
	for _, c := range steps {
		t.Run(c.name, func(t *testing.T) { checkCase(t, u, c) })
	}
	parent := t

	// Without a socket a first fragment is not recorded, so its later
	// fragments go to the host too: all or nothing.
	t.Run("no socket", func(t *testing.T) {
		if err := u.Unregister(0); err != nil {
			t.Fatal(err)
		}
		checkCase(t, u, uplinkCase{pkt: first4(7), out: untouched, stat: "pass_no_socket"})
		if err := u.Register(0, xdpSocket(parent)); err != nil {
			t.Fatal(err)
		}
		checkCase(t, u, uplinkCase{pkt: later4(7), out: untouched, stat: "frag_passed"})
	})

	// Records expire after the fragment timeout.
	t.Run("timeout", func(t *testing.T) {
		cfg := testUplinkConfig()
		cfg.FragTimeout = time.Millisecond
		v := loadTestUplink(t, cfg)
		if err := v.Register(0, xdpSocket(t)); err != nil {
			t.Fatal(err)
		}
		checkCase(t, v, uplinkCase{pkt: first4(8), out: rawFrag, stat: "frag_redirected", meta: raw4first})
		time.Sleep(5 * time.Millisecond)
		checkCase(t, v, uplinkCase{pkt: later4(8), out: untouched, stat: "frag_passed"})
	})
}

// TestUplinkVXLANPort: the port is set at load.
func TestUplinkVXLANPort(t *testing.T) {
	testnet.RequireRoot(t)
	cfg := testUplinkConfig()
	cfg.VXLANPort = 8472
	u := loadTestUplink(t, cfg)
	if err := u.Register(0, xdpSocket(t)); err != nil {
		t.Fatal(err)
	}
	in := innerFrame("port")
	checkCase(t, u, uplinkCase{pkt: vx4(100, in), out: untouched, stat: "pass_not_vxlan"})
	pkt := ethFrame(macA, macB, 0x0800, ipv4Packet(remote4, vtep4, protoUDP, 1, 0, 0, udpDatagram(1234, 8472, vxlanHeader(100, in))))
	checkCase(t, u, uplinkCase{pkt: pkt, out: decapped, stat: "decap_v4", inner: in, meta: metaFor(remote4, 1234, 100, 7, 0)})
}

func TestLoadUplinkProgramErrors(t *testing.T) {
	testnet.RequireRoot(t)
	cases := []struct {
		name string
		cfg  UplinkConfig
		want string
	}{
		{"no local address", UplinkConfig{}, "no local VTEP address"},
		{"invalid address", UplinkConfig{Local: []netip.Addr{{}}}, "not a usable address"},
		{"unspecified address", UplinkConfig{Local: []netip.Addr{netip.IPv6Unspecified()}}, "not a usable address"},
		{"vni too big", UplinkConfig{Local: []netip.Addr{vtep4}, VNIs: map[uint32]uint32{1 << 24: 1}}, "24 bits"},
		{"negative timeout", UplinkConfig{Local: []netip.Addr{vtep4}, FragTimeout: -time.Second}, "negative fragment timeout"},
	}
	for _, c := range cases {
		u, err := LoadUplinkProgram(c.cfg)
		if err == nil {
			u.Close()
			t.Errorf("%s: loaded", c.name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q, want it to say %q", c.name, err, c.want)
		}
	}
	u := loadTestUplink(t, testUplinkConfig())
	if err := u.Register(MaxQueues, 3); err == nil {
		t.Error("register beyond MaxQueues accepted")
	}
	if err := u.Unregister(0); err != nil {
		t.Errorf("unregister an empty queue: %v", err)
	}
	if u.Mode() != XDPModeAuto {
		t.Errorf("a loaded, unattached program reports mode %v", u.Mode())
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	if err := u.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}

func TestParseUplinkMeta(t *testing.T) {
	good := make([]byte, UplinkMetaSize)
	good[0] = 1
	good[1] = UplinkMetaOuterVLAN
	binary.BigEndian.PutUint16(good[2:], 4242)
	binary.NativeEndian.PutUint32(good[4:], 0x123456)
	binary.NativeEndian.PutUint32(good[8:], 77)
	src := netip.MustParseAddr("192.0.2.7").As16()
	copy(good[16:], src[:])
	m, err := ParseUplinkMeta(good)
	if err != nil {
		t.Fatal(err)
	}
	want := UplinkMeta{Version: 1, Flags: UplinkMetaOuterVLAN, OuterSrcPort: 4242, VNI: 0x123456, Network: 77,
		OuterSrc: netip.MustParseAddr("192.0.2.7"), OuterVLAN: true}
	if m != want {
		t.Errorf("got %+v, want %+v", m, want)
	}
	v6 := mutate(good, func(b []byte) {
		b[1] = UplinkMetaOuterIPv6
		a := netip.MustParseAddr("2001:db8::7").As16()
		copy(b[16:], a[:])
	})
	if m, err := ParseUplinkMeta(v6); err != nil || m.OuterSrc != netip.MustParseAddr("2001:db8::7") || !m.OuterIPv6 {
		t.Errorf("ipv6: %+v, %v", m, err)
	}

	bad := map[string][]byte{
		"short":               good[:31],
		"long":                append(clone(good), 0),
		"version 0":           mutate(good, func(b []byte) { b[0] = 0 }),
		"version 2":           mutate(good, func(b []byte) { b[0] = 2 }),
		"unknown flag":        mutate(good, func(b []byte) { b[1] |= 0x80 }),
		"reserved set":        mutate(good, func(b []byte) { b[13] = 1 }),
		"vni beyond 24 bits":  mutate(good, func(b []byte) { binary.NativeEndian.PutUint32(b[4:], 1<<24) }),
		"raw fragment vni":    mutate(good, func(b []byte) { b[1] |= UplinkMetaRawFragment }),
		"ipv4 not v4-mapped":  mutate(good, func(b []byte) { b[26] = 1 }),
		"all zero":            make([]byte, UplinkMetaSize),
		"ipv4 address is v6 ": mutate(good, func(b []byte) { copy(b[16:], netip.MustParseAddr("2001:db8::1").AsSlice()) }),
	}
	for name, b := range bad {
		if m, err := ParseUplinkMeta(b); err == nil {
			t.Errorf("%s: parsed as %+v", name, m)
		}
	}
}

func FuzzParseUplinkMeta(f *testing.F) {
	good := make([]byte, UplinkMetaSize)
	good[0] = 1
	copy(good[16:], []byte{10: 0xff, 11: 0xff, 12: 10, 13: 0, 14: 0, 15: 1})
	f.Add(good)
	f.Add(make([]byte, UplinkMetaSize))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseUplinkMeta(b)
		if err != nil {
			return
		}
		if len(b) != UplinkMetaSize || m.Version != UplinkMetaVersion || m.VNI > MaxVNI {
			t.Fatalf("accepted %x as %+v", b, m)
		}
		if m.OuterIPv6 != (m.Flags&UplinkMetaOuterIPv6 != 0) || m.OuterSrc.Is4() == m.OuterIPv6 {
			t.Fatalf("inconsistent %+v", m)
		}
		if m.RawFragment && (m.VNI != 0 || m.Network != 0) {
			t.Fatalf("raw fragment with a VNI: %+v", m)
		}
	})
}

// TestUplinkAttached attaches the uplink program to a veth end that carries
// the host's addresses and binds an AF_XDP socket on it: VXLAN for a
// configured VNI arrives on the socket stripped and tagged, outer fragments
// arrive raw, and the host keeps using the device (ping, TCP).
func TestUplinkAttached(t *testing.T) {
	if !testnet.InNamespace(t) {
		return
	}
	// The test's namespace is the host; h is the peer on the wire.
	h := testnet.NewHost(t, "10.93.0.2/24")
	testnet.Run(t, "ip", "addr", "add", "10.93.0.1/24", "dev", h.Port)
	testnet.Run(t, "ip", "addr", "add", "fd00:93::1/64", "dev", h.Port, "nodad")
	ifi, err := net.InterfaceByName(h.Port)
	if err != nil {
		t.Fatal(err)
	}
	local4 := netip.MustParseAddr("10.93.0.1")
	local6 := netip.MustParseAddr("fd00:93::1")
	peer4 := netip.MustParseAddr("10.93.0.2")
	peer6 := netip.MustParseAddr("fd00:93::2")

	u, err := AttachUplink(ifi.Index, XDPModeDriver, UplinkConfig{
		Local: []netip.Addr{local4, local6},
		VNIs:  map[uint32]uint32{5000: 3},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := u.Close(); err != nil {
			t.Error(err)
		}
	})
	if u.Mode() != XDPModeDriver {
		t.Errorf("mode %v, want native", u.Mode())
	}
	if _, err := AttachUplink(ifi.Index, XDPModeAuto, UplinkConfig{Local: []netip.Addr{local4}}); !errors.Is(err, ErrDeviceBusy) {
		t.Errorf("second attach: %v, want ErrDeviceBusy", err)
	}

	umem, err := afxdp.NewUmem(afxdp.UmemConfig{NumFrames: 128, FrameSize: 2048, FillRingSize: 64, CompletionRingSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := umem.Close(); err != nil {
			t.Error(err)
		}
	})
	sock, err := umem.NewSocket(afxdp.SocketConfig{Ifindex: ifi.Index, Queue: 0, Mode: afxdp.ModeCopy, RxRingSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })
	fill := make([]uint64, 64)
	for i := range fill {
		fill[i] = umem.FrameAddr(i)
	}
	if n := sock.Fill(fill); n != len(fill) {
		t.Fatalf("fill ring took %d of %d frames", n, len(fill))
	}
	if err := u.Register(0, sock.Fd()); err != nil {
		t.Fatal(err)
	}

	// Frames from the peer are injected on its eth0 with a packet socket.
	var eth0 int
	pfd := -1
	err = h.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		eth0 = ifi.Index
		pfd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if pfd >= 0 {
		t.Cleanup(func() { unix.Close(pfd) })
	}
	if err != nil {
		t.Fatalf("packet socket in %s: %v", h.Name, err)
	}
	send := func(frame []byte) {
		t.Helper()
		proto := binary.BigEndian.Uint16(frame[12:14])
		if err := unix.Sendto(pfd, frame, 0, &unix.SockaddrLinklayer{Ifindex: eth0, Protocol: proto<<8 | proto>>8}); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	// receive waits for a frame equal to want, behind a metadata record, on
	// the socket and returns the record; other frames (none expected) are
	// recycled.
	descs := make([]afxdp.Desc, 16)
	receive := func(want []byte) UplinkMeta {
		t.Helper()
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) {
			fds := []unix.PollFd{{Fd: int32(sock.Fd()), Events: unix.POLLIN}}
			if _, err := unix.Poll(fds, 100); err != nil && !errors.Is(err, unix.EINTR) {
				t.Fatalf("poll: %v", err)
			}
			n := sock.Receive(descs)
			var got []byte
			var meta UplinkMeta
			var metaErr error
			for _, d := range descs[:n] {
				if b := umem.Bytes(d.Addr, int(d.Len)); got == nil && len(b) >= UplinkMetaSize && bytes.Equal(b[UplinkMetaSize:], want) {
					got = b
					meta, metaErr = ParseUplinkMeta(b[:UplinkMetaSize])
				} else {
					t.Logf("unexpected frame on the socket: %x", b)
				}
				sock.Fill([]uint64{umem.FrameAddr(umem.FrameIndex(d.Addr))})
			}
			if got != nil {
				if metaErr != nil {
					t.Fatalf("metadata record: %v", metaErr)
				}
				return meta
			}
		}
		st, _ := sock.Statistics()
		s, _ := u.Stats()
		t.Fatalf("frame never arrived on the socket (socket %+v, program %v)", st, s)
		return UplinkMeta{}
	}
	outer := func(eth []byte) []byte {
		return ethFrame(ifi.HardwareAddr, h.MAC, binary.BigEndian.Uint16(eth[12:14]), eth[14:])
	}

	t.Run("vxlan over ipv4", func(t *testing.T) {
		in := innerFrame("attached-v4")
		send(outer(ethFrame(nil, nil, 0x0800, ipv4Packet(peer4, local4, protoUDP, 9, 0, 0, udpDatagram(51000, 4789, vxlanHeader(5000, in))))))
		m := receive(in)
		if want := metaFor(peer4, 51000, 5000, 3, 0); m != want {
			t.Errorf("metadata %+v, want %+v", m, want)
		}
	})
	t.Run("vxlan over ipv6", func(t *testing.T) {
		in := innerFrame("attached-v6")
		send(outer(ethFrame(nil, nil, 0x86dd, ipv6Packet(peer6, local6, protoUDP, udpDatagram(51001, 4789, vxlanHeader(5000, in))))))
		m := receive(in)
		if want := metaFor(peer6, 51001, 5000, 3, UplinkMetaOuterIPv6); m != want {
			t.Errorf("metadata %+v, want %+v", m, want)
		}
	})
	t.Run("outer fragments raw", func(t *testing.T) {
		dgram := udpDatagram(51002, 4789, vxlanHeader(5000, innerFrame("attached-frag")))
		first := outer(ethFrame(nil, nil, 0x0800, ipv4Packet(peer4, local4, protoUDP, 77, 0x2000, 0, dgram[:48])))
		later := outer(ethFrame(nil, nil, 0x0800, ipv4Packet(peer4, local4, protoUDP, 77, 48/8, 0, dgram[48:])))
		send(first)
		if m, want := receive(first), metaFor(peer4, 51002, 0, 0, UplinkMetaRawFragment); m != want {
			t.Errorf("first fragment's metadata %+v, want %+v", m, want)
		}
		send(later)
		if m, want := receive(later), metaFor(peer4, 0, 0, 0, UplinkMetaRawFragment); m != want {
			t.Errorf("later fragment's metadata %+v, want %+v", m, want)
		}
	})
	t.Run("ping", func(t *testing.T) {
		if err := h.Ping("10.93.0.1", 2); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("tcp", func(t *testing.T) {
		ln, err := net.Listen("tcp", "10.93.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		done := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				done <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 64)
			n, err := c.Read(buf)
			if err == nil {
				_, err = c.Write(append([]byte("echo "), buf[:n]...))
			}
			done <- err
		}()
		var reply string
		err = h.Do(func() error {
			d := net.Dialer{Timeout: 3 * time.Second}
			c, err := d.Dial("tcp", ln.Addr().String())
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write([]byte("hello uplink")); err != nil {
				return err
			}
			buf := make([]byte, 64)
			n, err := c.Read(buf)
			reply = string(buf[:n])
			return err
		})
		if err != nil {
			t.Fatalf("tcp from %s: %v", h.Name, err)
		}
		if err := <-done; err != nil {
			t.Fatalf("tcp server: %v", err)
		}
		if reply != "echo hello uplink" {
			t.Errorf("reply %q", reply)
		}
	})

	s, err := u.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s["decap_v4"] != 1 || s["decap_v6"] != 1 || s["frag_redirected"] != 2 || s["pass_not_vxlan"] == 0 {
		t.Errorf("stats %v: want one decapsulated frame each way, two raw fragments and host traffic passed", s)
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := netlink.LinkByIndex(ifi.Index)
	if err != nil {
		t.Fatal(err)
	}
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		t.Error("program still attached after Close")
	}
}
