package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/xdpswitch/xdpswitch/api"
	"github.com/xdpswitch/xdpswitch/bpf"
	"github.com/xdpswitch/xdpswitch/dataplane"
	"github.com/xdpswitch/xdpswitch/dataplane/frag"
	"github.com/xdpswitch/xdpswitch/policy"
)

// ListenAPI opens the API's unix socket, readable and writable by root
// only: whoever can reach it can plug devices into the switch. A socket left
// by a daemon that died is replaced; one that a live daemon answers on is not.
func ListenAPI(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("api socket %s: another daemon is answering on it", path)
	}
	// A stale socket goes; anything else there is not ours to remove.
	if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() != os.ModeSocket {
		return nil, fmt.Errorf("api socket %s: something other than a socket is there; not removing it", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("api socket: remove stale %s: %w", path, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("api socket: %w", err)
	}
	return l, nil
}

// APIHandler serves the control API (see package api) for the daemon.
func (d *Daemon) APIHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/networks", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, d.apiNetworks())
	})
	mux.HandleFunc("GET /v1/ports", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, apiPorts(d.sw.Ports()))
	})
	mux.HandleFunc("POST /v1/ports", d.apiAddPort)
	mux.HandleFunc("DELETE /v1/ports/{name}", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if network, ok := d.hostPortNetwork(name); ok {
			reply(w, http.StatusConflict, api.Error{Error: fmt.Sprintf("port %s is network %s's host port; it goes with the network", name, network)})
			return
		}
		if u := d.cfg.Uplink; u != nil && u.Device == name {
			// Nothing would plug it in again short of a restart.
			reply(w, http.StatusConflict, api.Error{Error: fmt.Sprintf("port %s is the uplink; it goes when the daemon stops", name)})
			return
		}
		if err := d.sw.RemovePort(name); err != nil {
			replyError(w, err)
			return
		}
		d.recordPlugged(func(ps []api.AddPort) []api.AddPort { return without(ps, name) })
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /v1/fdb", d.apiFDB)
	mux.HandleFunc("GET /v1/leases", func(w http.ResponseWriter, r *http.Request) {
		leases, err := d.Leases(r.URL.Query().Get("network"))
		if err != nil {
			replyError(w, err)
			return
		}
		out := make([]api.Lease, 0, len(leases))
		for _, l := range leases {
			out = append(out, api.Lease{Network: l.Network, MAC: l.MAC.String(), IP: l.IP.String(), Hostname: l.Hostname, State: l.State, Expires: l.Expiry})
		}
		reply(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /v1/stats", func(w http.ResponseWriter, r *http.Request) {
		rs := d.sw.ReassemblyStats()
		st := api.Stats{
			Ports: apiPorts(d.sw.Ports()), Networks: d.apiNetworks(),
			Reassembly: api.Reassembly{
				Datagrams: rs.Datagrams, Bytes: rs.Bytes, Fragments: rs.In, Reassembled: rs.Reassembled,
				Dropped: rs.Dropped, DroppedDatagrams: rs.DroppedDatagrams,
			},
			Fragments: apiFragments(d.sw.FragmentStats()),
		}
		st.Frames = d.frames()
		reply(w, http.StatusOK, st)
	})
	mux.HandleFunc("GET /v1/networks/{name}/rules", func(w http.ResponseWriter, r *http.Request) {
		info, err := d.sw.NetworkRules(r.PathValue("name"))
		replyRules(w, info, err)
	})
	mux.HandleFunc("GET /v1/ports/{name}/rules", func(w http.ResponseWriter, r *http.Request) {
		info, err := d.sw.PortRules(r.PathValue("name"))
		replyRules(w, info, err)
	})
	// A network's rules set here last until the daemon restarts, or a
	// reload finds them changed in the config; a plugged port's are
	// recorded with it.
	mux.HandleFunc("PUT /v1/networks/{name}/rules", func(w http.ResponseWriter, r *http.Request) {
		setRules(w, r, d.sw.SetNetworkRules, nil)
	})
	mux.HandleFunc("PUT /v1/ports/{name}/rules", func(w http.ResponseWriter, r *http.Request) {
		setRules(w, r, d.sw.SetPortRules, d.recordPortRules)
	})
	mux.HandleFunc("DELETE /v1/networks/{name}/rules", func(w http.ResponseWriter, r *http.Request) {
		clearRules(w, r, d.sw.SetNetworkRules, nil)
	})
	mux.HandleFunc("DELETE /v1/ports/{name}/rules", func(w http.ResponseWriter, r *http.Request) {
		clearRules(w, r, d.sw.SetPortRules, d.recordPortRules)
	})
	// Go's profiles, on this root-only socket, show where a busy daemon's
	// CPU and memory go (go tool pprof), under the load that makes it so.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusNotFound, api.Error{Error: fmt.Sprintf("no such API call: %s %s", r.Method, r.URL.Path)})
	})
	return mux
}

