package main

import (
	"testing"

	"github.com/xdpswitch/xdpswitch/vmctl/vmctltest"
)

func TestPorts(t *testing.T) {
	a := vmctltest.NewAPI(t, state)
	want := `NAME  NETWORK  IFINDEX  XDP      BIND  QUEUES  RX PACKETS  RX BYTES    TX PACKETS  TX BYTES  DROPS
tap0  lan      7        native   copy  1       10          1000        20          2000      3
tap1  lan      8        generic  copy  2       123456789   9876543210  0           0         0
`
	if out := mustVmctl(t, a.Socket, "ports"); out != want {
		t.Fatalf("ports:\n%s\nwant:\n%s", out, want)
	}
	wantJSON(t, mustVmctl(t, a.Socket, "ports", "--json"), state.Ports)
	empty := vmctltest.NewAPI(t, vmctltest.State{})
	if out := mustVmctl(t, empty.Socket, "--socket", empty.Socket, "ports", "--json"); out != "[]\n" {
		t.Fatalf("no ports, JSON: %q", out)
	}
}
