package main

import (
	"testing"

	"github.com/xdpswitch/xdpswitch/vmctl/vmctltest"
)

func TestLeases(t *testing.T) {
	a := vmctltest.NewAPI(t, state)
	want := `NETWORK  MAC                IP          HOSTNAME  STATE    EXPIRES
lan      52:54:00:00:00:01  10.0.0.100  web1      bound    2030-01-02T03:04:05Z
dmz      52:54:00:00:00:03  10.9.0.100  -         offered  2030-01-02T03:05:00Z
`
	if out := mustVmctl(t, a.Socket, "leases"); out != want {
		t.Fatalf("leases:\n%s\nwant:\n%s", out, want)
	}
	want = `NETWORK  MAC                IP          HOSTNAME  STATE  EXPIRES
lan      52:54:00:00:00:01  10.0.0.100  web1      bound  2030-01-02T03:04:05Z
`
	if out := mustVmctl(t, a.Socket, "leases", "--network", "lan"); out != want {
		t.Fatalf("leases --network lan:\n%s\nwant:\n%s", out, want)
	}
	wantJSON(t, mustVmctl(t, a.Socket, "leases", "--json"), state.Leases)
	wantJSON(t, mustVmctl(t, a.Socket, "leases", "--network", "dmz", "--json"), state.Leases[1:])
	wantFailure(t, a.Socket, exitFailure, []string{"leases", "--network", "nope"}, `vmctl: no network "nope"`)
}
