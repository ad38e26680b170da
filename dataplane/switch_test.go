package dataplane

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xdpswitch/xdpswitch/dataplane/afxdp"
	"github.com/xdpswitch/xdpswitch/internal/testnet"
	"github.com/xdpswitch/xdpswitch/netdev"
)

// testSwitch starts a switch whose frame accounting is checked, and which
// is closed, when the test ends.
func testSwitch(t *testing.T, networks ...string) *Switch {
	t.Helper()
	return testSwitchFrames(t, 2048, networks...)
}

func testSwitchFrames(t *testing.T, frames int, networks ...string) *Switch {
	t.Helper()
	umem := afxdp.DefaultUmemConfig()
	umem.NumFrames = frames
	return testSwitchConfig(t, Config{Umem: umem, FillFrames: min(DefaultFillFrames, frames/16)}, networks...)
}

func testSwitchConfig(t *testing.T, cfg Config, networks ...string) *Switch {
	t.Helper()
	testnet.RequireRoot(t)
	cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	sw, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := sw.CheckFrames(); err != nil {
			t.Errorf("frame accounting at test end: %v", err)
		}
		if err := sw.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	for _, n := range networks {
		if err := sw.AddNetwork(n); err != nil {
			t.Fatal(err)
		}
	}
	return sw
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Logf("%s", b)
	return len(b), nil
}

// plug makes hosts with the given addresses and adds their ports to network.
func plug(t *testing.T, sw *Switch, network string, cidrs ...string) []*testnet.Host {
	t.Helper()
	var hosts []*testnet.Host
	for _, c := range cidrs {
		h := testnet.NewHost(t, c)
		if err := sw.AddPort(h.Port, network, PortOptions{}); err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, h)
	}
	return hosts
}

func counters(t *testing.T, sw *Switch, port string) PortCounters {
	t.Helper()
	p, err := sw.Port(port)
	if err != nil {
		t.Fatal(err)
	}
	return p.Counters
}

func pingAll(t *testing.T, sw *Switch, hosts []*testnet.Host) {
	t.Helper()
	for _, a := range hosts {
		for _, b := range hosts {
			if a != b {
				if err := a.Ping(b.IP.String(), 2); err != nil {
					dumpSwitch(t, sw)
					t.Fatal(err)
				}
			}
		}
	}
}

// dumpSwitch logs what the switch knows, to explain a failed test.
func dumpSwitch(t *testing.T, sw *Switch) {
	t.Helper()
	for _, p := range sw.Ports() {
		t.Logf("port %s: %+v", p.Name, p.Counters)
	}
	for _, n := range sw.Networks() {
		fdb, _ := sw.FDB(n.Name)
		t.Logf("network %s: %+v fdb %+v", n.Name, n, fdb)
	}
	acct, err := sw.CheckFrames()
	t.Logf("frames %+v %v", acct, err)
}

func TestThreeHostsLearnAndForward(t *testing.T) {
	sw := testSwitch(t, "lan")
	hosts := plug(t, sw, "lan", "10.72.0.1/24", "10.72.0.2/24", "10.72.0.3/24")
	for _, h := range hosts {
		p, _ := sw.Port(h.Port)
		if p.XDPMode != "native" || p.BindMode != "copy" {
			t.Errorf("port %s runs %s XDP bound in %s mode; want native and copy on veth", h.Port, p.XDPMode, p.BindMode)
		}
	}
	pingAll(t, sw, hosts)

	// Every host's MAC is learned on its own port.
	fdb, err := sw.FDB("lan")
	if err != nil {
		t.Fatal(err)
	}
	where := map[string]string{}
	for _, e := range fdb {
		where[e.MAC] = e.Port
	}
	for _, h := range hosts {
		if where[h.MAC.String()] != h.Port {
			t.Errorf("%s learned on %q, want %s (fdb %v)", h.MAC, where[h.MAC.String()], h.Port, fdb)
		}
	}

	// Learned unicast goes only where it must: the third host sees none of
	// the first two's conversation.
	before := counters(t, sw, hosts[2].Port)
	beforeB := counters(t, sw, hosts[1].Port)
	if err := hosts[0].Ping(hosts[1].IP.String(), 10); err != nil {
		t.Fatal(err)
	}
	after := counters(t, sw, hosts[2].Port)
	afterB := counters(t, sw, hosts[1].Port)
	if after.TxPackets != before.TxPackets {
		t.Errorf("third host was sent %d frames of a unicast conversation", after.TxPackets-before.TxPackets)
	}
	if afterB.TxPackets-beforeB.TxPackets < 10 {
		t.Errorf("destination was sent %d frames, want at least the 10 echo requests", afterB.TxPackets-beforeB.TxPackets)
	}
}

