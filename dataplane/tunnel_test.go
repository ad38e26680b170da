package dataplane

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/xdpswitch/xdpswitch/bpf"
	"github.com/xdpswitch/xdpswitch/dataplane/afxdp"
	"github.com/xdpswitch/xdpswitch/dataplane/vxlan"
	"github.com/xdpswitch/xdpswitch/internal/testnet"
	"golang.org/x/sys/unix"
)

func TestVXLANInteropIPv4(t *testing.T) {
	if !testnet.InNamespace(t) {
		return
	}
	vxlanInterop(t, "10.96.0.1", "10.96.0.2", 24, 0)
}

// TestVXLANInteropSmallMTU sends 1400-byte pings across an IPv4 underlay
// with MTU 1280: the switch fragments its outer packets on the way out,
// and reassembles the kernel's fragmented ones on the way in.
func TestVXLANInteropSmallMTU(t *testing.T) {
	if !testnet.InNamespace(t) {
		return
	}
	vxlanInterop(t, "10.96.0.1", "10.96.0.2", 24, 1280)
}

func TestVXLANInteropIPv6(t *testing.T) {
	if !testnet.InNamespace(t) {
		return
	}
	vxlanInterop(t, "fd00:96::1", "fd00:96::2", 64, 0)
}

// vxlanInterop runs the switch against the Linux kernel's own VXLAN device
// as the remote VTEP. The test's namespace is this host, with the uplink;
// the remote host is a namespace behind it whose vxlan devices carry the
// remote hosts' addresses.
func vxlanInterop(t *testing.T, local, remote string, bits, mtu int) {
	rem := testnet.NewNS(t)
	testnet.Run(t, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", rem.Name)

	testnet.Run(t, "ip", "addr", "add", fmt.Sprintf("%s/%d", local, bits), "dev", "up0", "nodad")
	testnet.Run(t, "ip", "link", "set", "up0", "up")
	rem.Run(t, "ip", "addr", "add", fmt.Sprintf("%s/%d", remote, bits), "dev", "eth0", "nodad")
	rem.Run(t, "ip", "link", "set", "eth0", "up")
	for vni, addr := range map[int]string{42: "10.97.0.2/24", 43: "10.98.0.2/24"} {
		dev := fmt.Sprintf("vx%d", vni)
		rem.Run(t, "ip", "link", "add", dev, "type", "vxlan", "id", fmt.Sprint(vni), "dstport", "4789",
			"local", remote, "remote", local, "dev", "eth0")
		// No IPv6 on the tunnels: its multicast would be real traffic
		// in each VNI and blur the isolation count below.
		rem.Run(t, "sh", "-c", fmt.Sprintf("echo 1 > /proc/sys/net/ipv6/conf/%s/disable_ipv6", dev))
		rem.Run(t, "ip", "addr", "add", addr, "dev", dev)
		rem.Run(t, "ip", "link", "set", dev, "up")
	}

	if mtu != 0 {
		// Lowered after the tunnels were made: they keep the MTU of a
		// 1500-byte underlay, so their packets need fragmenting.
		testnet.Run(t, "ip", "link", "set", "up0", "mtu", fmt.Sprint(mtu))
		rem.Run(t, "ip", "link", "set", "eth0", "mtu", fmt.Sprint(mtu))
	}
	sw := testSwitch(t, "ov", "iso")
	if err := sw.AddUplink("up0", netip.MustParseAddr(local), 0); err != nil {
		t.Fatal(err)
	}
	if err := sw.SetVXLAN("ov", 42, []netip.Addr{netip.MustParseAddr(remote)}); err != nil {
		t.Fatal(err)
	}
	if err := sw.SetVXLAN("iso", 43, []netip.Addr{netip.MustParseAddr(remote)}); err != nil {
		t.Fatal(err)
	}
	if err := sw.SetVXLAN("iso", 42, nil); err == nil {
		t.Error("a VNI taken twice was accepted")
	}
	if err := sw.RemoveNetwork("iso"); !errors.Is(err, ErrInUse) {
		t.Errorf("removing a network that carries a VNI: %v, want ErrInUse", err)
	}
	h := plug(t, sw, "ov", "10.97.0.1/24")[0]
	// The second VNI's local host has the same address: a frame crossing
	// VNIs would be answered by the wrong one.
	other := plug(t, sw, "iso", "10.97.0.1/24")[0]

	// The next hop towards the remote VTEP resolves in the background.
	testnet.Eventually(t, 15*time.Second, "first ping across the tunnel", func() bool {
		return h.Cmd("ping", "-c", "1", "-W", "1", "10.97.0.2").Run() == nil
	})
	if err := h.Ping("10.97.0.2", 3); err != nil {
		dumpSwitch(t, sw)
		t.Fatal(err)
	}
	if out, err := rem.Cmd("ping", "-c", "3", "-i", "0.2", "-W", "2", "10.97.0.1").CombinedOutput(); err != nil {
		dumpSwitch(t, sw)
		t.Fatalf("remote to local: %v\n%s", err, out)
	}
	if mtu != 0 {
		// 1400-byte IP packets: 1372 bytes of ICMP payload.
		for name, cmd := range map[string]*exec.Cmd{
			"local to remote": h.Cmd("ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", "1372", "-M", "dont", "10.97.0.2"),
			"remote to local": rem.Cmd("ping", "-c", "3", "-i", "0.2", "-W", "2", "-s", "1372", "-M", "dont", "10.97.0.1"),
		} {
			if out, err := cmd.CombinedOutput(); err != nil {
				dumpSwitch(t, sw)
				t.Fatalf("1400-byte ping %s over MTU %d: %v\n%s", name, mtu, err, out)
			}
		}
		// The kernel fragments the outer packet of its first big frame;
		// once its tunnel has learned the path MTU it fragments inner
		// packets instead, which need nothing from the switch.
		if r := sw.ReassemblyStats(); r.Reassembled == 0 || r.Datagrams != 0 {
			t.Errorf("reassembly %+v: want the kernel's outer fragments reassembled and none left", r)
		}
	}

	// The local host's MAC is learned on its port, the remote's behind
	// the remote VTEP.
	fdb, err := sw.FDB("ov")
	if err != nil {
		t.Fatal(err)
	}
	var behind string
	for _, e := range fdb {
		if e.Port == "up0" {
			behind = e.VTEP
		}
	}
	if behind != netip.MustParseAddr(remote).String() {
		t.Errorf("no MAC learned behind VTEP %s: %+v", remote, fdb)
	}
	if c := counters(t, sw, other.Port); c.TxPackets != 0 {
		t.Errorf("the other VNI's port was sent %d frames", c.TxPackets)
	}
	if up, _ := sw.Port("up0"); !up.Uplink || up.Counters.XDPRedirected == 0 || up.Counters.TxPackets == 0 {
		t.Errorf("uplink %+v", up)
	}

	// The host keeps its NIC: TCP to the uplink's own address works while
	// the program is attached.
	ln, err := net.Listen("tcp", net.JoinHostPort(local, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		line, _ := bufio.NewReader(c).ReadString('\n')
		got <- strings.TrimSpace(line)
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	nc := rem.Cmd("sh", "-c", fmt.Sprintf("echo hello-uplink | busybox nc -w 3 %s %d", local, port))
	if out, err := nc.CombinedOutput(); err != nil {
		t.Fatalf("TCP to the uplink address: %v\n%s", err, out)
	}
	select {
	case s := <-got:
		if s != "hello-uplink" {
			t.Errorf("listener got %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("listener got nothing")
	}
}

// uplinkRecord is a metadata record as the uplink program writes it.
func uplinkRecord(flags uint8, vni, network uint32, src netip.Addr) []byte {
	b := make([]byte, bpf.UplinkMetaSize)
	b[0], b[1] = bpf.UplinkMetaVersion, flags
	binary.NativeEndian.PutUint32(b[4:], vni)
	binary.NativeEndian.PutUint32(b[8:], network)
	a := src.As16()
	copy(b[16:], a[:])
	return b
}

// socketlessLoop is a loop that is not running and has no sockets, for
// calling its frame handling directly; its UMEM has the given frames.
func socketlessLoop(t *testing.T, frames int) *loop {
	t.Helper()
	l, err := newLoop(0, Config{Umem: afxdpDefaultUmem(frames)}, newFillShare(8, 64, frames), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.umem.Close(); unix.Close(l.wakeFd) })
	return l
}

// TestUplinkFrameErrors gives the loop frames from the uplink that it
// cannot switch: each is dropped and counted for its reason, and its UMEM
// frame goes back to the pool. The uplink program never hands over a frame
// without a valid record, so only this test can.
func TestUplinkFrameErrors(t *testing.T) {
	const frames = 64
	l := socketlessLoop(t, frames)
	p := &loopPort{id: 1, ctr: &portCounters{}}
	vtep := netip.MustParseAddr("::ffff:192.0.2.1")
	inner := ethFrame(bytes.Repeat([]byte{0xff}, 6), []byte{2, 0, 0, 0, 0, 1}, 0x0800, ipv4(28, 28))
	outerEth := ethFrame(bytes.Repeat([]byte{0xff}, 6), []byte{2, 0, 0, 0, 0, 2}, 0x0800, nil)
	cat := func(bs ...[]byte) []byte { return bytes.Join(bs, nil) }
	for _, tc := range []struct {
		name   string
		frame  []byte
		reason DropReason
		rx     bool // counted as received: the record was valid
	}{
		{"no record", inner, DropBadMetadata, false},
		{"shorter than a record", inner[:20], DropBadMetadata, false},
		{"record of another version", cat([]byte{9}, uplinkRecord(0, 42, 1, vtep)[1:], inner), DropBadMetadata, false},
		{"unknown flags", cat(uplinkRecord(0x80, 42, 1, vtep), inner), DropBadMetadata, false},
		{"IPv4 underlay, address not v4-mapped", cat(uplinkRecord(0, 42, 1, netip.MustParseAddr("2001:db8::1")), inner), DropBadMetadata, false},
		{"network the loop does not know", cat(uplinkRecord(0, 42, 7, vtep), inner), DropUnknownVNI, true},
		{"raw fragment without an IP header", cat(uplinkRecord(bpf.UplinkMetaRawFragment, 0, 0, vtep), outerEth), DropTunnelFragment, true},
		{"raw fragment that is no fragment", cat(uplinkRecord(bpf.UplinkMetaRawFragment, 0, 0, vtep), outerEth, ipv4(40, 40)), DropTunnelFragment, true},
	} {
		addr, ok := l.pool.alloc()
		if !ok {
			t.Fatalf("%s: no free frame", tc.name)
		}
		copy(l.umem.Bytes(addr, len(tc.frame)), tc.frame)
		before := p.ctr.drops[tc.reason].Load()
		size, rx := l.uplinkFrame(p, afxdp.Desc{Addr: addr, Len: uint32(len(tc.frame))}, clock())
		l.tunnelDone(clock())
		if got := p.ctr.drops[tc.reason].Load() - before; got != 1 || rx != tc.rx {
			t.Errorf("%s: %d %v drops, received %v; want one, received %v", tc.name, got, tc.reason, rx, tc.rx)
		}
		if rx && int(size) != len(tc.frame)-bpf.UplinkMetaSize {
			t.Errorf("%s: size %d, want %d without the record", tc.name, size, len(tc.frame)-bpf.UplinkMetaSize)
		}
		a, err := l.pool.check(nil, nil)
		if err != nil || a.Free != frames {
			t.Fatalf("%s: frames %+v, %v; want all %d free", tc.name, a, err, frames)
		}
	}
}

// TestEncapDrops: a frame that needs fragmenting towards the uplink and
// cannot be is dropped for its reason, with every UMEM frame back in the
// pool: no frames free for its fragments, or an uplink MTU too small to
// fragment for.
func TestEncapDrops(t *testing.T) {
	const frames = 64
	l := socketlessLoop(t, frames)
	vtep := netip.MustParseAddr("::ffff:192.0.2.1").As16()
	l.underlays = underlayMap{vtep: &vxlan.Underlay{
		SrcMAC: [6]byte{2, 0, 0, 0, 0, 1}, DstMAC: [6]byte{2, 0, 0, 0, 0, 2},
		Src: netip.MustParseAddr("192.0.2.10"), Dst: netip.MustParseAddr("192.0.2.1"),
	}}
	in := &loopPort{id: 1, ctr: &portCounters{}, net: &loopNet{tunnel: &tunnel{vni: 42}}}
	inner := ethFrame(bytes.Repeat([]byte{0xff}, 6), []byte{2, 0, 0, 0, 0, 3}, 0x0800, ipv4(1400, 1400))
	for _, tc := range []struct {
		name   string
		mtu    int
		keep   int // free frames left
		reason DropReason
	}{
		{"no frames for the fragments", 1000, 0, DropNoFrame},
		{"MTU below IPv4's minimum", 60, frames, DropTooBig},
	} {
		l.uplink = &loopPort{id: 2, ctr: &portCounters{}, port: &Port{frameLimit: tc.mtu + ethHeaderLen}}
		addr, ok := l.pool.alloc()
		if !ok {
			t.Fatalf("%s: no free frame", tc.name)
		}
		var taken []uint64
		for len(l.pool.free) > tc.keep {
			a, _ := l.pool.alloc()
			taken = append(taken, a)
		}
		const headroom = 256
		copy(l.umem.Bytes(addr+headroom, len(inner)), inner)
		before := in.ctr.drops[tc.reason].Load()
		l.encapAndSend(in, afxdp.Desc{Addr: addr + headroom, Len: uint32(len(inner))}, vtep)
		if got := in.ctr.drops[tc.reason].Load() - before; got != 1 {
			t.Errorf("%s: %d %v drops, want one", tc.name, got, tc.reason)
		}
		for _, a := range taken {
			l.pool.release(a)
		}
		if a, err := l.pool.check(nil, nil); err != nil || a.Free != frames {
			t.Fatalf("%s: frames %+v, %v; want all %d free", tc.name, a, err, frames)
		}
	}
}
