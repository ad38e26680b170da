package dhcpd

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xdpswitch/xdpswitch/internal/testnet"
)

// These tests run the server on a real interface inside a namespace the test
// makes, against busybox udhcpc: a client the project did not write.

// udhcpcScript configures the address (udhcpc's release is sent from it) and
// prints what the client learned.
const udhcpcScript = `#!/bin/sh
case "$1" in
bound|renew)
	ip addr flush dev "$interface"
	ip addr add "$ip/$subnet" dev "$interface"
	for v in ip subnet router dns domain mtu lease serverid hostname broadcast; do
		eval "echo \"DHCPENV $1 $v=\$$v\""
	done
	;;
deconfig)
	ip addr flush dev "$interface"
	echo "DHCPENV $1"
	;;
esac
exit 0
`

// world is a server namespace with clients plugged into it.
type world struct {
	t       *testing.T
	ns      *testnet.NS
	dev     string // the server's interface
	clients []*testnet.Host
	script  string
}

// newWorld makes a server namespace and n client hosts. One client is wired
// straight to the server's veth, as the daemon's host port is; several share
// a bridge.
func newWorld(t *testing.T, n int) *world {
	t.Helper()
	testnet.RequireRoot(t)
	w := &world{t: t, ns: testnet.NewNS(t)}
	w.script = filepath.Join(t.TempDir(), "udhcpc.sh")
	if err := os.WriteFile(w.script, []byte(udhcpcScript), 0o755); err != nil {
		t.Fatal(err)
	}
	for range n {
		h := testnet.NewHost(t, "")
		testnet.Run(t, "ip", "link", "set", h.Port, "netns", w.ns.Name)
		w.ns.Run(t, "ip", "link", "set", h.Port, "up")
		w.clients = append(w.clients, h)
	}
	if n == 1 {
		w.dev = w.clients[0].Port
	} else {
		w.dev = "br0"
		w.ns.Run(t, "ip", "link", "add", w.dev, "type", "bridge")
		for _, h := range w.clients {
			w.ns.Run(t, "ip", "link", "set", h.Port, "master", w.dev)
		}
		w.ns.Run(t, "ip", "link", "set", w.dev, "up")
	}
	w.ns.Run(t, "ip", "addr", "add", "10.77.0.1/24", "dev", w.dev)
	return w
}

func (w *world) config() Config {
	return Config{
		Network:    "itest",
		Interface:  w.dev,
		ServerIP:   netip.MustParseAddr("10.77.0.1"),
		Subnet:     netip.MustParsePrefix("10.77.0.0/24"),
		RangeStart: netip.MustParseAddr("10.77.0.100"),
		RangeEnd:   netip.MustParseAddr("10.77.0.149"),
		DNS:        []netip.Addr{netip.MustParseAddr("10.77.0.53")},
		Domain:     "vms.test",
		MTU:        1400,
		LeaseTime:  10 * time.Minute,
		StateDir:   w.t.TempDir(),
		Logger:     testLogger(w.t),
	}
}

// serve runs s inside the server namespace (the socket must be made there)
// until the returned stop is called; stop is also registered as cleanup.
func (w *world) serve(s *Server) (stop func()) {
	t := w.t
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.ns.Do(func() error { return s.Serve(ctx) }) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Errorf("Serve did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	// Wait for the socket so that the client's first DISCOVER is not lost.
	testnet.Eventually(t, 10*time.Second, "the server socket on udp/67", func() bool {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("Serve returned early: %v", err)
		default:
		}
		out, _ := w.ns.Cmd("ss", "-Hlun", "sport = :67").Output()
		return len(bytes.TrimSpace(out)) > 0
	})
	return stop
}

