package main

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/xdpswitch/xdpswitch/api"
	"github.com/xdpswitch/xdpswitch/internal/testnet"
	"github.com/xdpswitch/xdpswitch/vmctl/vmctltest"
)

func TestAttachUsage(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		parts []string
	}{
		{[]string{"attach"}, []string{"attach: no VM given", "(vmctl attach -h for help)"}},
		{[]string{"attach", "--qmp", "q", "--network", "lan"}, []string{"attach: no VM given"}},
		{[]string{"attach", "vm1", "vm2", "--qmp", "q", "--network", "lan"}, []string{`attach: unexpected argument "vm2"`}},
		{[]string{"attach", "vm1", "--network", "lan"}, []string{"attach: --qmp SOCKET is required"}},
		{[]string{"attach", "vm1", "--qmp", "q"}, []string{"attach: --network NET is required"}},
		{[]string{"attach", "vm1", "--qmp", "q", "--network", "lan", "--mac", "52:54:00:00:01"}, []string{`attach: --mac "52:54:00:00:01" is not an Ethernet address`}},
		{[]string{"attach", "vm1", "--qmp", "q", "--network", "lan", "--mac", "00:00:00:00:fe:80:00:00"}, []string{"is not an Ethernet address"}},
		{[]string{"attach", "vm1", "--qmp", "q", "--network", "lan", "--queues", "0"}, []string{"attach: --queues 0: a NIC has 1 to 64"}},
		{[]string{"attach", "vm1", "--qmp", "q", "--network", "lan", "--queues", "x"}, []string{"invalid value"}},
		{[]string{"attach", "vm1", "--qmp", "q", "--network", "lan", "--wait", "-1s"}, []string{"attach: --wait -1s is negative"}},
		{[]string{"attach", "vm1", "--qmp", "q", "--network", "lan", "--wait", "soon"}, []string{"invalid value"}},
	} {
		wantFailure(t, "/nonexistent/api.sock", exitUsage, tc.args, tc.parts...)
	}
}

// TestAttachFailure checks failures that come from the VM, the daemon and
// the library, with nothing made on the way.
func TestAttachFailure(t *testing.T) {
	a := vmctltest.NewAPI(t, vmctltest.State{Networks: []api.Network{{Name: "lan"}}})
	missing := filepath.Join(t.TempDir(), "vm1.qmp")
	wantFailure(t, a.Socket, exitFailure, []string{"attach", "vm1", "--qmp", missing, "--network", "lan"},
		"vmctl: attach a NIC to vm1: QMP connect on "+missing+": no such socket")
	wantFailure(t, a.Socket, exitFailure, []string{"attach", "vm1", "--qmp", missing, "--network", "lan", "--mac", "01:00:5e:00:00:01"},
		"vmctl: attach NIC 01:00:5e:00:00:01 to vm1: MAC 01:00:5e:00:00:01 is a multicast address")
	if c := a.Calls(); len(c) != 0 {
		t.Errorf("the API was asked %q", c)
	}
}

