package main

import (
	"strconv"
)

// ports lists the ports with their counters.
func ports(e *env, args []string) error {
	fs := e.flags("ports")
	asJSON := fs.Bool("json", false, "print the API's JSON")
	if _, err := e.parse(fs, args, 0); err != nil {
		return err
	}
	ps, err := e.client().Ports(e.ctx)
	if err != nil {
		return apiError(err)
	}
	if *asJSON {
		return e.printJSON(nonNil(ps))
	}
	rows := make([][]string, 0, len(ps))
	for _, p := range ps {
		var drops uint64
		for _, n := range p.Counters.Drops {
			drops += n
		}
		c := p.Counters
		rows = append(rows, []string{
			p.Name, p.Network, strconv.Itoa(p.Ifindex), orDash(p.XDPMode), orDash(p.BindMode), strconv.Itoa(p.Queues),
			u(c.RxPackets), u(c.RxBytes), u(c.TxPackets), u(c.TxBytes), u(drops),
		})
	}
	return e.table([]string{"NAME", "NETWORK", "IFINDEX", "XDP", "BIND", "QUEUES", "RX PACKETS", "RX BYTES", "TX PACKETS", "TX BYTES", "DROPS"}, rows)
}

func u(n uint64) string { return strconv.FormatUint(n, 10) }
