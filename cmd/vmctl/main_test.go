package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/xdpswitch/xdpswitch/api"
	"github.com/xdpswitch/xdpswitch/vmctl/vmctltest"
)

// state is what the fake daemon serves in these tests.
var state = vmctltest.State{
	Networks: []api.Network{{
		Name: "lan", Ports: []string{"tap0", "tap1"}, Gateway: "10.0.0.1/24", NAT: true,
		HostPort: &api.HostPort{Kind: "veth", Host: "xsh-lan", Switch: "xss-lan", Refused: []string{"netkit: not supported"}},
		FDB:      api.FDBStats{Entries: 3, Learned: 5, Moved: 1, Aged: 2},
		DHCP:     &api.DHCPStats{Discover: 2, Offer: 2, Request: 2, Ack: 2},
	}, {
		Name: "dmz", FDB: api.FDBStats{Full: 4},
	}},
	Ports: []api.Port{{
		Name: "tap0", Network: "lan", Ifindex: 7, XDPMode: "native", BindMode: "copy", Queues: 1,
		Counters: api.PortCounters{RxPackets: 10, RxBytes: 1000, TxPackets: 20, TxBytes: 2000, TxErrors: 1,
			Drops: map[string]uint64{"runt": 1, "tx_ring_full": 2, "same_port": 0}, XDPRedirected: 10, XDPPassed: 3,
			SocketRxDropped: 4, SocketFillRingEmpty: 5},
	}, {
		Name: "tap1", Network: "lan", Ifindex: 8, XDPMode: "generic", BindMode: "copy", Queues: 2,
		Counters: api.PortCounters{RxPackets: 123456789, RxBytes: 9876543210},
	}},
	FDB: []api.FDBEntry{
		{Network: "lan", MAC: "52:54:00:00:00:01", Port: "tap0", AgeSeconds: 1.4},
		{Network: "lan", MAC: "52:54:00:00:00:02", Port: "uplink0", AgeSeconds: 75, VTEP: "192.0.2.7"},
		{Network: "dmz", MAC: "52:54:00:00:00:03", Port: "tap9", AgeSeconds: 0},
	},
	Fragments: api.Fragments{Datagrams: 2, Pending: 1, HeldFrames: 3, HeldBytes: 4500, Fragments: 40, Firsts: 10,
		Allowed: 25, Denied: 6, Held: 12, Released: 9, Dropped: map[string]uint64{"overlap": 2, "timed_out": 0}},
	Reassembly: api.Reassembly{Datagrams: 1, Bytes: 1400, Fragments: 8, Reassembled: 3, Dropped: map[string]uint64{"timed_out": 1}},
	Frames: []api.FrameQueue{
		{Queue: 0, Total: 16384, Free: 15000, Fill: 1280, Tx: 101, Held: 3},
		{Queue: 1, Total: 16384, Free: 15105, Fill: 1279, Tx: 0, Held: 0, Error: "queue 1: port 7 holds 1280 fill and 0 tx frames, the loop counted 1279 and 0"},
	},
	Leases: []api.Lease{
		{Network: "lan", MAC: "52:54:00:00:00:01", IP: "10.0.0.100", Hostname: "web1", State: "bound", Expires: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)},
		{Network: "dmz", MAC: "52:54:00:00:00:03", IP: "10.9.0.100", State: "offered", Expires: time.Date(2030, 1, 2, 3, 5, 0, 0, time.UTC)},
	},
}

// runCLI runs the command line against the daemon at socket (given through
// $XDPSWITCH_SOCKET) and returns its output and exit status.
func runCLI(t *testing.T, socket string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	getenv := func(k string) string {
		if k == socketEnv {
			return socket
		}
		return ""
	}
	code = run(ctx, args, &out, &errOut, getenv)
	return out.String(), errOut.String(), code
}