// TestIdlePortsDoNotStarveFlooding: frames in an idle port's fill ring come
// back only when it receives, so a small UMEM shared by many idle ports must
// still keep frames for flood copies.
func TestIdlePortsDoNotStarveFlooding(t *testing.T) {
	sw := testSwitchFrames(t, 512, "lan")
	var cidrs []string
	for i := 1; i <= 8; i++ {
		cidrs = append(cidrs, fmt.Sprintf("10.78.0.%d/24", i))
	}
	hosts := plug(t, sw, "lan", cidrs...)
	if err := hosts[0].Ping(hosts[7].IP.String(), 2); err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts[1:] {
		c := counters(t, sw, h.Port)
		if c.TxPackets == 0 || c.Drops[DropNoFrame.String()] != 0 {
			t.Errorf("port %s: %d frames sent, %d dropped for want of a frame", h.Port, c.TxPackets, c.Drops[DropNoFrame.String()])
		}
	}
}

// TestTwoQueues runs two loops: a host's flows land on either queue, so
// learning done by one loop must serve the other.
func TestTwoQueues(t *testing.T) {
	umem := afxdp.DefaultUmemConfig()
	umem.NumFrames = 1024
	sw := testSwitchConfig(t, Config{Queues: 2, Umem: umem, FillFrames: 64}, "lan")
	var hosts []*testnet.Host
	for i := 1; i <= 3; i++ {
		h := testnet.NewHostQueues(t, fmt.Sprintf("10.80.0.%d/24", i), 2)
		if err := sw.AddPort(h.Port, "lan", PortOptions{}); err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, h)
	}
	// A port with fewer queues than the switch is refused, clearly.
	one := testnet.NewHost(t, "")
	if err := sw.AddPort(one.Port, "lan", PortOptions{}); err == nil || !strings.Contains(err.Error(), "has 1 rx queues") {
		t.Errorf("single-queue port on a two-queue switch: %v", err)
	}
	pingAll(t, sw, hosts)
	acct, err := sw.CheckFrames()
	if err != nil {
		t.Fatal(err)
	}
	if len(acct) != 2 {
		t.Fatalf("%d loops accounted, want 2", len(acct))
	}
	for _, p := range sw.Ports() {
		if p.Queues != 2 {
			t.Errorf("port %s has %d queues, want 2", p.Name, p.Queues)
		}
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Queues: 65}, "queues"},
		{Config{Umem: afxdp.UmemConfig{NumFrames: 64, FrameSize: 2048, FillRingSize: 2048, CompletionRingSize: 2048}, FillFrames: 128}, "cannot serve one port"},
		{Config{FillFrames: 4096}, "exceed the fill ring"},
	} {
		sw, err := New(tc.cfg)
		if err == nil {
			sw.Close()
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error about %s", tc.cfg, err, tc.want)
		}
	}
}

// TestFDBEntryForPortLoopLacks: with several loops, one can learn a MAC on
// a port that another has not added yet. That loop must flood, not index
// past its port table.
func TestFDBEntryForPortLoopLacks(t *testing.T) {
	sw := testSwitch(t, "lan")
	hosts := plug(t, sw, "lan", "10.86.0.1/24", "10.86.0.2/24")
	var l learning
	l.add(macKey(hosts[1].MAC), 50, &localVTEP)
	fdb := sw.networks["lan"].fdb
	fdb.apply(&l, clock())
	// No ARP first: the very first frame is unicast to that MAC.
	hosts[0].Run(t, "ip", "neigh", "replace", hosts[1].IP.String(), "lladdr", hosts[1].MAC.String(), "dev", "eth0", "nud", "permanent")
	if err := hosts[0].Ping(hosts[1].IP.String(), 2); err != nil {
		t.Fatal(err)
	}
}