// TestAttachDetach attaches a NIC to a fake QEMU, with a fake daemon, and
// detaches it (vmctl's own tests do that with a real guest).
func TestAttachDetach(t *testing.T) {
	if !testnet.InNamespace(t) {
		return
	}
	a := vmctltest.NewAPI(t, vmctltest.State{Networks: []api.Network{{Name: "lan"}}})
	q := vmctltest.NewQMP(t)

	out := mustVmctl(t, a.Socket, "attach", "vm1", "--qmp", q.Socket, "--network", "lan", "--mac", "52:54:00:AA:00:01", "--queues", "2")
	want := `attached NIC 52:54:00:aa:00:01 to vm1
  tap      xs525400aa0001
  network  lan
  port     xs525400aa0001 (ifindex %d, XDP native, copy mode, 1 queue)
  QEMU     device xs-525400aa0001, netdev xsnd-525400aa0001, 2 queues
  guest    took the NIC
`
	ifi, err := net.InterfaceByName("xs525400aa0001")
	if err != nil {
		t.Fatalf("no tap after attach: %v", err)
	}
	if want := strings.Replace(want, "%d", strconv.Itoa(ifi.Index), 1); out != want {
		t.Fatalf("attach printed:\n%s\nwant:\n%s", out, want)
	}
	if got := a.Calls(); !slices.Equal(got, []string{"add xs525400aa0001 lan"}) {
		t.Fatalf("API calls %q", got)
	}
	if d := q.Device("xs-525400aa0001"); d == nil || d["mq"] != true {
		t.Fatalf("QEMU device %v", d)
	}

	// -v tells each step on stderr; --rules gives the port its rules.
	rules := filepath.Join(t.TempDir(), "rules.yaml")
	if err := os.WriteFile(rules, []byte("rules: [{action: deny, direction: in, proto: udp, dst_ports: [53]}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runCLI(t, a.Socket, "attach", "vm1", "--qmp", q.Socket, "--network", "lan", "--wait", "0", "-v", "--rules", rules)
	if code != 0 || !strings.Contains(out, "guest    not waited for\n") || !strings.Contains(errOut, "vm1: created tap xs") {
		t.Fatalf("attach -v: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	second := strings.Fields(strings.SplitN(out, "\n", 2)[0])[2]
	secondTap := "xs" + strings.ReplaceAll(second, ":", "")
	if out := mustVmctl(t, a.Socket, "rules", "--port", secondTap); !strings.Contains(out, "0  deny in proto udp dst_ports 53") {
		t.Fatalf("rules of the port attached with --rules:\n%s", out)
	}

	wantFailure(t, a.Socket, exitFailure, []string{"detach", "vm1", "--qmp", q.Socket},
		"vmctl: detach a NIC from vm1: the VM has 2 NICs attached by vmctl (", "52:54:00:aa:00:01", second, "); pick one by MAC")
	if out := mustVmctl(t, a.Socket, "detach", "vm1", "--qmp", q.Socket, "--mac", "52:54:00:aa:00:01"); out != "detached NIC 52:54:00:aa:00:01 (tap xs525400aa0001) from vm1\n" {
		t.Fatalf("detach printed %q", out)
	}
	if out := mustVmctl(t, a.Socket, "detach", "vm1", "--qmp", q.Socket); !strings.HasPrefix(out, "detached NIC "+second+" ") {
		t.Fatalf("detach printed %q", out)
	}
	wantFailure(t, a.Socket, exitFailure, []string{"detach", "vm1", "--qmp", q.Socket}, "vmctl: detach a NIC from vm1: the VM has no NIC attached by vmctl")
	if d, p := q.Devices(), a.Ports(); len(d)+len(p) != 0 {
		t.Fatalf("left: QEMU devices %v, ports %v", d, p)
	}

	// No daemon: nothing is left, and nothing needs undoing.
	missing := filepath.Join(t.TempDir(), "api.sock")
	wantFailure(t, missing, exitFailure, []string{"attach", "vm1", "--qmp", q.Socket, "--network", "lan", "--mac", "52:54:00:aa:00:02"},
		"vmctl: attach NIC 52:54:00:aa:00:02 to vm1: add port xs525400aa0002 to network lan: cannot reach xdpswitchd at "+missing+": connect: no such file or directory (is xdpswitchd running?")
	if _, err := net.InterfaceByName("xs525400aa0002"); err == nil {
		t.Fatal("an attach without a daemon left its tap")
	}

	// The daemon refuses the network: nothing is left.
	wantFailure(t, a.Socket, exitFailure, []string{"attach", "vm1", "--qmp", q.Socket, "--network", "wan", "--mac", "52:54:00:aa:00:02"},
		`vmctl: attach NIC 52:54:00:aa:00:02 to vm1: add port xs525400aa0002 to network wan: port xs525400aa0002: no network "wan"`)
	if _, err := net.InterfaceByName("xs525400aa0002"); err == nil {
		t.Fatal("a refused attach left its tap")
	}
}