// mustVmctl runs the command line and fails the test unless it succeeds
// quietly.
func mustVmctl(t *testing.T, socket string, args ...string) string {
	t.Helper()
	out, errOut, code := runCLI(t, socket, args...)
	if code != 0 || errOut != "" {
		t.Fatalf("vmctl %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// wantFailure runs the command line and checks that it fails with exit
// status code and one line on stderr that says all of parts.
func wantFailure(t *testing.T, socket string, code int, args []string, parts ...string) {
	t.Helper()
	out, errOut, got := runCLI(t, socket, args...)
	if got != code {
		t.Errorf("vmctl %s: exit %d, want %d\nstderr: %s", strings.Join(args, " "), got, code, errOut)
	}
	if out != "" {
		t.Errorf("vmctl %s printed on stdout:\n%s", strings.Join(args, " "), out)
	}
	if !strings.HasPrefix(errOut, "vmctl: ") || !strings.HasSuffix(errOut, "\n") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("vmctl %s: stderr is not one line starting vmctl: %q", strings.Join(args, " "), errOut)
	}
	for _, p := range parts {
		if !strings.Contains(errOut, p) {
			t.Errorf("vmctl %s: stderr %q does not say %q", strings.Join(args, " "), errOut, p)
		}
	}
}

// wantJSON checks that out is the JSON of want.
func wantJSON[T any](t *testing.T, out string, want T) {
	t.Helper()
	var got T
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatalf("output is not the JSON of a %T: %v\n%s", want, err, out)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("JSON output decodes to\n%+v\nwant\n%+v", got, want)
	}
}

func TestUsage(t *testing.T) {
	out := mustVmctl(t, "", "-h")
	for _, c := range commands() {
		if !strings.Contains(out, "\n  "+c.name+" "+c.args+"\n") {
			t.Errorf("usage lacks %s:\n%s", c.name, out)
		}
	}
	if !strings.Contains(out, "--socket PATH") || !strings.Contains(out, api.DefaultSocket) {
		t.Errorf("usage does not explain --socket:\n%s", out)
	}
	if help := mustVmctl(t, "", "help"); help != out {
		t.Errorf("vmctl help differs from vmctl -h:\n%s", help)
	}
	for _, c := range commands() {
		out := mustVmctl(t, "", c.name, "-h")
		if !strings.HasPrefix(out, "usage: vmctl "+c.name+" "+c.args+"\n") || !strings.Contains(out, "--socket PATH") {
			t.Errorf("vmctl %s -h:\n%s", c.name, out)
		}
	}
	for _, tc := range []struct {
		args  []string
		parts []string
	}{
		{nil, []string{"no command given", "(vmctl -h for help)"}},
		{[]string{"frob"}, []string{`unknown command "frob"`}},
		{[]string{"--bogus", "ports"}, []string{"flag provided but not defined: -bogus"}},
		{[]string{"ports", "--bogus"}, []string{"ports: flag provided but not defined: -bogus", "(vmctl ports -h for help)"}},
		{[]string{"ports", "extra"}, []string{`ports: unexpected argument "extra"`}},
		{[]string{"stats", "--json=maybe"}, []string{"stats: invalid boolean value"}},
		{[]string{"fdb", "--network"}, []string{"fdb: flag needs an argument: -network"}},
		{[]string{"leases", "lan"}, []string{`leases: unexpected argument "lan"`}},
		{[]string{"networks", "--socket"}, []string{"flag needs an argument"}},
	} {
		wantFailure(t, "/nonexistent/api.sock", exitUsage, tc.args, tc.parts...)
	}
}

func TestSocket(t *testing.T) {
	a := vmctltest.NewAPI(t, state)
	// $XDPSWITCH_SOCKET, then --socket before or after the command.
	mustVmctl(t, a.Socket, "ports")
	mustVmctl(t, "/nonexistent/api.sock", "--socket", a.Socket, "ports")
	mustVmctl(t, "/nonexistent/api.sock", "ports", "--socket="+a.Socket)

	missing := filepath.Join(t.TempDir(), "api.sock")
	for _, c := range [][]string{{"networks"}, {"ports"}, {"fdb"}, {"leases"}, {"stats"}, {"ports", "--json"}} {
		wantFailure(t, missing, exitFailure, c, "cannot reach xdpswitchd at "+missing, "no such file or directory", "is xdpswitchd running?")
	}
	// The default socket is the daemon's.
	e := &env{getenv: func(string) string { return "" }}
	if got := e.defaultSocket(); got != api.DefaultSocket {
		t.Errorf("default socket %s, want %s", got, api.DefaultSocket)
	}
}

func TestAPIErrors(t *testing.T) {
	a := vmctltest.NewAPI(t, state)
	a.Fail("GET", "/v1/ports", http.StatusInternalServerError, "the switch is on fire")
	wantFailure(t, a.Socket, exitFailure, []string{"ports"}, "vmctl: the switch is on fire\n")
	a.Fail("GET", "/v1/stats", http.StatusBadRequest, "bad\nrequest")
	wantFailure(t, a.Socket, exitFailure, []string{"stats", "--json"}, "vmctl: bad; request\n")
}