func (d *Daemon) apiAddPort(w http.ResponseWriter, r *http.Request) {
	var req api.AddPort
	// The port's rules come along: as much room as PUT .../rules has.
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRulesBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		reply(w, http.StatusBadRequest, api.Error{Error: "bad request body: " + err.Error()})
		return
	}
	if req.Name == "" || req.Network == "" {
		reply(w, http.StatusBadRequest, api.Error{Error: "a port needs a name and a network"})
		return
	}
	opts, err := portOptionsFromAPI(req)
	if err != nil {
		reply(w, http.StatusBadRequest, api.Error{Error: err.Error()})
		return
	}
	if err := d.sw.AddPort(req.Name, req.Network, opts); err != nil {
		replyError(w, err)
		return
	}
	d.recordPlugged(func(ps []api.AddPort) []api.AddPort { return append(without(ps, req.Name), req) })
	p, err := d.sw.Port(req.Name)
	if err != nil {
		replyError(w, err)
		return
	}
	reply(w, http.StatusCreated, apiPort(p))
}

func portOptionsFromAPI(req api.AddPort) (dataplane.PortOptions, error) {
	var o dataplane.PortOptions
	if req.MAC != "" {
		mac, err := net.ParseMAC(req.MAC)
		if err != nil || len(mac) != 6 {
			return o, fmt.Errorf("mac %q is not a MAC address", req.MAC)
		}
		o.MAC = mac
	}
	if req.Rules != nil {
		rs, err := req.Rules.Policy()
		if err != nil {
			return o, fmt.Errorf("rules: %w", err)
		}
		o.Rules = rs
	}
	o.Security = o.MAC != nil
	if req.Security != nil {
		o.Security = *req.Security
	}
	for _, s := range req.IPv4 {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return o, fmt.Errorf("ipv4 %q is not an IPv4 address", s)
		}
		o.IPv4 = append(o.IPv4, a)
	}
	for _, s := range req.IPv6 {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is6() {
			return o, fmt.Errorf("ipv6 %q is not an IPv6 prefix", s)
		}
		o.IPv6 = append(o.IPv6, p.Masked())
	}
	return o, nil
}

func (d *Daemon) apiFDB(w http.ResponseWriter, r *http.Request) {
	var names []string
	if n := r.URL.Query().Get("network"); n != "" {
		names = []string{n}
	} else {
		for _, n := range d.sw.Networks() {
			names = append(names, n.Name)
		}
	}
	out := []api.FDBEntry{}
	for _, n := range names {
		entries, err := d.sw.FDB(n)
		if err != nil {
			replyError(w, err)
			return
		}
		for _, e := range entries {
			out = append(out, api.FDBEntry{Network: n, MAC: e.MAC, Port: e.Port, AgeSeconds: e.AgeSeconds, VTEP: e.VTEP})
		}
	}
	reply(w, http.StatusOK, out)
}

func (d *Daemon) apiNetworks() []api.Network {
	out := []api.Network{}
	for _, n := range d.Networks() {
		an := api.Network{
			Name:     n.Name,
			Ports:    n.Ports,
			Gateway:  n.Gateway,
			Gateway6: n.Gateway6,
			NAT:      n.NAT,
			FDB:      api.FDBStats(n.FDB),
			Rules:    n.Rules, RulesDefault: n.RulesDefault,
		}
		if hp := n.HostPort; hp != nil {
			an.HostPort = &api.HostPort{Kind: hp.Kind, Host: hp.Host, Switch: hp.Switch, Refused: hp.Refused}
		}
		if c := n.DHCP; c != nil {
			an.DHCP = &api.DHCPStats{
				Discover: c.Discover, Offer: c.Offer, Request: c.Request, Ack: c.Ack, Nak: c.Nak,
				Release: c.Release, Decline: c.Decline, Inform: c.Inform, Malformed: c.Malformed,
				Dropped: c.Dropped, PoolExhausted: c.PoolExhausted,
			}
		}
		out = append(out, an)
	}
	return out
}

func apiPorts(ps []dataplane.PortInfo) []api.Port {
	out := make([]api.Port, 0, len(ps))
	for _, p := range ps {
		out = append(out, apiPort(p))
	}
	return out
}

