package afxdp

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/xdpswitch/xdpswitch/internal/testnet"
)

// Helpers that build the world the socket tests run in: veth hosts in
// namespaces, an XDP program that redirects into an XSKMAP, and AF_PACKET
// sockets inside the namespaces to put frames on the wire and see them
// arrive.

// testEtherType is the IEEE "local experimental" EtherType, so test frames
// never look like anything the kernel's stacks answer.
const testEtherType = 0x88b5

// waitTimeout bounds every wait for a frame or a completion.
const waitTimeout = 3 * time.Second

func ifindexOf(t *testing.T, name string) int {
	t.Helper()
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		t.Fatalf("interface %s: %v", name, err)
	}
	return ifi.Index
}

// newXSKMap creates an XSKMAP keyed by rx queue. It is declared with key and
// value sizes rather than BTF types, which fail to create here (errno 524).
func newXSKMap(t *testing.T) *ebpf.Map {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: 4})
	if err != nil {
		t.Fatalf("create xskmap: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// newRedirectProg builds
//
//	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
func newRedirectProg(t *testing.T, xsks *ebpf.Map) *ebpf.Program {
	t.Helper()
	const (
		offRxQueueIdx = 16 // struct xdp_md.rx_queue_index
		xdpPass       = 2
	)
	insns := asm.Instructions{
		asm.LoadMem(asm.R2, asm.R1, offRxQueueIdx, asm.Word),
		asm.LoadMapPtr(asm.R1, xsks.FD()),
		asm.Mov.Imm(asm.R3, xdpPass),
		asm.FnRedirectMap.Call(),
		asm.Return(),
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "afxdp_test",
		Type:         ebpf.XDP,
		Instructions: insns,
		License:      "GPL",
	})
	if err != nil {
		t.Fatalf("load xdp program: %v", err)
	}
	t.Cleanup(func() { prog.Close() })
	return prog
}

// attachXDP attaches prog in native (driver) mode to the device.
func attachXDP(t *testing.T, prog *ebpf.Program, ifindex int) {
	t.Helper()
	l, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: link.XDPDriverMode})
	if err != nil {
		t.Fatalf("attach xdp to ifindex %d: %v", ifindex, err)
	}
	t.Cleanup(func() { l.Close() })
}

// steer makes port's rx queue 0 go to s: XSKMAP entry plus redirect program.
func steer(t *testing.T, s *Socket) *ebpf.Map {
	t.Helper()
	m := newXSKMap(t)
	putXSK(t, m, s)
	attachXDP(t, newRedirectProg(t, m), s.Ifindex())
	return m
}

func putXSK(t *testing.T, m *ebpf.Map, s *Socket) {
	t.Helper()
	if err := m.Put(uint32(s.Queue()), uint32(s.Fd())); err != nil {
		t.Fatalf("put socket in xskmap: %v", err)
	}
}

// packetSock is an AF_PACKET socket on eth0 inside a host's namespace,
// receiving only test frames.
type packetSock struct {
	fd      int
	ifindex int
	mac     net.HardwareAddr
}

func newPacketSock(t *testing.T, h *testnet.Host) *packetSock {
	t.Helper()
	ps := &packetSock{fd: -1, mac: h.MAC}
	err := h.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		ps.ifindex = ifi.Index
		proto := htons(testEtherType)
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(proto))
		if err != nil {
			return err
		}
		ps.fd = fd
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
			return err
		}
		return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100_000})
	})
	if ps.fd >= 0 {
		t.Cleanup(func() { unix.Close(ps.fd) })
	}
	if err != nil {
		t.Fatalf("packet socket in %s: %v", h.Name, err)
	}
	return ps
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// testFrame builds a broadcast frame from src with a random marker, 100
// bytes, so no padding changes it on the way.
func testFrame(t *testing.T, src net.HardwareAddr) []byte {
	t.Helper()
	f := make([]byte, 100)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], src)
	binary.BigEndian.PutUint16(f[12:14], testEtherType)
	copy(f[14:], "afxdp-test")
	if _, err := rand.Read(f[24:]); err != nil {
		t.Fatal(err)
	}
	return f
}

func (ps *packetSock) send(t *testing.T, frame []byte) {
	t.Helper()
	if err := unix.Sendto(ps.fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: ps.ifindex, Protocol: htons(testEtherType)}); err != nil {
		t.Fatalf("send test frame: %v", err)
	}
}

