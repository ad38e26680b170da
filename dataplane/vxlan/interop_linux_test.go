package vxlan

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdpswitch/xdpswitch/internal/testnet"
)

// TestKernelInterop talks to the kernel's own vxlan device as the remote
// VTEP. The test's namespace holds one end of a veth pair, va, with a raw
// AF_PACKET socket on it and no addresses: the test is the local VTEP,
// 10.94.0.1 and fd00:94::1, entirely in this package's code. The other end,
// vb, lives in a peer namespace with 10.94.0.2 and fd00:94::2 and three
// vxlan devices over it:
//
//	vx4  VNI 42, IPv4 underlay, iproute2's default UDP checksum  10.95.0.2/24
//	vxc  VNI 44, IPv4 underlay, udpcsum                          10.97.0.2/24
//	vxz  VNI 45, IPv4 underlay, noudpcsum                        10.98.0.2/24
//	vx6  VNI 43, IPv6 underlay, the default UDP checksum         10.96.0.2/24
//
// (iproute2 6.1 turns udpcsum on by default; the kernel's own default, and
// older iproute2's, is off. Over IPv6 a checksum is the default.)
//
// For each, the test encapsulates an ICMP echo request from .1 to the
// device's address, sends it on va, and waits for the kernel's encapsulated
// echo reply, which it decapsulates and checks. A large echo request goes
// out in outer fragments made by Fragment, which the kernel reassembles
// before its vxlan device sees the packet.
func TestKernelInterop(t *testing.T) {
	if !testnet.InNamespace(t) {
		return
	}
	peer := testnet.NewNS(t)
	va, vb := testnet.Name("xva"), testnet.Name("xvb")
	testnet.Run(t, "ip", "link", "add", va, "type", "veth", "peer", "name", vb, "netns", peer.Name)
	testnet.Run(t, "sysctl", "-qw", "net.ipv6.conf."+va+".disable_ipv6=1")
	testnet.Run(t, "ip", "link", "set", va, "up")
	vaIf, err := net.InterfaceByName(va)
	if err != nil {
		t.Fatal(err)
	}
	vaMAC := vaIf.HardwareAddr.String()

	// The peer: addresses, the test's VTEP as a permanent neighbour (the
	// test answers no ARP or neighbour solicitation), and the checksum
	// offload off so that what the kernel sends arrives with its checksums
	// finished.
	for _, cmd := range [][]string{
		{"ethtool", "-K", vb, "tx", "off"},
		{"ip", "addr", "add", "10.94.0.2/24", "dev", vb},
		{"ip", "addr", "add", "fd00:94::2/64", "dev", vb, "nodad"},
		{"ip", "link", "set", vb, "up"},
		{"ip", "neigh", "add", "10.94.0.1", "lladdr", vaMAC, "dev", vb, "nud", "permanent"},
		{"ip", "-6", "neigh", "add", "fd00:94::1", "lladdr", vaMAC, "dev", vb, "nud", "permanent"},
	} {
		peer.Run(t, cmd...)
	}
	vbMAC := peerMAC(t, peer, vb)

	local4, remote4 := netip.MustParseAddr("10.94.0.1"), netip.MustParseAddr("10.94.0.2")
	local6, remote6 := netip.MustParseAddr("fd00:94::1"), netip.MustParseAddr("fd00:94::2")

	cases := []struct {
		dev     string
		vni     uint32
		args    []string
		inner   string // the third octet of the inner /24
		local   netip.Addr
		remote  netip.Addr
		csumOut int // the kernel's packets carry a UDP checksum: 1 yes, 0 no, -1 either
	}{
		{"vx4", 42, []string{"local", "10.94.0.2", "remote", "10.94.0.1"}, "95", local4, remote4, -1},
		{"vxc", 44, []string{"local", "10.94.0.2", "remote", "10.94.0.1", "udpcsum"}, "97", local4, remote4, 1},
		{"vxz", 45, []string{"local", "10.94.0.2", "remote", "10.94.0.1", "noudpcsum"}, "98", local4, remote4, 0},
		{"vx6", 43, []string{"local", "fd00:94::2", "remote", "fd00:94::1"}, "96", local6, remote6, 1},
	}
	for _, c := range cases {
		args := append([]string{"ip", "link", "add", c.dev, "type", "vxlan", "id", fmt.Sprint(c.vni), "dstport", "4789"}, c.args...)
		peer.Run(t, append(args, "dev", vb, "nolearning")...)
		peer.Run(t, "ip", "addr", "add", "10."+c.inner+".0.2/24", "dev", c.dev)
		peer.Run(t, "ip", "link", "set", c.dev, "up")
		peer.Run(t, "ip", "neigh", "add", "10."+c.inner+".0.1", "lladdr", net.HardwareAddr(innerSrcMAC[:]).String(), "dev", c.dev, "nud", "permanent")
	}

	sock := openPacketSocket(t, vaIf.Index)
	e := NewEncoder()
	id := uint16(0x4200)
	for _, c := range cases {
		vxMAC := peerMAC(t, peer, c.dev)
		u := &Underlay{Src: c.local, Dst: c.remote}
		copy(u.SrcMAC[:], vaIf.HardwareAddr)
		copy(u.DstMAC[:], vbMAC)
		for _, size := range []int{56, 1372} { // ICMP payload; 1372 makes an inner IP packet of 1400
			id++
			name := fmt.Sprintf("%s/%d", c.dev, size)
			src := netip.MustParseAddr("10." + c.inner + ".0.1")
			dst := netip.MustParseAddr("10." + c.inner + ".0.2")
			payload := bytes.Repeat([]byte{byte(id), 0x5a}, size/2)
			inner := echoFrame(vxMAC, innerSrcMAC[:], src, dst, 8, id, payload)
			pkt, err := encapCopy(e, inner, c.vni, u)
			if err != nil {
				t.Fatal(err)
			}
			frags := 0
			if size > 1000 {
				// Fragment for an MTU of 1280, below what the veth would
				// carry: the kernel reassembles our fragments.
				var out [][]byte
				frags, err = e.Fragment(pkt, 1280, func(n int) []byte {
					b := make([]byte, n)
					out = append(out, b)
					return b
				})
				if err != nil || frags < 2 {
					t.Fatalf("%s: %d fragments, %v", name, frags, err)
				}
				for _, f := range out {
					sock.send(t, f)
				}
			} else {
				sock.send(t, pkt)
			}

			reply, outer := sock.awaitReply(t, name, func(f []byte) bool {
				in, vni, from, _, err := DecapFrame(f, func(a netip.Addr) bool { return a == c.local }, 4789)
				return err == nil && vni == c.vni && from == c.remote && isEchoReply(in, id)
			})
			in, _, _, _, _ := DecapFrame(reply, nil, 0)
			if !bytes.Equal(in[0:6], innerSrcMAC[:]) || !bytes.Equal(in[6:12], vxMAC) {
				t.Errorf("%s: reply from %x to %x", name, in[6:12], in[0:6])
			}
			want := echoFrame(innerSrcMAC[:], vxMAC, dst, src, 0, id, payload)
			// The kernel picks its own IP identification and TTL.
			copy(want[14+4:14+6], in[14+4:14+6])
			want[14+8] = in[14+8]
			binary.BigEndian.PutUint16(want[14+10:], 0)
			binary.BigEndian.PutUint16(want[14+10:], ^uint16(naiveSum(want[14:34])))
			if !bytes.Equal(in, want) {
				t.Errorf("%s: echo reply\n%x\nwant\n%x", name, in, want)
			}
			if err := checkIPv4Header(in[14:]); err != nil {
				t.Errorf("%s: inner: %v", name, err)
			}
			sum := binary.BigEndian.Uint16(outer[6:])
			if c.csumOut >= 0 && (sum != 0) != (c.csumOut == 1) {
				t.Errorf("%s: the kernel's UDP checksum is %#04x", name, sum)
			}
			t.Logf("%s: echo request in %d fragments, reply %d bytes from %v port %d, UDP checksum %#04x",
				name, frags, len(reply), c.remote, binary.BigEndian.Uint16(outer), sum)
		}
		if c.dev == "vx6" {
			// The kernel does check what we send: a request with a broken
			// UDP checksum gets no answer.
			id++
			inner := echoFrame(vxMAC, innerSrcMAC[:], netip.MustParseAddr("10.96.0.1"), netip.MustParseAddr("10.96.0.2"), 8, id, nil)
			pkt, err := encapCopy(e, inner, c.vni, u)
			if err != nil {
				t.Fatal(err)
			}
			pkt[14+40+6]++
			sock.send(t, pkt)
			if f := sock.await(time.Second, func(f []byte) bool {
				in, _, _, _, err := DecapFrame(f, nil, 0)
				return err == nil && isEchoReply(in, id)
			}); f != nil {
				t.Error("the kernel answered a request with a bad UDP checksum")
			}
		}
	}
}