func apiPort(p dataplane.PortInfo) api.Port {
	c := p.Counters
	return api.Port{
		Name: p.Name, Network: p.Network, Ifindex: p.Ifindex, XDPMode: p.XDPMode, BindMode: p.BindMode, Queues: p.Queues,
		MAC: p.MAC, Security: p.Security, AllowedIPv4: p.AllowedIPv4, Rules: p.Rules, RulesDefault: p.RulesDefault,
		Counters: api.PortCounters{
			RxPackets: c.RxPackets, RxBytes: c.RxBytes, TxPackets: c.TxPackets, TxBytes: c.TxBytes, TxErrors: c.TxErrors,
			Drops:         c.Drops,
			XDPRedirected: c.XDPRedirected, XDPPassed: c.XDPPassed,
			SocketRxDropped:      c.Socket.RxDropped,
			SocketRxRingFull:     c.Socket.RxRingFull,
			SocketFillRingEmpty:  c.Socket.RxFillRingEmptyDescs,
			SocketTxRingEmpty:    c.Socket.TxRingEmptyDescs,
			SocketRxInvalidDescs: c.Socket.RxInvalidDescs,
			SocketTxInvalidDescs: c.Socket.TxInvalidDescs,
		},
	}
}

// replyError answers with the status that fits the switch's refusal.
func replyError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, dataplane.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, dataplane.ErrInvalid):
		code = http.StatusBadRequest
	case errors.Is(err, dataplane.ErrExists), errors.Is(err, dataplane.ErrInUse), errors.Is(err, dataplane.ErrUnfit),
		errors.Is(err, bpf.ErrDeviceBusy):
		code = http.StatusConflict
	}
	reply(w, code, api.Error{Error: err.Error()})
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// maxRulesBody bounds a ruleset sent to the API: room for the largest
// ruleset a network may have.
const maxRulesBody = 32 << 20

// recordPortRules keeps a plugged port's new rules (nil: none) with it.
func (d *Daemon) recordPortRules(name string, rs *api.Ruleset) {
	d.recordPlugged(func(ps []api.AddPort) []api.AddPort {
		for i := range ps {
			if ps[i].Name == name {
				ps[i].Rules = rs
			}
		}
		return ps
	})
}

// setRules sets the rules in a request's body on the named network or
// port, then hands them to saved, if any.
func setRules(w http.ResponseWriter, r *http.Request, set func(string, *policy.Ruleset) error, saved func(string, *api.Ruleset)) {
	var req api.Ruleset
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxRulesBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		reply(w, http.StatusBadRequest, api.Error{Error: "bad request body: " + err.Error()})
		return
	}
	rs, err := req.Policy()
	if err != nil {
		reply(w, http.StatusBadRequest, api.Error{Error: "rules: " + err.Error()})
		return
	}
	if err := set(r.PathValue("name"), rs); err != nil {
		replyError(w, err)
		return
	}
	if saved != nil {
		saved(r.PathValue("name"), &req)
	}
	w.WriteHeader(http.StatusNoContent)
}

func clearRules(w http.ResponseWriter, r *http.Request, set func(string, *policy.Ruleset) error, saved func(string, *api.Ruleset)) {
	if err := set(r.PathValue("name"), nil); err != nil {
		replyError(w, err)
		return
	}
	if saved != nil {
		saved(r.PathValue("name"), nil)
	}
	w.WriteHeader(http.StatusNoContent)
}

func replyRules(w http.ResponseWriter, info dataplane.RulesInfo, err error) {
	if err != nil {
		replyError(w, err)
		return
	}
	rs, err := api.RulesetOf(info.Ruleset)
	if err != nil {
		replyError(w, err)
		return
	}
	out := api.Rules{Ruleset: rs, Counters: make([]api.RuleCounter, len(info.Stats)), Default: api.RuleCounter(info.Default)}
	for i, st := range info.Stats {
		out.Counters[i] = api.RuleCounter(st)
	}
	reply(w, http.StatusOK, out)
}

// frames is where every loop's frames are. A failed accounting check is
// a bug in the switch, so it is also logged.
func (d *Daemon) frames() []api.FrameQueue {
	accts, _ := d.sw.CheckFrames()
	out := make([]api.FrameQueue, len(accts))
	for i, a := range accts {
		out[i] = api.FrameQueue{Queue: a.Queue, Total: a.Total, Free: a.Free, Fill: a.Fill, Tx: a.Tx, Held: a.Held}
		if a.Err != nil {
			out[i].Error = a.Err.Error()
			d.log.Error("frame accounting", "err", a.Err)
		}
	}
	return out
}

func apiFragments(st frag.TrackerStats) api.Fragments {
	return api.Fragments{
		Datagrams: st.Datagrams, Pending: st.Pending, HeldFrames: st.HeldFrames, HeldBytes: st.HeldBytes,
		Fragments: st.In, Firsts: st.Firsts, Allowed: st.Allowed, Denied: st.Denied, Held: st.Held, Released: st.Released,
		Dropped: st.Dropped, DroppedDatagrams: st.DroppedDatagrams,
	}
}