func TestNetworksAreIsolated(t *testing.T) {
	sw := testSwitch(t, "red", "blue")
	// Both networks use the same addresses: any leak would answer ARP from
	// the wrong host.
	red := plug(t, sw, "red", "10.73.0.1/24", "10.73.0.2/24")
	blue := plug(t, sw, "blue", "10.73.0.1/24", "10.73.0.2/24")

	// Broadcast-heavy traffic in red (ARP, then pings) reaches no blue port.
	pingAll(t, sw, red)
	// Nobody has .99: arping's broadcasts go unanswered, as wanted.
	_ = red[0].Cmd("arping", "-c", "3", "-w", "3", "-I", "eth0", "-b", "10.73.0.99").Run()
	for _, h := range blue {
		if c := counters(t, sw, h.Port); c.TxPackets != 0 {
			t.Errorf("blue port %s was sent %d frames from red", h.Port, c.TxPackets)
		}
	}
	pingAll(t, sw, blue)

	fdbRed, _ := sw.FDB("red")
	fdbBlue, _ := sw.FDB("blue")
	for _, e := range fdbRed {
		if e.Port == blue[0].Port || e.Port == blue[1].Port {
			t.Errorf("red FDB holds blue port: %+v", e)
		}
	}
	if len(fdbRed) != 2 || len(fdbBlue) != 2 {
		t.Errorf("fdb sizes red %d blue %d, want 2 each", len(fdbRed), len(fdbBlue))
	}
}

func TestPortRemovalUnderTraffic(t *testing.T) {
	sw := testSwitch(t, "lan")
	hosts := plug(t, sw, "lan", "10.74.0.1/24", "10.74.0.2/24", "10.74.0.3/24", "10.74.0.4/24")
	pingAll(t, sw, hosts[:2])

	// Keep traffic flowing towards the ports that will go away.
	var wg sync.WaitGroup
	for _, dst := range hosts[2:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = hosts[0].Cmd("ping", "-c", "150", "-i", "0.01", "-W", "1", dst.IP.String()).Run()
		}()
	}
	time.Sleep(300 * time.Millisecond)

	// One port is unplugged on purpose, the other's device vanishes (as
	// when a VM is killed and its tap goes).
	if err := sw.RemovePort(hosts[2].Port); err != nil {
		t.Fatal(err)
	}
	l, err := netlink.LinkByName(hosts[3].Port)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 5*time.Second, "vanished port removed", func() bool {
		_, err := sw.Port(hosts[3].Port)
		return err != nil
	})
	if err := hosts[0].Ping(hosts[1].IP.String(), 5); err != nil {
		t.Fatalf("after removals: %v", err)
	}
	wg.Wait()
	if _, err := sw.CheckFrames(); err != nil {
		t.Fatal(err)
	}
	if n := len(sw.Ports()); n != 2 {
		t.Errorf("%d ports left, want 2", n)
	}
	// The removed port's MACs are forgotten.
	fdb, _ := sw.FDB("lan")
	for _, e := range fdb {
		if e.Port != hosts[0].Port && e.Port != hosts[1].Port {
			t.Errorf("stale FDB entry %+v", e)
		}
	}
}

// sendFrames writes count frames, cycling through frames, from inside the
// host's namespace with a packet socket. It stops early at the deadline.
func sendFrames(h *testnet.Host, frames [][]byte, count int, deadline time.Time) (int, error) {
	sent := 0
	err := h.Do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		// Straight to the device: the qdisc only adds cost here.
		_ = unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1)
		to := &unix.SockaddrLinklayer{Ifindex: ifi.Index}
		for sent < count {
			if sent%4096 == 0 && time.Now().After(deadline) {
				return nil
			}
			if err := unix.Sendto(fd, frames[sent%len(frames)], 0, to); err != nil && err != unix.ENOBUFS && err != unix.EAGAIN {
				return fmt.Errorf("sendto: %w", err)
			}
			sent++
		}
		return nil
	})
	return sent, err
}

