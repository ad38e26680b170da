package frag

import (
	"bytes"
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xdpswitch/xdpswitch/internal/testnet"
)

// TestKernelFragments checks reassembly and tracking against fragments
// the Linux kernel makes: a 4000-byte UDP datagram sent over a veth with
// a small MTU, the fragments captured on the peer with an AF_PACKET
// socket, all inside a namespace of the test's own.
func TestKernelFragments(t *testing.T) {
	testnet.RequireRoot(t)
	for _, tc := range []struct {
		name     string
		mtu      int
		src, dst string
		hopopts  bool
	}{
		{"ipv4 mtu 1500", 1500, "10.77.0.1", "10.77.0.2", false},
		{"ipv4 mtu 1280", 1280, "10.77.0.1", "10.77.0.2", false},
		{"ipv4 mtu 576", 576, "10.77.0.1", "10.77.0.2", false},
		{"ipv6 mtu 1280", 1280, "fd77::1", "fd77::2", false},
		{"ipv6 mtu 1500 hop-by-hop", 1500, "fd77::1", "fd77::2", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sender, receiver := kernelPair(t, tc.mtu)
			payload := make([]byte, 4000)
			_, _ = crand.Read(payload)
			var rx *receiverSockets
			if err := receiver.Do(func() (err error) {
				rx, err = listen(tc.dst)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer rx.close()
			if err := sender.Do(func() error { return send(tc.src, tc.dst, payload, tc.hopopts) }); err != nil {
				t.Fatal(err)
			}
			frags, delivered, err := rx.collect()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(delivered, payload) {
				t.Fatal("the kernel's own socket did not get the datagram")
			}
			t.Logf("%d fragments of %v bytes", len(frags), fragLens(frags))
			if len(frags) < 3 {
				t.Fatalf("only %d fragments", len(frags))
			}
			shuffled := append([][]byte{}, frags...)
			mrand.New(mrand.NewPCG(7, 7)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			for name, order := range map[string][][]byte{"as sent": frags, "reversed": reversed(frags), "shuffled": shuffled} {
				r := NewReassembler(ReassemblerConfig{})
				outs := feed(t, r, time.Now(), order)
				if len(outs) != 1 {
					t.Fatalf("%s: %d datagrams reassembled", name, len(outs))
				}
				checkKernelDatagram(t, outs[0], payload, tc.hopopts)
				checkReassembler(t, r)

				// The tracker gives every fragment the first one's verdict.
				h := newHarness(t, TrackerConfig{})
				for _, f := range order {
					o, _ := h.send(f, Allow)
					if o.Action != Allow && o.Action != Hold {
						t.Fatalf("%s: tracker said %v/%v", name, o.Action, o.Reason)
					}
				}
				if s := h.tr.Stats(); s.Allowed != uint64(len(frags)) || s.Datagrams != 0 || len(h.lent) != 0 {
					t.Fatalf("%s: tracker %+v", name, s)
				}
			}
		})
	}
}

// kernelPair makes two namespaces joined by a veth pair with the given
// MTU: fa (10.77.0.1, fd77::1) in the sender's, fb (10.77.0.2, fd77::2)
// in the receiver's, with static neighbours so that every frame on the
// wire is the datagram's.
func kernelPair(t *testing.T, mtu int) (sender, receiver *testnet.NS) {
	sender, receiver = testnet.NewNS(t), testnet.NewNS(t)
	for _, ns := range []*testnet.NS{sender, receiver} {
		ns.Run(t, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=0", "net.ipv6.conf.default.disable_ipv6=0")
	}
	sender.Run(t, "ip", "link", "add", "fa", "mtu", fmt.Sprint(mtu), "type", "veth", "peer", "name", "fb", "mtu", fmt.Sprint(mtu), "netns", receiver.Name)
	for _, a := range []struct {
		ns, peerNS   *testnet.NS
		dev, peerDev string
		v4, v6       string
		peer4, peer6 string
	}{
		{ns: sender, dev: "fa", v4: "10.77.0.1/24", v6: "fd77::1/64", peer4: "10.77.0.2", peer6: "fd77::2", peerDev: "fb", peerNS: receiver},
		{ns: receiver, dev: "fb", v4: "10.77.0.2/24", v6: "fd77::2/64", peer4: "10.77.0.1", peer6: "fd77::1", peerDev: "fa", peerNS: sender},
	} {
		a.ns.Run(t, "ip", "addr", "add", a.v4, "dev", a.dev)
		if mtu >= 1280 {
			a.ns.Run(t, "ip", "addr", "add", a.v6, "dev", a.dev, "nodad")
		}
		a.ns.Run(t, "ip", "link", "set", a.dev, "up")
		mac := strings.TrimSpace(a.peerNS.Run(t, "cat", "/sys/class/net/"+a.peerDev+"/address"))
		a.ns.Run(t, "ip", "neigh", "replace", a.peer4, "lladdr", mac, "dev", a.dev, "nud", "permanent")
		if mtu >= 1280 {
			a.ns.Run(t, "ip", "neigh", "replace", a.peer6, "lladdr", mac, "dev", a.dev, "nud", "permanent")
		}
	}
	// Frames sent before the carrier is up are lost.
	for _, d := range []struct {
		ns  *testnet.NS
		dev string
	}{{sender, "fa"}, {receiver, "fb"}} {
		testnet.Eventually(t, 5*time.Second, d.dev+" up", func() bool {
			out, err := d.ns.Cmd("cat", "/sys/class/net/"+d.dev+"/operstate").Output()
			return err == nil && strings.TrimSpace(string(out)) == "up"
		})
	}
	return sender, receiver
}

func fragLens(frags [][]byte) []int {
	var n []int
	for _, f := range frags {
		n = append(n, len(f))
	}
	return n
}

// receiverSockets are the receiver's: a packet socket capturing on fb,
// and the UDP socket the datagram is for.
type receiverSockets struct {
	fd int
	rx *net.UDPConn
}

// listen opens the receiver's sockets; it runs in the receiver's
// namespace.
func listen(dst string) (*receiverSockets, error) {
	ifi, err := net.InterfaceByName("fb")
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons16(unix.ETH_P_ALL)))
	if err != nil {
		return nil, fmt.Errorf("packet socket: %w", err)
	}
	s := &receiverSockets{fd: fd}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons16(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
		s.close()
		return nil, fmt.Errorf("bind packet socket: %w", err)
	}
	tv := unix.NsecToTimeval(int64(300 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		s.close()
		return nil, err
	}
	s.rx, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(dst), Port: 9999})
	if err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *receiverSockets) close() {
	unix.Close(s.fd)
	if s.rx != nil {
		s.rx.Close()
	}
}

