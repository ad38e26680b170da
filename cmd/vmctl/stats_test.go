package main

import (
	"testing"

	"github.com/xdpswitch/xdpswitch/api"
	"github.com/xdpswitch/xdpswitch/vmctl/vmctltest"
)

func TestStats(t *testing.T) {
	a := vmctltest.NewAPI(t, state)
	want := `PORT  NETWORK  RX PACKETS  RX BYTES    TX PACKETS  TX BYTES  TX ERRORS  XDP REDIRECTED  XDP PASSED  DROPS
tap0  lan      10          1000        20          2000      1          10              3           runt=1,tx_ring_full=2
tap1  lan      123456789   9876543210  0           0         0          0               0           -

PORT  SOCKET RX DROPPED  RX RING FULL  FILL RING EMPTY  TX RING EMPTY  RX INVALID  TX INVALID
tap0  4                  0             5                0              0           0
tap1  0                  0             0                0              0           0

NETWORK  PORTS  MACS  LEARNED  MOVED  AGED  FULL  DHCP
lan      2      3     5        1      2     0     ack=2,discover=2,offer=2,request=2
dmz      0      0     0        0      0     4     -

FRAGMENTS    TAKEN IN  DATAGRAMS  WAITING  HELD NOW  FIRSTS  ALLOWED  DENIED  HELD  RELEASED  DROPPED
under rules  40        2          1        3         10      25       6       12    9         overlap=2

FRAGMENTS   TAKEN IN  DATAGRAMS  BYTES HELD  REASSEMBLED  DROPPED
of tunnels  8         1          1400        3            timed_out=1

QUEUE  UMEM FRAMES  FREE   FILL  TX   HELD  ACCOUNTING
0      16384        15000  1280  101  3     ok
1      16384        15105  1279  0    0     queue 1: port 7 holds 1280 fill and 0 tx frames, the loop counted 1279 and 0
`
	if out := mustVmctl(t, a.Socket, "stats"); out != want {
		t.Fatalf("stats:\n%s\nwant:\n%s", out, want)
	}
	wantJSON(t, mustVmctl(t, a.Socket, "stats", "--json"), api.Stats{Ports: state.Ports, Networks: state.Networks,
		Fragments: state.Fragments, Reassembly: state.Reassembly, Frames: state.Frames})

	if got := dhcp(&api.DHCPStats{}); got != "none yet" {
		t.Errorf("dhcp of a quiet server: %q", got)
	}
	empty := vmctltest.NewAPI(t, vmctltest.State{})
	wantJSON(t, mustVmctl(t, empty.Socket, "stats", "--json"), api.Stats{Ports: []api.Port{}, Networks: []api.Network{}, Frames: []api.FrameQueue{}})
}
