package main

import (
	"fmt"

	"github.com/xdpswitch/xdpswitch/vmctl"
)

// detach unplugs a NIC that attach plugged in.
func detach(e *env, args []string) error {
	fs := e.flags("detach")
	qmp := fs.String("qmp", "", "the VM's QMP `SOCKET`")
	macStr := fs.String("mac", "", "the NIC's `MAC` address (default the VM's only NIC attached by vmctl)")
	timeout := fs.Duration("timeout", vmctl.DefaultDetachTimeout, "`DURATION` the guest gets to release the NIC")
	verbose := fs.Bool("v", false, "tell each step on stderr")
	pos, err := e.parse(fs, args, 1)
	if err != nil {
		return err
	}
	if *qmp == "" {
		return cmdUsagef("detach", "--qmp SOCKET is required")
	}
	if *timeout <= 0 {
		return cmdUsagef("detach", "--timeout %v must be positive", *timeout)
	}
	mac, err := parseMAC("detach", *macStr)
	if err != nil {
		return err
	}
	o := vmctl.DetachOptions{VM: pos[0], QMPSocket: *qmp, MAC: mac, API: e.client(), Timeout: *timeout}
	if *verbose {
		o.Logf = e.logf
	}
	a, err := vmctl.Detach(e.ctx, o)
	if err != nil {
		return apiError(err)
	}
	_, err = fmt.Fprintf(e.stdout, "detached NIC %s (tap %s) from %s\n", a.MAC, a.Tap, a.VM)
	return err
}
