package main

import (
	"testing"

	"github.com/xdpswitch/xdpswitch/vmctl/vmctltest"
)

func TestFDB(t *testing.T) {
	a := vmctltest.NewAPI(t, state)
	want := `NETWORK  MAC                PORT     VTEP       AGE
lan      52:54:00:00:00:01  tap0     -          1s
lan      52:54:00:00:00:02  uplink0  192.0.2.7  1m15s
dmz      52:54:00:00:00:03  tap9     -          0s
`
	if out := mustVmctl(t, a.Socket, "fdb"); out != want {
		t.Fatalf("fdb:\n%s\nwant:\n%s", out, want)
	}
	want = `NETWORK  MAC                PORT  VTEP  AGE
dmz      52:54:00:00:00:03  tap9  -     0s
`
	if out := mustVmctl(t, a.Socket, "fdb", "--network", "dmz"); out != want {
		t.Fatalf("fdb --network dmz:\n%s\nwant:\n%s", out, want)
	}
	wantJSON(t, mustVmctl(t, a.Socket, "fdb", "--json"), state.FDB)
	wantJSON(t, mustVmctl(t, a.Socket, "fdb", "--json", "--network=lan"), state.FDB[:2])
	wantFailure(t, a.Socket, exitFailure, []string{"fdb", "--network", "nope"}, `vmctl: no network "nope"`)
}