func TestMillionFramesAccounted(t *testing.T) {
	sw := testSwitch(t, "lan")
	hosts := plug(t, sw, "lan", "10.75.0.1/24", "10.75.0.2/24", "10.75.0.3/24")
	pingAll(t, sw, hosts)

	// Known unicast, broadcast (flooded as copies), unknown unicast and
	// broken frames, from two senders at once.
	payload := make([]byte, 46)
	unknown := []byte{0x02, 0x99, 0, 0, 0, 1}
	mix := func(from, to *testnet.Host) [][]byte {
		return [][]byte{
			ethFrame(to.MAC, from.MAC, 0x88b5, payload),
			ethFrame(to.MAC, from.MAC, 0x88b5, payload),
			ethFrame(bcast, from.MAC, 0x88b5, payload),
			ethFrame(unknown, from.MAC, 0x88b5, payload),
			ethFrame(to.MAC, from.MAC, etherTypeIPv4, ipv4(1000, 46)),
		}
	}
	const total = 1_000_000
	deadline := time.Now().Add(90 * time.Second)
	var wg sync.WaitGroup
	sent := make([]int, 2)
	errs := make([]error, 2)
	for i, pair := range [][2]*testnet.Host{{hosts[0], hosts[1]}, {hosts[1], hosts[2]}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent[i], errs[i] = sendFrames(pair[0], mix(pair[0], pair[1]), total/2, deadline)
		}()
	}
	// The daemon's stats run the accounting check at any time: it must
	// hold between batches under traffic too.
	stop := make(chan struct{})
	checked := make(chan error, 1)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				var err error
				if n == 0 {
					err = errors.New("no check ran during the traffic")
				}
				checked <- err
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := sw.CheckFrames(); err != nil {
				checked <- fmt.Errorf("check %d under traffic: %w", n, err)
				return
			}
			n++
		}
	}()
	wg.Wait()
	close(stop)
	if err := <-checked; err != nil {
		t.Error(err)
	}
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if sent[0]+sent[1] != total {
		t.Fatalf("sent %d frames before the deadline, want %d", sent[0]+sent[1], total)
	}

	// Let the switch drain, then every frame must be back in its place.
	var rx uint64
	testnet.Eventually(t, 10*time.Second, "switch to go idle", func() bool {
		var now uint64
		for _, p := range sw.Ports() {
			now += p.Counters.RxPackets
		}
		idle := now == rx
		rx = now
		time.Sleep(200 * time.Millisecond)
		return idle
	})
	acct, err := sw.CheckFrames()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("switch took %d frames; frames: %+v", rx, acct)
	var truncated, redirected uint64
	for _, p := range sw.Ports() {
		c := p.Counters
		truncated += c.Drops[DropTruncated.String()]
		redirected += c.XDPRedirected
		t.Logf("%s: %+v", p.Name, c)
		// Every frame the program redirected was either taken by the
		// switch or dropped by the kernel's socket, and counted there.
		if c.XDPRedirected != c.RxPackets+c.Drops[DropInvalidDesc.String()]+c.Socket.RxDropped {
			t.Errorf("%s: %d redirected, but the switch took %d and the socket dropped %d", p.Name, c.XDPRedirected, c.RxPackets, c.Socket.RxDropped)
		}
	}
	if rx < total/10 {
		t.Errorf("switch received only %d of %d frames", rx, total)
	}
	if truncated == 0 {
		t.Error("no truncated frame counted")
	}
	if rx > redirected {
		t.Errorf("switch counted %d frames but its programs redirected only %d", rx, redirected)
	}
	// And it still forwards.
	if err := hosts[0].Ping(hosts[2].IP.String(), 2); err != nil {
		t.Fatal(err)
	}
}

// readFrame reads frames from the tap until match accepts one or the
// deadline passes.
func readFrame(t *testing.T, f *os.File, match func([]byte) bool) []byte {
	t.Helper()
	buf := make([]byte, 2048)
	if err := f.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for {
		n, err := f.Read(buf)
		if err != nil {
			t.Fatalf("reading the tap: %v", err)
		}
		if match(buf[:n]) {
			return append([]byte{}, buf[:n]...)
		}
	}
}

// plugTap makes a tap whose file the test holds, as QEMU would, and plugs
// it into network.
func plugTap(t *testing.T, sw *Switch, network string, opts PortOptions) *netdev.Tap {
	t.Helper()
	tap, err := netdev.OpenTap(testnet.Name("xstap"), netdev.TapOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tap.Close() })
	if err := sw.AddPort(tap.Name, network, opts); err != nil {
		t.Fatal(err)
	}
	return tap
}