// send sends payload as one UDP datagram from src to dst, port 9999; it
// runs in the sender's namespace.
func send(src, dst string, payload []byte, hopopts bool) error {
	tx, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)}, &net.UDPAddr{IP: net.ParseIP(dst), Port: 9999})
	if err != nil {
		return err
	}
	defer tx.Close()
	if hopopts {
		// An empty Hop-by-Hop header (PadN): it stays in front of the
		// Fragment header, in the unfragmentable part.
		raw, err := tx.SyscallConn()
		if err != nil {
			return err
		}
		var serr error
		if err := raw.Control(func(s uintptr) {
			serr = unix.SetsockoptString(int(s), unix.IPPROTO_IPV6, unix.IPV6_HOPOPTS, string([]byte{0, 0, 1, 4, 0, 0, 0, 0}))
		}); err != nil {
			return err
		}
		if serr != nil {
			return fmt.Errorf("IPV6_HOPOPTS: %w", serr)
		}
	}
	_, err = tx.Write(payload)
	return err
}

// collect returns the fragments captured on fb (IP packets, link header
// off) and the datagram the UDP socket received.
func (s *receiverSockets) collect() ([][]byte, []byte, error) {
	_ = s.rx.SetReadDeadline(time.Now().Add(3 * time.Second))
	got := make([]byte, 65536)
	n, err := s.rx.Read(got)
	if err != nil {
		return nil, nil, fmt.Errorf("receive: %w", err)
	}
	got = got[:n]
	var frags [][]byte
	buf := make([]byte, 65536)
	for {
		n, from, err := unix.Recvfrom(s.fd, buf, 0)
		if err == unix.EAGAIN || err == unix.EINTR {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("capture: %w", err)
		}
		ll, ok := from.(*unix.SockaddrLinklayer)
		if !ok || ll.Pkttype != unix.PACKET_HOST || n < 14 {
			continue
		}
		etype := binary.BigEndian.Uint16(buf[12:])
		if etype != 0x0800 && etype != 0x86dd {
			continue
		}
		ip := append([]byte{}, buf[14:n]...)
		if in, err := Parse(ip); err == nil && in.IsFragment {
			frags = append(frags, ip)
		}
	}
	return frags, got, nil
}

func htons16(v uint16) uint16 { return v<<8 | v>>8 }

// checkKernelDatagram checks a reassembled datagram: a whole UDP packet
// with a valid checksum and the payload that was sent.
func checkKernelDatagram(t *testing.T, p, payload []byte, hopopts bool) {
	t.Helper()
	in, err := Parse(p)
	if err != nil || in.IsFragment || in.Proto != protoUDP {
		t.Fatalf("reassembled packet: %+v, %v", in, err)
	}
	if in.Len != len(p) {
		t.Fatalf("length %d in the header, %d bytes", in.Len, len(p))
	}
	var pseudo []byte
	if in.Version == 4 {
		if sum16(p[:in.HeaderLen]) != 0 {
			t.Fatal("bad IPv4 header checksum")
		}
		if fo := binary.BigEndian.Uint16(p[6:]); fo&0x3fff != 0 {
			t.Fatalf("flags and offset %#x", fo)
		}
		pseudo = append(append([]byte{}, p[12:20]...), 0, protoUDP, 0, 0)
		binary.BigEndian.PutUint16(pseudo[10:], uint16(len(in.L4)))
	} else {
		if hopopts != (p[6] == protoHopByHop) {
			t.Fatalf("next header %d", p[6])
		}
		pseudo = append(append([]byte{}, p[8:40]...), 0, 0, 0, 0, 0, 0, 0, protoUDP)
		binary.BigEndian.PutUint32(pseudo[32:], uint32(len(in.L4)))
	}
	if sum16(append(pseudo, in.L4...)) != 0 {
		t.Fatal("bad UDP checksum")
	}
	if int(binary.BigEndian.Uint16(in.L4[4:])) != len(in.L4) || !bytes.Equal(in.L4[8:], payload) {
		t.Fatal("payload differs from what was sent")
	}
}
