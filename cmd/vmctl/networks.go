package main

import (
	"strconv"
	"strings"

	"github.com/xdpswitch/xdpswitch/api"
)

// networks lists the networks with their host ports and ports.
func networks(e *env, args []string) error {
	fs := e.flags("networks")
	asJSON := fs.Bool("json", false, "print the API's JSON")
	if _, err := e.parse(fs, args, 0); err != nil {
		return err
	}
	ns, err := e.client().Networks(e.ctx)
	if err != nil {
		return apiError(err)
	}
	if *asJSON {
		return e.printJSON(nonNil(ns))
	}
	rows := make([][]string, 0, len(ns))
	for _, n := range ns {
		rows = append(rows, []string{
			n.Name, orDash(n.Gateway), orDash(n.Gateway6), yesNo(n.NAT), hostPort(n.HostPort),
			yesNo(n.DHCP != nil), strconv.Itoa(n.FDB.Entries), orDash(strings.Join(n.Ports, ",")),
		})
	}
	return e.table([]string{"NAME", "GATEWAY", "GATEWAY6", "NAT", "HOST PORT", "DHCP", "MACS", "PORTS"}, rows)
}

// hostPort shows a network's host port as "KIND HOST/SWITCH".
func hostPort(hp *api.HostPort) string {
	if hp == nil {
		return "-"
	}
	return hp.Kind + " " + hp.Host + "/" + hp.Switch
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