func peerMAC(t *testing.T, ns *testnet.NS, dev string) net.HardwareAddr {
	t.Helper()
	mac, err := net.ParseMAC(strings.TrimSpace(ns.Run(t, "cat", "/sys/class/net/"+dev+"/address")))
	if err != nil {
		t.Fatal(err)
	}
	return mac
}

// echoFrame builds an Ethernet frame with an ICMP echo request (typ 8) or
// reply (0).
func echoFrame(dstMAC, srcMAC []byte, src, dst netip.Addr, typ byte, id uint16, payload []byte) []byte {
	f := make([]byte, 14+20+8+len(payload))
	copy(f[0:], dstMAC)
	copy(f[6:], srcMAC)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	binary.BigEndian.PutUint16(ip[4:], id)
	ip[8] = 64
	ip[9] = 1
	s, d := src.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	binary.BigEndian.PutUint16(ip[10:], ^uint16(naiveSum(ip[:20])))
	icmp := ip[20:]
	icmp[0] = typ
	binary.BigEndian.PutUint16(icmp[4:], id)
	binary.BigEndian.PutUint16(icmp[6:], 1)
	copy(icmp[8:], payload)
	binary.BigEndian.PutUint16(icmp[2:], ^uint16(naiveSum(icmp)))
	return f
}

