package main

import (
	"fmt"
	"strconv"

	"github.com/xdpswitch/xdpswitch/api"
)

// stats shows per-port counters and drops, the kernel's counts of the
// ports' AF_XDP sockets, and per-network FDB and DHCP counts.
func stats(e *env, args []string) error {
	fs := e.flags("stats")
	asJSON := fs.Bool("json", false, "print the API's JSON")
	if _, err := e.parse(fs, args, 0); err != nil {
		return err
	}
	st, err := e.client().Stats(e.ctx)
	if err != nil {
		return apiError(err)
	}
	if *asJSON {
		st.Ports, st.Networks = nonNil(st.Ports), nonNil(st.Networks)
		return e.printJSON(st)
	}
	rows := make([][]string, 0, len(st.Ports))
	for _, p := range st.Ports {
		c := p.Counters
		rows = append(rows, []string{
			p.Name, p.Network, u(c.RxPackets), u(c.RxBytes), u(c.TxPackets), u(c.TxBytes), u(c.TxErrors),
			u(c.XDPRedirected), u(c.XDPPassed), counts(c.Drops),
		})
	}
	if err := e.table([]string{"PORT", "NETWORK", "RX PACKETS", "RX BYTES", "TX PACKETS", "TX BYTES", "TX ERRORS", "XDP REDIRECTED", "XDP PASSED", "DROPS"}, rows); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout)
	rows = rows[:0]
	for _, p := range st.Ports {
		c := p.Counters
		rows = append(rows, []string{
			p.Name, u(c.SocketRxDropped), u(c.SocketRxRingFull), u(c.SocketFillRingEmpty),
			u(c.SocketTxRingEmpty), u(c.SocketRxInvalidDescs), u(c.SocketTxInvalidDescs),
		})
	}
	if err := e.table([]string{"PORT", "SOCKET RX DROPPED", "RX RING FULL", "FILL RING EMPTY", "TX RING EMPTY", "RX INVALID", "TX INVALID"}, rows); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout)
	rows = rows[:0]
	for _, n := range st.Networks {
		f := n.FDB
		rows = append(rows, []string{
			n.Name, strconv.Itoa(len(n.Ports)), strconv.Itoa(f.Entries), u(f.Learned), u(f.Moved), u(f.Aged), u(f.Full), dhcp(n.DHCP),
		})
	}
	return e.table([]string{"NETWORK", "PORTS", "MACS", "LEARNED", "MOVED", "AGED", "FULL", "DHCP"}, rows)
}

// dhcp shows a DHCP server's non-zero counters, "-" for no server.
func dhcp(d *api.DHCPStats) string {
	if d == nil {
		return "-"
	}
	s := counts(map[string]uint64{
		"discover": d.Discover, "offer": d.Offer, "request": d.Request, "ack": d.Ack, "nak": d.Nak,
		"release": d.Release, "decline": d.Decline, "inform": d.Inform, "malformed": d.Malformed,
		"dropped": d.Dropped, "pool_exhausted": d.PoolExhausted,
	})
	if s == "-" {
		return "none yet"
	}
	return s
}