// udhcpc runs one busybox udhcpc in h and returns what its script printed
// for the "bound" event. The run is bounded; the process is ours to kill.
func (w *world) udhcpc(h *testnet.Host, extra ...string) map[string]string {
	t := w.t
	t.Helper()
	args := append([]string{"busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "5", "-T", "1", "-s", w.script}, extra...)
	cmd := h.Cmd(args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(30*time.Second, func() { cmd.Process.Kill() })
	err := cmd.Wait()
	timer.Stop()
	if err != nil {
		t.Fatalf("udhcpc in %s: %v\n%s", h.Name, err, out.String())
	}
	text := out.String()
	env := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "DHCPENV bound ")
		if !ok {
			continue
		}
		if k, v, ok := strings.Cut(rest, "="); ok {
			env[k] = v
		}
	}
	if env["ip"] == "" {
		t.Fatalf("udhcpc in %s got no lease:\n%s", h.Name, text)
	}
	t.Logf("udhcpc in %s: %v\n%s", h.Name, env, text)
	return env
}

func TestUdhcpcGetsLease(t *testing.T) {
	w := newWorld(t, 1)
	cfg := w.config()
	s := newServer(t, cfg)
	w.serve(s)
	h := w.clients[0]
	env := w.udhcpc(h)

	got, err := netip.ParseAddr(env["ip"])
	if err != nil || got.Less(cfg.RangeStart) || cfg.RangeEnd.Less(got) {
		t.Fatalf("address %q not in range %v-%v", env["ip"], cfg.RangeStart, cfg.RangeEnd)
	}
	want := map[string]string{
		"subnet": "255.255.255.0", "router": "10.77.0.1", "dns": "10.77.0.53",
		"domain": "vms.test", "mtu": "1400", "lease": "600", "serverid": "10.77.0.1",
		"broadcast": "10.77.0.255",
	}
	for k, v := range want {
		if strings.TrimSpace(env[k]) != v {
			t.Errorf("$%s = %q, want %q", k, env[k], v)
		}
	}
	l, ok := leaseOf(s, h.MAC)
	if !ok || l.IP != got || l.State != StateBound {
		t.Fatalf("server lease for %v: %+v (ok %v), client has %v", h.MAC, l, ok, got)
	}
	c := s.Counters()
	if c.Discover < 1 || c.Offer < 1 || c.Request < 1 || c.Ack < 1 || c.Malformed != 0 {
		t.Fatalf("counters %+v", c)
	}
}

func TestUdhcpcTwoClientsDistinct(t *testing.T) {
	w := newWorld(t, 2)
	s := newServer(t, w.config())
	w.serve(s)
	a := w.udhcpc(w.clients[0])["ip"]
	b := w.udhcpc(w.clients[1])["ip"]
	if a == b {
		t.Fatalf("both clients got %s", a)
	}
	if n := len(s.Leases()); n != 2 {
		t.Fatalf("server has %d leases: %+v", n, s.Leases())
	}
	// The first client, asking again, keeps its address.
	if again := w.udhcpc(w.clients[0])["ip"]; again != a {
		t.Fatalf("first client moved from %s to %s", a, again)
	}
}

func TestUdhcpcReservation(t *testing.T) {
	w := newWorld(t, 1)
	h := w.clients[0]
	cfg := w.config()
	cfg.Reservations = []Reservation{{MAC: h.MAC, IP: netip.MustParseAddr("10.77.0.7"), Hostname: "pinned"}}
	s := newServer(t, cfg)
	w.serve(s)
	env := w.udhcpc(h)
	if env["ip"] != "10.77.0.7" || env["hostname"] != "pinned" {
		t.Fatalf("got ip %q hostname %q, want the reservation", env["ip"], env["hostname"])
	}
}

func TestUdhcpcRestartKeepsAddress(t *testing.T) {
	w := newWorld(t, 1)
	h := w.clients[0]
	cfg := w.config()
	// Take a few addresses first so that "same address" is not luck.
	s := newServer(t, cfg)
	now := time.Now()
	for i := range 3 {
		obtain(t, s, net.HardwareAddr{0x02, 0, 0, 0, 0, byte(i + 1)}, now)
	}
	stop := w.serve(s)
	first := w.udhcpc(h)["ip"]
	stop()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := newServer(t, cfg)
	if l, ok := leaseOf(s2, h.MAC); !ok || l.IP.String() != first {
		t.Fatalf("restarted server lease for the client: %+v, want %s", l, first)
	}
	w.serve(s2)
	if again := w.udhcpc(h)["ip"]; again != first {
		t.Fatalf("after restart got %s, want %s", again, first)
	}
}

// startUdhcpc runs udhcpc in the foreground, for renewals and release on
// exit, which a one-shot -q run does not exercise.
func (w *world) startUdhcpc(h *testnet.Host, extra ...string) *testnet.Proc {
	w.t.Helper()
	args := append([]string{"busybox", "udhcpc", "-i", "eth0", "-f", "-t", "5", "-T", "1", "-s", w.script}, extra...)
	return testnet.StartProc(w.t, h.Cmd(args...))
}

// waitValue returns what follows key in the next line udhcpc's script
// prints with it.
func waitValue(t *testing.T, c *testnet.Proc, key string) string {
	t.Helper()
	l := c.WaitLine(t, key, 30*time.Second)
	return l[strings.Index(l, key)+len(key):]
}

func TestUdhcpcRenewAndRelease(t *testing.T) {
	w := newWorld(t, 1)
	h := w.clients[0]
	s := newServer(t, w.config())
	w.serve(s)

	// busybox 1.35 with -q quits before it counts as bound and releases
	// nothing; in the foreground with -R it releases on SIGTERM.
	c := w.startUdhcpc(h, "-R")
	got := waitValue(t, c, "DHCPENV bound ip=")
	first, ok := leaseOf(s, h.MAC)
	if !ok || first.IP.String() != got {
		t.Fatalf("server lease %+v, client has %s", first, got)
	}

	// SIGUSR1 renews: a unicast REQUEST from ciaddr, answered by a unicast
	// ACK that the client reads on its ordinary UDP socket.
	time.Sleep(10 * time.Millisecond) // let the expiry move measurably
	if err := c.Cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if renewed := waitValue(t, c, "DHCPENV renew ip="); renewed != got {
		t.Fatalf("renew gave %s, want %s", renewed, got)
	}
	if l, _ := leaseOf(s, h.MAC); !l.Expiry.After(first.Expiry) {
		t.Fatalf("renew did not extend the lease: %v then %v", first.Expiry, l.Expiry)
	}

	if err := c.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	c.WaitExit(t, 10*time.Second)
	testnet.Eventually(t, 10*time.Second, "the released lease to disappear", func() bool {
		_, ok := leaseOf(s, h.MAC)
		return !ok
	})
	if cs := s.Counters(); cs.Release != 1 || cs.Ack != 2 {
		t.Fatalf("counters %+v\n%s", cs, c.Output())
	}
	t.Logf("udhcpc:\n%s", c.Output())
}

func TestGarbageThenLease(t *testing.T) {
	w := newWorld(t, 1)
	h := w.clients[0]
	s := newServer(t, w.config())
	w.serve(s)

	// The client needs an address to send from; it is removed again after.
	h.Run(t, "ip", "addr", "add", "10.77.0.250/24", "dev", "eth0")
	valid := discoverMsg(t, h.MAC).ToBytes()
	garbage := [][]byte{
		[]byte("not dhcp at all"),
		make([]byte, 300),               // zeros: op 0
		valid[:120],                     // truncated
		append([]byte{2}, valid[1:]...), // a BOOTREPLY
	}
	err := h.Do(func() error {
		c, err := net.Dial("udp4", "10.77.0.1:67")
		if err != nil {
			return err
		}
		defer c.Close()
		for _, g := range garbage {
			if _, err := c.Write(g); err != nil {
				return fmt.Errorf("send garbage: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	testnet.Eventually(t, 10*time.Second, "the garbage to be counted", func() bool {
		return s.Counters().Malformed >= uint64(len(garbage))
	})
	if c := s.Counters(); c.Malformed != uint64(len(garbage)) || c.Offer != 0 {
		t.Fatalf("counters %+v", c)
	}
	h.Run(t, "ip", "addr", "flush", "dev", "eth0")

	env := w.udhcpc(h)
	if l, ok := leaseOf(s, h.MAC); !ok || l.IP.String() != env["ip"] {
		t.Fatalf("no lease after garbage: %+v", l)
	}
}
