package main

import (
	"fmt"
	"strconv"

	"github.com/xdpswitch/xdpswitch/api"
)

// stats shows per-port counters and drops, the kernel's counts of the
// ports' AF_XDP sockets, per-network FDB and DHCP counts, and the
// switch's fragment tracking and tunnel reassembly, and where each
// queue's UMEM frames are.
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
		st.Ports, st.Networks, st.Frames = nonNil(st.Ports), nonNil(st.Networks), nonNil(st.Frames)
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
	if err := e.table([]string{"NETWORK", "PORTS", "MACS", "LEARNED", "MOVED", "AGED", "FULL", "DHCP"}, rows); err != nil {
		return err
	}
	// Fragments of datagrams that met rules, and the tunnel's outer
	// fragments: where a fragmented datagram that never arrived went.
	fmt.Fprintln(e.stdout)
	f := st.Fragments
	if err := e.table([]string{"FRAGMENTS", "TAKEN IN", "DATAGRAMS", "WAITING", "HELD NOW", "FIRSTS", "ALLOWED", "DENIED", "HELD", "RELEASED", "DROPPED"},
		[][]string{{"under rules", u(f.Fragments), strconv.Itoa(f.Datagrams), strconv.Itoa(f.Pending), strconv.Itoa(f.HeldFrames),
			u(f.Firsts), u(f.Allowed), u(f.Denied), u(f.Held), u(f.Released), counts(f.Dropped)}}); err != nil {
		return err
	}
	fmt.Fprintln(e.stdout)
	r := st.Reassembly
	if err := e.table([]string{"FRAGMENTS", "TAKEN IN", "DATAGRAMS", "BYTES HELD", "REASSEMBLED", "DROPPED"},
		[][]string{{"of tunnels", u(r.Fragments), strconv.Itoa(r.Datagrams), strconv.Itoa(r.Bytes), u(r.Reassembled), counts(r.Dropped)}}); err != nil {
		return err
	}
	// Where the frames are: when ports drop for want of one, the fill
	// column shows them lent to the kernel, held ones wait with fragments.
	fmt.Fprintln(e.stdout)
	rows = rows[:0]
	for _, f := range st.Frames {
		check := "ok"
		if f.Error != "" {
			check = f.Error
		}
		rows = append(rows, []string{strconv.Itoa(f.Queue), strconv.Itoa(f.Total), strconv.Itoa(f.Free), strconv.Itoa(f.Fill),
			strconv.Itoa(f.Tx), strconv.Itoa(f.Held), check})
	}
	return e.table([]string{"QUEUE", "UMEM FRAMES", "FREE", "FILL", "TX", "HELD", "ACCOUNTING"}, rows)
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
