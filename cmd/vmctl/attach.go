package main

import (
	"fmt"
	"net"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/xdpswitch/xdpswitch/vmctl"
)

// attach plugs a new NIC into a running VM and into a switch network.
func attach(e *env, args []string) error {
	fs := e.flags("attach")
	qmp := fs.String("qmp", "", "the VM's QMP `SOCKET` (QEMU -qmp unix:SOCKET,server=on,wait=off)")
	network := fs.String("network", "", "the switch network `NET` the NIC joins")
	macStr := fs.String("mac", "", "the NIC's `MAC` address (default a random 52:54:00:xx:xx:xx)")
	queues := fs.Int("queues", 1, "`N` queue pairs")
	bus := fs.String("bus", "", "the PCI `BUS` for the NIC, a PCIe root port's id (default QEMU's choice, or on q35 the first empty root port)")
	wait := fs.Duration("wait", 30*time.Second, "`DURATION` the guest gets to take the NIC; 0 does not wait")
	verbose := fs.Bool("v", false, "tell each step on stderr")
	noSecurity := fs.Bool("no-security", false, "plug the NIC in without port security (its own MAC and addresses only)")
	rulesFile := fs.String("rules", "", "the port's own rules, from `FILE` (YAML as in the config)")
	pos, err := e.parse(fs, args, 1)
	if err != nil {
		return err
	}
	vm := pos[0]
	switch {
	case *qmp == "":
		return cmdUsagef("attach", "--qmp SOCKET is required")
	case *network == "":
		return cmdUsagef("attach", "--network NET is required")
	case *queues < 1 || *queues > vmctl.MaxQueues:
		return cmdUsagef("attach", "--queues %d: a NIC has 1 to %d", *queues, vmctl.MaxQueues)
	case *wait < 0:
		return cmdUsagef("attach", "--wait %v is negative", *wait)
	}
	mac, err := parseMAC("attach", *macStr)
	if err != nil {
		return err
	}
	o := vmctl.AttachOptions{
		VM: vm, QMPSocket: *qmp, Network: *network, MAC: mac, Queues: *queues, Bus: *bus,
		API: e.client(), WaitGuest: *wait, NoSecurity: *noSecurity,
	}
	if *rulesFile != "" {
		if o.Rules, err = e.readRules(*rulesFile); err != nil {
			return err
		}
	}
	if *verbose {
		o.Logf = e.logf
	}
	a, err := vmctl.Attach(e.ctx, o)
	if err != nil {
		return apiError(err)
	}
	fmt.Fprintf(e.stdout, "attached NIC %s to %s\n", a.MAC, a.VM)
	tw := tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  tap\t%s\n", a.Tap)
	fmt.Fprintf(tw, "  network\t%s\n", a.Network)
	p := a.Port
	fmt.Fprintf(tw, "  port\t%s (ifindex %d, XDP %s, %s mode, %s)\n", p.Name, p.Ifindex, orDash(p.XDPMode), orDash(p.BindMode), plural(p.Queues, "queue"))
	fmt.Fprintf(tw, "  QEMU\tdevice %s, netdev %s, %s\n", a.Device, a.Netdev, plural(a.Queues, "queue"))
	guest := "not waited for"
	if a.GuestReady {
		guest = "took the NIC"
	}
	fmt.Fprintf(tw, "  guest\t%s\n", guest)
	return tw.Flush()
}

// parseMAC parses a --mac value; "" is nil.
func parseMAC(cmd, s string) (net.HardwareAddr, error) {
	if s == "" {
		return nil, nil
	}
	mac, err := net.ParseMAC(s)
	if err != nil || len(mac) != 6 {
		return nil, cmdUsagef(cmd, "--mac %q is not an Ethernet address like 52:54:00:12:34:56", s)
	}
	return mac, nil
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return strconv.Itoa(n) + " " + what + "s"
}

// logf tells a step on stderr.
func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.stderr, format+"\n", args...)
}
