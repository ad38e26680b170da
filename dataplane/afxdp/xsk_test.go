package afxdp

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpswitch/xdpswitch/internal/testnet"
)

// TestSharedUmemForward: one UMEM, sockets on two veth ports. A frame sent in
// namespace A arrives on A's socket and is transmitted from the very same
// UMEM address on B's socket, reaching namespace B byte for byte.
func TestSharedUmemForward(t *testing.T) {
	testnet.RequireRoot(t)
	a := testnet.NewHost(t, "10.77.1.1/24")
	b := testnet.NewHost(t, "10.77.1.2/24")
	u := newTestUmem(t, testUmemConfig())

	sa := newTestSocket(t, u, ifindexOf(t, a.Port), ModeAuto)
	sb := newTestSocket(t, u, ifindexOf(t, b.Port), ModeCopy)
	if !sa.registered || sb.registered {
		t.Fatalf("registered: a %v b %v; want the first socket to register and the second to share", sa.registered, sb.registered)
	}
	for _, s := range []*Socket{sa, sb} {
		if s.Mode() != ModeCopy {
			t.Fatalf("socket on ifindex %d: mode %v, want copy (veth has no zero-copy)", s.Ifindex(), s.Mode())
		}
		if s.Queue() != 0 || s.Fd() < 0 {
			t.Fatalf("queue %d fd %d", s.Queue(), s.Fd())
		}
		if !s.needWakeup {
			t.Fatal("need-wakeup not in effect")
		}
	}
	if sa.FillFree() != 64 || sa.TxFree() != 64 || sa.TxPending() != 0 {
		t.Fatalf("fresh rings: fill free %d tx free %d pending %d", sa.FillFree(), sa.TxFree(), sa.TxPending())
	}
	fillFrames(t, u, sa, 0, 64)
	fillFrames(t, u, sb, 64, 64)
	if sa.FillFree() != 0 {
		t.Fatalf("fill free %d after filling the ring", sa.FillFree())
	}
	steer(t, sa)
	pa, pb := newPacketSock(t, a), newPacketSock(t, b)

	for i := 0; i < 3; i++ {
		d := forward(t, u, pa, sa, sb, pb)
		// Copy mode puts the frame after the kernel's XDP_PACKET_HEADROOM
		// and the UMEM's own headroom (0 here).
		if off := d.Addr % uint64(u.FrameSize()); off != unix.XDP_PACKET_HEADROOM {
			t.Fatalf("rx descriptor at offset %d in its chunk, want %d", off, unix.XDP_PACKET_HEADROOM)
		}
		if idx := u.FrameIndex(d.Addr); idx >= 64 {
			t.Fatalf("received into chunk %d, which was never on a's fill ring", idx)
		}
	}

	for _, s := range []*Socket{sa, sb} {
		st, err := s.Statistics()
		if err != nil {
			t.Fatal(err)
		}
		if st.RxInvalidDescs != 0 || st.TxInvalidDescs != 0 {
			t.Fatalf("invalid descriptors: %+v", st)
		}
	}
	// sb never had an rx program: nothing arrives there.
	if n := sb.Receive(make([]Desc, 4)); n != 0 {
		t.Fatalf("b's socket received %d frames", n)
	}

	// The per-frame path allocates nothing, syscalls included.
	descs := make([]Desc, 8)
	addrs := make([]uint64, 8)
	tx := []Desc{{Addr: u.FrameAddr(200), Len: 60}} // zeroed frame, harmless
	allocs := testing.AllocsPerRun(50, func() {
		n := sa.Receive(descs)
		for i, d := range descs[:n] {
			addrs[i] = u.FrameAddr(u.FrameIndex(d.Addr))
		}
		sa.Fill(addrs[:n])
		_ = sa.FillFree() + sb.TxFree() + sb.TxPending()
		_ = sa.FillNeedsWakeup()
		if sa.Wakeup() != nil {
			t.Error("wakeup failed")
		}
		sb.Transmit(tx)
		if sb.Kick() != nil {
			t.Error("kick failed")
		}
		sb.Complete(addrs)
		_ = u.Bytes(tx[0].Addr, 60)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per frame-path round", allocs)
	}
}

// TestTransmitBurst puts more frames on the tx ring than the kernel's default
// copy-mode budget per sendto (32) and than the completion ring holds (64).
// The raised budget lets one sendto send until the completion ring is full;
// a full completion ring is back-pressure, not an error, and the frames left
// go out once completions are drained.
func TestTransmitBurst(t *testing.T) {
	testnet.RequireRoot(t)
	b := testnet.NewHost(t, "10.77.2.2/24")
	u := newTestUmem(t, testUmemConfig()) // completion ring of 64
	s, err := u.NewSocket(SocketConfig{Ifindex: ifindexOf(t, b.Port), Mode: ModeCopy, NeedWakeup: true, TxRingSize: 128})
	if err != nil {
		t.Fatal(err)
	}
	if s.Receive(make([]Desc, 1)) != 0 || s.Wakeup() != nil {
		t.Fatal("rx calls on a socket without rx ring")
	}
	pb := newPacketSock(t, b)
	const burst = 100
	descs := make([]Desc, burst)
	frames := make([][]byte, burst)
	for i := range descs {
		frames[i] = testFrame(t, b.MAC)
		addr := u.FrameAddr(i) + 64 // anywhere inside the chunk will do
		copy(u.Bytes(addr, len(frames[i])), frames[i])
		descs[i] = Desc{Addr: addr, Len: uint32(len(frames[i]))}
	}
	if n := s.Transmit(descs); n != burst {
		t.Fatalf("tx ring took %d of %d", n, burst)
	}
	if p, f := s.TxPending(), s.TxFree(); p != burst || f != 128-burst {
		t.Fatalf("before kick: pending %d free %d", p, f)
	}
	// One bare sendto: with XDP_MAX_TX_SKB_BUDGET raised it sends until
	// the completion ring (64) is full, not just 32.
	if _, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(s.Fd()), 0, 0, unix.MSG_DONTWAIT, 0, 0); e != 0 && e != unix.EAGAIN {
		t.Fatalf("sendto: %v", e)
	}
	if p := s.TxPending(); p != burst-64 {
		t.Fatalf("one sendto left %d pending, want %d (budget not raised?)", p, burst-64)
	}
	// Completion ring full: Kick makes no progress and says nothing.
	if err := s.Kick(); err != nil {
		t.Fatalf("kick with a full completion ring: %v", err)
	}
	if p := s.TxPending(); p != burst-64 {
		t.Fatalf("pending %d with the completion ring full", p)
	}
	addrs := make([]uint64, burst)
	got := s.Complete(addrs)
	if got != 64 {
		t.Fatalf("%d completions, want 64", got)
	}
	if err := s.Kick(); err != nil {
		t.Fatal(err)
	}
	if p := s.TxPending(); p != 0 {
		t.Fatalf("%d frames still pending after draining completions and kicking", p)
	}
	got += s.Complete(addrs[got:])
	if got != burst {
		t.Fatalf("%d completions in all, want %d", got, burst)
	}
	for i, a := range addrs {
		if a != descs[i].Addr {
			t.Fatalf("completion %d = %#x, want the tx descriptor's address %#x", i, a, descs[i].Addr)
		}
	}
	for _, f := range frames {
		pb.expect(t, f)
	}
	st, err := s.Statistics()
	if err != nil || st.TxInvalidDescs != 0 {
		t.Fatalf("statistics %+v, %v", st, err)
	}
}