// expect waits until frame arrives on the packet socket.
func (ps *packetSock) expect(t *testing.T, frame []byte) {
	t.Helper()
	buf := make([]byte, 2048)
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(ps.fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			t.Fatalf("receive on packet socket: %v", err)
		}
		if bytes.Equal(buf[:n], frame) {
			return
		}
	}
	t.Fatalf("frame %x... never arrived", frame[14:40])
}

// receiveFrame polls s until a descriptor whose bytes equal frame arrives;
// other frames (IPv6 chatter from the namespace) go straight back to the fill
// ring.
func receiveFrame(t *testing.T, u *Umem, s *Socket, frame []byte) Desc {
	t.Helper()
	descs := make([]Desc, 16)
	recycle := make([]uint64, 0, 16)
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		fds := []unix.PollFd{{Fd: int32(s.Fd()), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, 100); err != nil && !errors.Is(err, unix.EINTR) {
			t.Fatalf("poll: %v", err)
		}
		n := s.Receive(descs)
		var found *Desc
		recycle = recycle[:0]
		for i := range descs[:n] {
			d := descs[i]
			if found == nil && bytes.Equal(u.Bytes(d.Addr, int(d.Len)), frame) {
				found = &descs[i]
				continue
			}
			recycle = append(recycle, d.Addr&^uint64(u.FrameSize()-1))
		}
		if got := s.Fill(recycle); got != len(recycle) {
			t.Fatalf("fill ring took %d of %d recycled frames", got, len(recycle))
		}
		if found != nil {
			return *found
		}
	}
	st, _ := s.Statistics()
	t.Fatalf("frame never arrived on the socket of ifindex %d (stats %+v)", s.Ifindex(), st)
	return Desc{}
}

// waitComplete waits until addr comes back on s's completion ring.
func waitComplete(t *testing.T, s *Socket, addr uint64) {
	t.Helper()
	addrs := make([]uint64, 16)
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		if err := s.Kick(); err != nil {
			t.Fatalf("kick: %v", err)
		}
		n := s.Complete(addrs)
		for _, a := range addrs[:n] {
			if a == addr {
				return
			}
			t.Fatalf("unexpected completion %#x (want %#x)", a, addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("address %#x never completed (tx pending %d)", addr, s.TxPending())
}

// fillFrames puts chunks [first, first+n) on s's fill ring.
func fillFrames(t *testing.T, u *Umem, s *Socket, first, n int) {
	t.Helper()
	addrs := make([]uint64, n)
	for i := range addrs {
		addrs[i] = u.FrameAddr(first + i)
	}
	if got := s.Fill(addrs); got != n {
		t.Fatalf("fill ring took %d of %d frames", got, n)
	}
}

// testUmemConfig is small: the tests need a handful of frames.
func testUmemConfig() UmemConfig {
	return UmemConfig{NumFrames: 256, FrameSize: 2048, FillRingSize: 64, CompletionRingSize: 64}
}

func newTestUmem(t *testing.T, cfg UmemConfig) *Umem {
	t.Helper()
	u, err := NewUmem(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		u.mu.Lock()
		open := append([]*Socket(nil), u.sockets...)
		u.mu.Unlock()
		for _, s := range open {
			s.Close()
		}
		if err := u.Close(); err != nil {
			t.Errorf("close umem: %v", err)
		}
	})
	return u
}

func newTestSocket(t *testing.T, u *Umem, ifindex int, mode Mode) *Socket {
	t.Helper()
	s, err := u.NewSocket(SocketConfig{Ifindex: ifindex, Queue: 0, Mode: mode, NeedWakeup: true, RxRingSize: 64, TxRingSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// forward checks the whole path: a frame sent in from's namespace arrives on
// rx (steered there by the caller), is transmitted from the same UMEM address
// on tx, completes, and arrives in to's namespace unchanged.
func forward(t *testing.T, u *Umem, from *packetSock, rx, tx *Socket, to *packetSock) Desc {
	t.Helper()
	frame := testFrame(t, from.mac)
	from.send(t, frame)
	d := receiveFrame(t, u, rx, frame)
	if n := tx.Transmit([]Desc{{Addr: d.Addr, Len: d.Len}}); n != 1 {
		t.Fatalf("tx ring took %d descriptors", n)
	}
	if err := tx.Kick(); err != nil {
		t.Fatalf("kick: %v", err)
	}
	waitComplete(t, tx, d.Addr)
	to.expect(t, frame)
	// The frame is back in our hands: give it to rx's fill ring again.
	if rx.Fill([]uint64{u.FrameAddr(u.FrameIndex(d.Addr))}) != 1 {
		t.Fatal("fill ring full")
	}
	if p := tx.TxPending(); p != 0 {
		t.Fatalf("tx pending %d after completion", p)
	}
	return d
}
