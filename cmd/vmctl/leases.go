package main

import (
	"time"
)

// leases lists the DHCP leases.
func leases(e *env, args []string) error {
	fs := e.flags("leases")
	network := fs.String("network", "", "only the network `NET`")
	asJSON := fs.Bool("json", false, "print the API's JSON")
	if _, err := e.parse(fs, args, 0); err != nil {
		return err
	}
	ls, err := e.client().Leases(e.ctx, *network)
	if err != nil {
		return apiError(err)
	}
	if *asJSON {
		return e.printJSON(nonNil(ls))
	}
	rows := make([][]string, 0, len(ls))
	for _, l := range ls {
		rows = append(rows, []string{l.Network, l.MAC, l.IP, orDash(l.Hostname), l.State, l.Expires.Format(time.RFC3339)})
	}
	return e.table([]string{"NETWORK", "MAC", "IP", "HOSTNAME", "STATE", "EXPIRES"}, rows)
}
