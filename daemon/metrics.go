package daemon

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/xdpswitch/xdpswitch/dataplane"
)

// MetricsHandler serves the daemon's Prometheus metrics. They are read from
// the switch at each scrape, so the hot path counts nothing twice.
func (d *Daemon) MetricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		metricsCollector{d},
	)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

type metricsCollector struct{ d *Daemon }

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("xdpswitch_"+name, help, labels, nil)
}

var (
	portLabels  = []string{"port", "network"}
	mRxPackets  = desc("port_rx_packets_total", "Frames the switch took from the port.", portLabels...)
	mRxBytes    = desc("port_rx_bytes_total", "Bytes the switch took from the port.", portLabels...)
	mTxPackets  = desc("port_tx_packets_total", "Frames the switch handed to the port's device.", portLabels...)
	mTxBytes    = desc("port_tx_bytes_total", "Bytes the switch handed to the port's device.", portLabels...)
	mTxErrors   = desc("port_tx_errors_total", "Transmit kicks the kernel refused.", portLabels...)
	mDrops      = desc("port_drops_total", "Frames the switch dropped, by reason.", "port", "network", "reason")
	mXDP        = desc("port_xdp_total", "Verdicts of the port's XDP program: redirected to the switch or passed to the kernel.", "port", "network", "verdict")
	mRing       = desc("port_socket_total", "The kernel's AF_XDP statistics for the port's sockets.", "port", "network", "counter")
	mFDBEntries = desc("fdb_entries", "MACs in the network's forwarding database.", "network")
	mFDBEvents  = desc("fdb_events_total", "Forwarding database changes: learned, moved, aged, and MACs refused because it was full.", "network", "event")
	mLeases     = desc("dhcp_leases", "DHCP leases by state.", "network", "state")
	mDHCP       = desc("dhcp_messages_total", "DHCP messages by type, and those dropped.", "network", "type")
	mReasm      = desc("reassembly_total", "Outer tunnel fragments: taken in, datagrams reassembled, and fragments dropped by reason.", "event")
	mReasmHeld  = desc("reassembly_bytes", "Memory holding outer tunnel fragments awaiting reassembly.")
	ruleLabels  = []string{"scope", "name", "rule"}
	mRulePkts   = desc("rule_packets_total", "Frames a rule's verdict applied to (later fragments included); rule is the rule's index or \"default\", scope network or port.", ruleLabels...)
	mRuleBytes  = desc("rule_bytes_total", "Bytes of the frames a rule's verdict applied to.", ruleLabels...)
	mFrags      = desc("fragments_total", "Fragments meeting rules: taken in, first fragments judged, allowed, denied, held early, released, and dropped by reason.", "event")
	mFragsHeld  = desc("fragments_held_frames", "Early fragments held until their first fragment's verdict.")
	mFrames     = desc("umem_frames", "A switching loop's UMEM frames by where they are: free, lent to the kernel to receive (fill) or send (tx), or held with early fragments.", "queue", "where")
	mFramesOK   = desc("umem_accounting_ok", "1 while every one of the loop's frames is in exactly one place; 0 is a bug in the switch (the daemon logs it).", "queue")
)

func (c metricsCollector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(c, ch)
}

func (c metricsCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, p := range c.d.sw.Ports() {
		k := p.Counters
		counter(mRxPackets, k.RxPackets, p.Name, p.Network)
		counter(mRxBytes, k.RxBytes, p.Name, p.Network)
		counter(mTxPackets, k.TxPackets, p.Name, p.Network)
		counter(mTxBytes, k.TxBytes, p.Name, p.Network)
		counter(mTxErrors, k.TxErrors, p.Name, p.Network)
		for reason, v := range k.Drops {
			counter(mDrops, v, p.Name, p.Network, reason)
		}
		counter(mXDP, k.XDPRedirected, p.Name, p.Network, "redirected")
		counter(mXDP, k.XDPPassed, p.Name, p.Network, "passed")
		for name, v := range map[string]uint64{
			"rx_dropped":       k.Socket.RxDropped,
			"rx_ring_full":     k.Socket.RxRingFull,
			"fill_ring_empty":  k.Socket.RxFillRingEmptyDescs,
			"tx_ring_empty":    k.Socket.TxRingEmptyDescs,
			"rx_invalid_descs": k.Socket.RxInvalidDescs,
			"tx_invalid_descs": k.Socket.TxInvalidDescs,
		} {
			counter(mRing, v, p.Name, p.Network, name)
		}
	}
	for _, n := range c.d.Networks() {
		gauge(mFDBEntries, float64(n.FDB.Entries), n.Name)
		counter(mFDBEvents, n.FDB.Learned, n.Name, "learned")
		counter(mFDBEvents, n.FDB.Moved, n.Name, "moved")
		counter(mFDBEvents, n.FDB.Aged, n.Name, "aged")
		counter(mFDBEvents, n.FDB.Full, n.Name, "full")
		if m := n.DHCP; m != nil {
			for typ, v := range map[string]uint64{
				"discover": m.Discover, "offer": m.Offer, "request": m.Request, "ack": m.Ack,
				"nak": m.Nak, "release": m.Release, "decline": m.Decline, "inform": m.Inform,
				"malformed": m.Malformed, "dropped": m.Dropped, "pool_exhausted": m.PoolExhausted,
			} {
				counter(mDHCP, v, n.Name, typ)
			}
		}
	}
	r := c.d.sw.ReassemblyStats()
	counter(mReasm, r.In, "fragments")
	counter(mReasm, r.Reassembled, "reassembled")
	for reason, v := range r.Dropped {
		counter(mReasm, v, "dropped_"+reason)
	}
	gauge(mReasmHeld, float64(r.Bytes))
	rules := func(scope, name string, info dataplane.RulesInfo, err error) {
		if err != nil || info.Ruleset == nil {
			return
		}
		for i, st := range info.Stats {
			counter(mRulePkts, st.Packets, scope, name, strconv.Itoa(i))
			counter(mRuleBytes, st.Bytes, scope, name, strconv.Itoa(i))
		}
		counter(mRulePkts, info.Default.Packets, scope, name, "default")
		counter(mRuleBytes, info.Default.Bytes, scope, name, "default")
	}
	for _, n := range c.d.sw.Networks() {
		info, err := c.d.sw.NetworkRules(n.Name)
		rules("network", n.Name, info, err)
	}
	for _, p := range c.d.sw.Ports() {
		info, err := c.d.sw.PortRules(p.Name)
		rules("port", p.Name, info, err)
	}
	f := c.d.sw.FragmentStats()
	for event, v := range map[string]uint64{
		"in": f.In, "firsts": f.Firsts, "allowed": f.Allowed, "denied": f.Denied, "held": f.Held, "released": f.Released,
	} {
		counter(mFrags, v, event)
	}
	for reason, v := range f.Dropped {
		counter(mFrags, v, "dropped_"+reason)
	}
	gauge(mFragsHeld, float64(f.HeldFrames))
	for _, f := range c.d.frames() {
		q := strconv.Itoa(f.Queue)
		for where, v := range map[string]int{"free": f.Free, "fill": f.Fill, "tx": f.Tx, "held": f.Held} {
			gauge(mFrames, float64(v), q, where)
		}
		ok := 1.0
		if f.Error != "" {
			ok = 0
		}
		gauge(mFramesOK, ok, q)
	}
	leases, _ := c.d.Leases("")
	byState := map[[2]string]int{}
	for _, l := range leases {
		byState[[2]string{l.Network, l.State}]++
	}
	for k, v := range byState {
		gauge(mLeases, float64(v), k[0], k[1])
	}
}