// TestTapPort plays the part of QEMU: it owns a tap's file descriptor and
// speaks ARP and ICMP through it to a host behind the switch.
func TestTapPort(t *testing.T) {
	sw := testSwitch(t, "lan")
	tap := plugTap(t, sw, "lan", PortOptions{})
	host := plug(t, sw, "lan", "10.76.0.1/24")[0]
	vmMAC := net.HardwareAddr{0x02, 0, 0, 0x76, 0, 2}
	vmIP := net.ParseIP("10.76.0.2")
	tapFile := tap.Files[0]

	if _, err := tapFile.Write(arpRequest(vmMAC, vmIP, host.IP)); err != nil {
		t.Fatal(err)
	}
	reply := readFrame(t, tapFile, func(f []byte) bool { _, ok := arpReplyFrom(f, host.IP); return ok })
	hostMAC, _ := arpReplyFrom(reply, host.IP)
	if hostMAC.String() != host.MAC.String() {
		t.Fatalf("ARP reply names %s, want %s", hostMAC, host.MAC)
	}
	for seq := uint16(1); seq <= 3; seq++ {
		if _, err := tapFile.Write(icmpEcho(hostMAC, vmMAC, vmIP, host.IP, 0x7676, seq)); err != nil {
			t.Fatal(err)
		}
		readFrame(t, tapFile, func(f []byte) bool { return isEchoReply(f, host.IP, 0x7676, seq) })
	}
	c := counters(t, sw, tap.Name)
	if c.RxPackets < 4 || c.TxPackets < 4 {
		t.Errorf("tap counters %+v: want at least 4 frames each way", c)
	}
}

// TestRuntsAndTruncatedDropped writes broken frames into the switch through
// a tap, as a misbehaving guest would.
func TestRuntsAndTruncatedDropped(t *testing.T) {
	sw := testSwitch(t, "lan")
	tap := plugTap(t, sw, "lan", PortOptions{})
	host := plug(t, sw, "lan", "10.77.0.1/24")[0]
	vmMAC := net.HardwareAddr{0x02, 0, 0, 0x77, 0, 2}
	arp := arpRequest(vmMAC, net.ParseIP("10.77.0.2"), host.IP)
	bad := map[DropReason][][]byte{
		DropRunt: {
			ethFrame(bcast, vmMAC, etherTypeVLAN, []byte{0, 1}),
		},
		DropTruncated: {
			ethFrame(host.MAC, vmMAC, etherTypeIPv4, ipv4(1000, 46)),
			ethFrame(host.MAC, vmMAC, etherTypeIPv6, ipv6(500, 60)),
			arp[:30],
		},
		DropBadSource: {
			ethFrame(host.MAC, bcast, 0x88b5, make([]byte, 46)),
		},
	}
	before := counters(t, sw, host.Port)
	for _, frames := range bad {
		for _, f := range frames {
			if _, err := tap.Files[0].Write(f); err != nil {
				t.Fatalf("write %d-byte frame: %v", len(f), err)
			}
		}
	}
	testnet.Eventually(t, 5*time.Second, "drops counted", func() bool {
		c := counters(t, sw, tap.Name)
		for r, frames := range bad {
			if c.Drops[r.String()] != uint64(len(frames)) {
				return false
			}
		}
		return true
	})
	if after := counters(t, sw, host.Port); after.TxPackets != before.TxPackets {
		t.Errorf("%d broken frames reached the host", after.TxPackets-before.TxPackets)
	}
	// The port still works for good frames.
	if _, err := tap.Files[0].Write(arp); err != nil {
		t.Fatal(err)
	}
	readFrame(t, tap.Files[0], func(f []byte) bool { _, ok := arpReplyFrom(f, host.IP); return ok })
}

// TestRemoveNetwork removes networks that are empty and refuses the
// others; a network made again gets a new id, never a removed one's.
func TestRemoveNetwork(t *testing.T) {
	sw := testSwitch(t, "lan", "gone")
	first := sw.networks["gone"].id
	if err := sw.RemoveNetwork("gone"); err != nil {
		t.Fatal(err)
	}
	if err := sw.AddNetwork("gone"); err != nil {
		t.Fatal(err)
	}
	if id := sw.networks["gone"].id; id == first {
		t.Errorf("network made again has the removed one's id %d", id)
	}
	if err := sw.RemoveNetwork("nonesuch"); !errors.Is(err, ErrNotFound) {
		t.Errorf("removing an unknown network: %v, want ErrNotFound", err)
	}
	plug(t, sw, "lan", "10.77.0.1/24")
	if err := sw.RemoveNetwork("lan"); !errors.Is(err, ErrInUse) {
		t.Errorf("removing a network with a port: %v, want ErrInUse", err)
	}
	// Ids run out rather than wrap around.
	sw.mu.Lock()
	sw.nextNetID = maxNetworkID + 1
	sw.mu.Unlock()
	if err := sw.AddNetwork("one-too-many"); !errors.Is(err, ErrUnfit) {
		t.Errorf("a network beyond the last id: %v, want ErrUnfit", err)
	}
}