// TestShareAfterRegistrarGone: the socket that registered the UMEM is
// closed, yet a new socket shares the UMEM through a remaining one; once all
// are closed, the next socket registers it anew.
func TestShareAfterRegistrarGone(t *testing.T) {
	testnet.RequireRoot(t)
	a := testnet.NewHost(t, "10.77.3.1/24")
	b := testnet.NewHost(t, "10.77.3.2/24")
	c := testnet.NewHost(t, "10.77.3.3/24")
	u := newTestUmem(t, testUmemConfig())
	pa, pb, pc := newPacketSock(t, a), newPacketSock(t, b), newPacketSock(t, c)

	sa := newTestSocket(t, u, ifindexOf(t, a.Port), ModeCopy)
	sb := newTestSocket(t, u, ifindexOf(t, b.Port), ModeCopy)
	if err := sa.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sa.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if sa.Receive(make([]Desc, 1)) != 0 || sa.Fill([]uint64{0}) != 0 || sa.Kick() != nil {
		t.Fatal("closed socket still works")
	}

	sc := newTestSocket(t, u, ifindexOf(t, c.Port), ModeCopy)
	if sc.registered {
		t.Fatal("third socket registered the UMEM anew although b's socket still holds it")
	}
	fillFrames(t, u, sc, 0, 32)
	steer(t, sc)
	forward(t, u, pc, sc, sb, pb)

	for _, s := range []*Socket{sb, sc} {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	sd := newTestSocket(t, u, ifindexOf(t, a.Port), ModeCopy)
	if !sd.registered {
		t.Fatal("with no socket left, the new socket did not register the UMEM")
	}
	se := newTestSocket(t, u, ifindexOf(t, c.Port), ModeCopy)
	fillFrames(t, u, sd, 100, 32)
	steer(t, sd)
	forward(t, u, pa, sd, se, pc)
}

// TestShareAfterDeviceVanished: the registering socket's device disappears
// (a VM's tap going away). Its socket is still open but no longer bound; new
// sockets share the UMEM through another one, or register anew when no bound
// socket is left.
func TestShareAfterDeviceVanished(t *testing.T) {
	testnet.RequireRoot(t)
	a := testnet.NewHost(t, "10.77.4.1/24")
	b := testnet.NewHost(t, "10.77.4.2/24")
	c := testnet.NewHost(t, "10.77.4.3/24")
	u := newTestUmem(t, testUmemConfig())
	pb, pc := newPacketSock(t, b), newPacketSock(t, c)

	sa := newTestSocket(t, u, ifindexOf(t, a.Port), ModeCopy)
	sb := newTestSocket(t, u, ifindexOf(t, b.Port), ModeCopy)
	l, err := netlink.LinkByName(a.Port)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkDel(l); err != nil {
		t.Fatal(err)
	}

	// a's socket is unbound now: transmitting on it is an error, not a panic.
	if sa.Transmit([]Desc{{Addr: u.FrameAddr(200), Len: 60}}) != 1 {
		t.Fatal("tx ring of the dead socket refused a descriptor")
	}
	if err := sa.Kick(); err == nil || !errors.Is(err, unix.ENXIO) {
		t.Fatalf("kick on a socket whose device vanished: %v, want ENXIO", err)
	}

	sc := newTestSocket(t, u, ifindexOf(t, c.Port), ModeCopy)
	if sc.registered || !sa.unbound {
		t.Fatalf("registered %v, a marked unbound %v: want sharing through b", sc.registered, sa.unbound)
	}
	fillFrames(t, u, sc, 0, 32)
	xsks := steer(t, sc)
	forward(t, u, pc, sc, sb, pb)

	// Only the dead socket left: the next one registers anew.
	sb.Close()
	sc.Close()
	sd := newTestSocket(t, u, ifindexOf(t, c.Port), ModeCopy)
	if !sd.registered {
		t.Fatal("did not register anew with only an unbound socket left")
	}
	se := newTestSocket(t, u, ifindexOf(t, b.Port), ModeCopy)
	fillFrames(t, u, sd, 100, 32)
	putXSK(t, xsks, sd) // c's program is attached already
	forward(t, u, pc, sd, se, pb)
}

// TestHeadroom: with extra headroom configured, the kernel puts a received
// frame that far behind the XDP headroom in its chunk, and the room in
// front of it is the switch's (for encapsulation in place).
func TestHeadroom(t *testing.T) {
	testnet.RequireRoot(t)
	a := testnet.NewHost(t, "10.77.5.1/24")
	cfg := testUmemConfig()
	cfg.Headroom = 128
	u := newTestUmem(t, cfg)
	s := newTestSocket(t, u, ifindexOf(t, a.Port), ModeCopy)
	fillFrames(t, u, s, 0, 64)
	steer(t, s)
	if u.Headroom() != 128 {
		t.Fatalf("Headroom() = %d, want 128", u.Headroom())
	}
	pa := newPacketSock(t, a)
	for i := 0; i < 3; i++ {
		frame := testFrame(t, a.MAC)
		pa.send(t, frame)
		d := receiveFrame(t, u, s, frame)
		if off := d.Addr % uint64(u.FrameSize()); off != unix.XDP_PACKET_HEADROOM+128 {
			t.Fatalf("rx descriptor at offset %d in its chunk, want %d", off, unix.XDP_PACKET_HEADROOM+128)
		}
		s.Fill([]uint64{u.FrameAddr(u.FrameIndex(d.Addr))})
	}
}

// TestBindErrors: failures come back as errors naming the operation, and
// leave neither sockets, descriptors nor mappings behind.
func TestBindErrors(t *testing.T) {
	testnet.RequireRoot(t)
	a := testnet.NewHost(t, "10.77.6.1/24")
	b := testnet.NewHost(t, "10.77.6.2/24")
	u := newTestUmem(t, testUmemConfig())
	ia, ib := ifindexOf(t, a.Port), ifindexOf(t, b.Port)
	fds, maps := countFDs(t), countXSKMaps(t)

	cases := []struct {
		name string
		cfg  SocketConfig
		errn unix.Errno
		want string
	}{
		{"no such device", SocketConfig{Ifindex: 0x7ffffff0, RxRingSize: 8}, unix.ENODEV, "bind ifindex 2147483632 queue 0"},
		{"queue beyond the device's", SocketConfig{Ifindex: ia, Queue: 9, RxRingSize: 8}, unix.EINVAL, "bind " + a.Port + " queue 9"},
		{"zero-copy on veth", SocketConfig{Ifindex: ia, Mode: ModeZeroCopy, RxRingSize: 8, TxRingSize: 8}, unix.EOPNOTSUPP, "bind " + a.Port + " queue 0 mode zerocopy"},
	}
	for _, tc := range cases {
		s, err := u.NewSocket(tc.cfg)
		if err == nil {
			s.Close()
			t.Fatalf("%s: NewSocket succeeded", tc.name)
		}
		if !errors.Is(err, tc.errn) || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: error %q, want %v mentioning %q", tc.name, err, tc.errn, tc.want)
		}
	}
	if len(u.sockets) != 0 || countFDs(t) != fds || countXSKMaps(t) != maps {
		t.Fatalf("failed binds leaked: %d sockets, fds %d -> %d, ring mappings %d -> %d", len(u.sockets), fds, countFDs(t), maps, countXSKMaps(t))
	}

	// The UMEM is fine: a valid socket registers it and works.
	sa := newTestSocket(t, u, ia, ModeCopy)
	if !sa.registered {
		t.Fatal("first valid socket did not register the UMEM")
	}
	if countFDs(t) != fds+1 || countXSKMaps(t) != maps+4 {
		t.Fatalf("a socket with four rings: fds %d -> %d, ring mappings %d -> %d", fds, countFDs(t), maps, countXSKMaps(t))
	}
	// A shared socket inherits copy mode; asking it for zero-copy fails
	// clearly instead of silently running in copy mode.
	if s, err := u.NewSocket(SocketConfig{Ifindex: ib, Mode: ModeZeroCopy, RxRingSize: 8}); err == nil {
		s.Close()
		t.Fatal("zero-copy socket sharing a copy-mode UMEM succeeded")
	} else if !strings.Contains(err.Error(), "mode zerocopy requested") {
		t.Fatalf("mode mismatch error: %v", err)
	}
	// Same device and queue twice is refused, as an error.
	if s, err := u.NewSocket(SocketConfig{Ifindex: ia, RxRingSize: 8}); err == nil {
		s.Close()
		t.Fatal("second socket on the same queue succeeded")
	} else if !strings.Contains(err.Error(), "already has a socket") {
		t.Fatalf("same queue twice: %v", err)
	}
	// A queue held by a live socket of another UMEM stays busy: the bind
	// retry gives up with an error that says so.
	defer func(d time.Duration) { busyRetry = d }(busyRetry)
	busyRetry = 200 * time.Millisecond
	u2 := newTestUmem(t, testUmemConfig())
	if s, err := u2.NewSocket(SocketConfig{Ifindex: ia, RxRingSize: 8}); err == nil {
		s.Close()
		t.Fatal("a second UMEM bound to a queue in use")
	} else if !errors.Is(err, unix.EBUSY) || !strings.Contains(err.Error(), "still busy") {
		t.Fatalf("busy queue: %v", err)
	}
	// b's queue had the mismatched socket a moment ago; the kernel frees
	// it asynchronously, which the bind retry waits out.
	sb := newTestSocket(t, u, ib, ModeAuto)
	if sb.registered || sb.Mode() != ModeCopy {
		t.Fatalf("shared socket: registered %v mode %v", sb.registered, sb.Mode())
	}
	fillFrames(t, u, sa, 0, 32)
	steer(t, sa)
	forward(t, u, newPacketSock(t, a), sa, sb, newPacketSock(t, b))

	if err := u.Close(); err == nil || !strings.Contains(err.Error(), "2 sockets still open") {
		t.Fatalf("closing a UMEM with open sockets: %v", err)
	}
	sa.Close()
	sb.Close()
	if len(u.sockets) != 0 {
		t.Fatalf("%d sockets left after closing all", len(u.sockets))
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// countXSKMaps counts this process's mappings of socket memory: AF_XDP rings
// show up in /proc/self/maps as "socket:[inode]".
func countXSKMaps(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "socket:[")
}
