package main

import (
	"testing"

	"github.com/xdpswitch/xdpswitch/vmctl/vmctltest"
)

func TestNetworks(t *testing.T) {
	a := vmctltest.NewAPI(t, state)
	want := `NAME  GATEWAY      GATEWAY6  NAT  HOST PORT             DHCP  MACS  PORTS
lan   10.0.0.1/24  -         yes  veth xsh-lan/xss-lan  yes   3     tap0,tap1
dmz   -            -         no   -                     no    0     -
`
	if out := mustVmctl(t, a.Socket, "networks"); out != want {
		t.Fatalf("networks:\n%s\nwant:\n%s", out, want)
	}
	wantJSON(t, mustVmctl(t, a.Socket, "networks", "--json"), state.Networks)

	empty := vmctltest.NewAPI(t, vmctltest.State{})
	if out := mustVmctl(t, empty.Socket, "networks"); out != "NAME  GATEWAY  GATEWAY6  NAT  HOST PORT  DHCP  MACS  PORTS\n" {
		t.Fatalf("no networks:\n%s", out)
	}
	if out := mustVmctl(t, empty.Socket, "networks", "--json"); out != "[]\n" {
		t.Fatalf("no networks, JSON: %q", out)
	}
}