// isEchoReply reports whether the inner frame is an ICMP echo reply with
// identifier id.
func isEchoReply(f []byte, id uint16) bool {
	return len(f) >= 14+20+8 && binary.BigEndian.Uint16(f[12:]) == 0x0800 && f[14] == 0x45 && f[14+9] == 1 &&
		f[34] == 0 && binary.BigEndian.Uint16(f[34+4:]) == id
}

// packetSocket is a raw AF_PACKET socket bound to one device.
type packetSocket struct {
	fd int
}

func openPacketSocket(t *testing.T, ifindex int) *packetSocket {
	t.Helper()
	proto := int(htons(unix.ETH_P_ALL))
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: ifindex}); err != nil {
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return &packetSocket{fd: fd}
}

func (s *packetSocket) send(t *testing.T, frame []byte) {
	t.Helper()
	if n, err := unix.Write(s.fd, frame); err != nil || n != len(frame) {
		t.Fatalf("send %d bytes: %d, %v", len(frame), n, err)
	}
}

// await reads incoming frames until match accepts one, which it returns,
// or until the time is up.
func (s *packetSocket) await(d time.Duration, match func([]byte) bool) []byte {
	buf := make([]byte, 9000)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		n, from, err := unix.Recvfrom(s.fd, buf, 0)
		if err != nil {
			continue // the timeout; look at the clock again
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		if match(buf[:n]) {
			return append([]byte(nil), buf[:n]...)
		}
	}
	return nil
}

// awaitReply waits a few seconds for a frame that match accepts and returns
// it with its outer UDP header.
func (s *packetSocket) awaitReply(t *testing.T, what string, match func([]byte) bool) (frame, udp []byte) {
	t.Helper()
	f := s.await(5*time.Second, match)
	if f == nil {
		t.Fatalf("%s: no echo reply within 5 s", what)
	}
	l3 := l3Offset(f)
	hl := 20
	if f[l3]>>4 == 6 {
		hl = 40
	}
	return f, f[l3+hl : l3+hl+8]
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
