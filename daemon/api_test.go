package daemon

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xdpswitch/xdpswitch/api"
	"github.com/xdpswitch/xdpswitch/internal/testnet"
)

// serveAPI serves d's API on a socket until the test ends.
func serveAPI(t *testing.T, d *Daemon) (sock string) {
	t.Helper()
	sock = filepath.Join(t.TempDir(), "api.sock")
	l, err := ListenAPI(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: d.APIHandler()}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sock
}

func TestAPI(t *testing.T) {
	if !testnet.InNamespace(t) {
		return
	}
	a, b := testnet.NewHost(t, ""), testnet.NewHost(t, "")
	d := start(t, mustParse(t, fmt.Sprintf(`
run_dir: %s
state_dir: %s
frames: 4096
networks:
  - name: lan
    gateway: 10.85.0.1/24
    ports: [%s]
    dhcp: {range: [10.85.0.10, 10.85.0.20]}
    rules:
      rules: [{action: deny, proto: tcp, dst_ports: ["23"], comment: no telnet}]
  - name: other
`, t.TempDir(), t.TempDir(), a.Port)))
	defer d.Close()

	sock := serveAPI(t, d)
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	if _, err := ListenAPI(sock); err == nil || !strings.Contains(err.Error(), "another daemon") {
		t.Errorf("second listener on a live socket: %v", err)
	}

	ctx := context.Background()
	c := api.NewClient(sock)
	nets, err := c.Networks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(nets) != 2 || nets[0].HostPort == nil || nets[0].HostPort.Kind != "veth" || nets[0].Gateway != "10.85.0.1/24" || nets[0].DHCP == nil {
		t.Errorf("networks %+v", nets)
	}

	// Plug a port in and out through the API, with as many rules as fit
	// into well over 64 KiB of request: a port's rules may be as many as
	// those that PUT .../rules takes.
	many := &api.Ruleset{}
	for i := range 2000 {
		many.Rules = append(many.Rules, api.Rule{Action: "allow", Proto: "udp", DstPorts: []string{fmt.Sprint(20000 + i)}, Comment: "one of many"})
	}
	p, err := c.AddPortWith(ctx, api.AddPort{Name: b.Port, Network: "lan", Rules: many})
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != b.Port || p.Network != "lan" || p.XDPMode != "native" || p.Rules != len(many.Rules) {
		t.Errorf("added port %+v", p)
	}
	for _, tc := range []struct {
		name, network string
		code          int
	}{
		{b.Port, "lan", http.StatusConflict},
		{b.Port, "other", http.StatusConflict},
		{"xsnosuchdev", "lan", http.StatusNotFound},
		{testnet.NewHost(t, "").Port, "nosuchnet", http.StatusNotFound},
		{"", "lan", http.StatusBadRequest},
	} {
		_, err := c.AddPort(ctx, tc.name, tc.network)
		if se, ok := err.(*api.StatusError); !ok || se.Code != tc.code || se.Message == "" {
			t.Errorf("AddPort(%q, %q) = %v, want status %d with a message", tc.name, tc.network, err, tc.code)
		}
	}
	secured := true
	_, err = c.AddPortWith(ctx, api.AddPort{Name: testnet.NewHost(t, "").Port, Network: "lan", Security: &secured})
	if se, ok := err.(*api.StatusError); !ok || se.Code != http.StatusBadRequest || !strings.Contains(se.Message, "needs the MAC") {
		t.Errorf("a secured port without a MAC: %v, want status 400", err)
	}
	// Traffic, then the forwarding database and leases show it.
	if _, err := dhcp(t, a); err != nil {
		t.Fatal(err)
	}
	fdb, err := c.FDB(ctx, "lan")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, e := range fdb {
		found = found || (e.MAC == a.MAC.String() && e.Port == a.Port && e.Network == "lan")
	}
	if !found {
		t.Errorf("fdb %+v lacks %s on %s", fdb, a.MAC, a.Port)
	}
	leases, err := c.Leases(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != 1 || leases[0].MAC != a.MAC.String() || leases[0].State != "bound" {
		t.Errorf("leases %+v", leases)
	}
	if _, err := c.Leases(ctx, "nosuchnet"); !api.IsNotFound(err) {
		t.Errorf("leases of an unknown network: %v", err)
	}
	if _, err := c.FDB(ctx, "nosuchnet"); !api.IsNotFound(err) {
		t.Errorf("fdb of an unknown network: %v", err)
	}
	st, err := c.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Ports) != 3 || st.Ports[0].Counters.Drops == nil {
		t.Errorf("stats ports %+v", st.Ports)
	}
	// One loop: its 4096 frames, every one accounted for, some lent to
	// each socket to receive into.
	if len(st.Frames) != 1 {
		t.Errorf("stats frames %+v, want one queue", st.Frames)
	}
	for _, f := range st.Frames {
		if f.Total != 4096 || f.Free+f.Fill+f.Tx+f.Held != f.Total || f.Fill < 3 || f.Error != "" {
			t.Errorf("stats frames %+v", f)
		}
	}

	// Rules: the config's are in force and counted (DHCP went through
	// them, to the default); a port's are replaced and removed.
	rules, err := c.NetworkRules(ctx, "lan")
	if err != nil {
		t.Fatal(err)
	}
	if rs := rules.Ruleset; rs == nil || len(rs.Rules) != 1 || rs.Rules[0].DstPorts[0] != "23" || rs.Rules[0].Comment != "no telnet" ||
		len(rules.Counters) != 1 || rules.Default.Packets == 0 {
		t.Errorf("network rules %+v", rules)
	}
	if nets, _ := c.Networks(ctx); nets[0].Rules != 1 || nets[0].RulesDefault != "allow" {
		t.Errorf("network lan's rules summary: %d, %q", nets[0].Rules, nets[0].RulesDefault)
	}
	deny := &api.Ruleset{Default: "deny", Rules: []api.Rule{{Action: "allow", Proto: "udp", DstPorts: []string{"67"}}}}
	if err := c.SetPortRules(ctx, a.Port, deny); err != nil {
		t.Fatal(err)
	}
	ps, _ := c.Ports(ctx)
	for _, p := range ps {
		if p.Name == a.Port && (p.Rules != 1 || p.RulesDefault != "deny") {
			t.Errorf("port %+v: want its rules counted", p)
		}
	}
	if err := c.SetPortRules(ctx, a.Port, nil); err != nil {
		t.Fatal(err)
	}
	if r, err := c.PortRules(ctx, a.Port); err != nil || r.Ruleset != nil {
		t.Errorf("port rules after removal: %+v, %v", r, err)
	}
	for _, tc := range []struct {
		err  error
		code int
		text string
	}{
		{c.SetPortRules(ctx, a.Port, &api.Ruleset{Rules: []api.Rule{{Action: "allow", Proto: "icmp", DstPorts: []string{"1"}}}}), http.StatusBadRequest, "icmp has no ports"},
		{c.SetNetworkRules(ctx, "lan", &api.Ruleset{Rules: []api.Rule{{Action: "deny", Direction: "in"}}}), http.StatusBadRequest, "for port rules"},
		{c.SetNetworkRules(ctx, "nosuchnet", deny), http.StatusNotFound, "no network"},
		{c.SetPortRules(ctx, "xsnosuchport", deny), http.StatusNotFound, "no port"},
	} {
		if se, ok := tc.err.(*api.StatusError); !ok || se.Code != tc.code || !strings.Contains(se.Message, tc.text) {
			t.Errorf("setting rules: %v, want status %d saying %q", tc.err, tc.code, tc.text)
		}
	}
	if _, err := c.PortRules(ctx, "xsnosuchport"); !api.IsNotFound(err) {
		t.Errorf("rules of an unknown port: %v", err)
	}

	if err := c.RemovePort(ctx, "xss-lan"); err == nil || !strings.Contains(err.Error(), "host port") {
		t.Errorf("removing the host port through the API: %v", err)
	}
	// Only a socket at the API's path is stale; a file there is not ours.
	notSock := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(notSock, []byte("networks: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ListenAPI(notSock); err == nil || !strings.Contains(err.Error(), "other than a socket") {
		t.Errorf("API socket path on a file: %v", err)
	}
	if _, err := os.Stat(notSock); err != nil {
		t.Errorf("the file at the API socket's path is gone: %v", err)
	}
	if _, err := c.AddPort(ctx, "xsh-lan", "other"); err == nil || err.(*api.StatusError).Code != http.StatusConflict || !strings.Contains(err.Error(), "cut the host off") {
		t.Errorf("plugging in a device with host addresses: %v", err)
	}
	if err := c.RemovePort(ctx, b.Port); err != nil {
		t.Fatal(err)
	}
	if err := c.RemovePort(ctx, b.Port); !api.IsNotFound(err) {
		t.Errorf("removing a removed port: %v", err)
	}

	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return net.Dial("unix", sock)
	}}}
	do := func(method, path, body string) (int, string) {
		r, _ := http.NewRequest(method, "http://x"+path, strings.NewReader(body))
		resp, err := hc.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	// Nonsense gets a JSON error, not a crash.
	for _, req := range []struct{ method, path, body string }{
		{"POST", "/v1/ports", "{not json"},
		{"POST", "/v1/ports", `{"name": "x", "network": "lan", "extra": 1}`},
		{"GET", "/v1/nothing", ""},
		{"PUT", "/v1/ports", ""},
	} {
		if code, body := do(req.method, req.path, req.body); code < 400 || !strings.Contains(body, `"error"`) {
			t.Errorf("%s %s: %d %s", req.method, req.path, code, body)
		}
	}
	// The profiles: goroutines as text, a CPU profile in pprof's format
	// (gzip), a profile that does not exist refused.
	if code, body := do("GET", "/debug/pprof/goroutine?debug=1", ""); code != http.StatusOK || !strings.Contains(body, "goroutine profile:") {
		t.Errorf("goroutine profile: %d %.200s", code, body)
	}
	if code, body := do("GET", "/debug/pprof/profile?seconds=1", ""); code != http.StatusOK || !strings.HasPrefix(body, "\x1f\x8b") {
		t.Errorf("CPU profile: %d, %d bytes starting %q", code, len(body), body[:min(len(body), 8)])
	}
	if code, _ := do("GET", "/debug/pprof/nosuchprofile", ""); code != http.StatusNotFound {
		t.Errorf("an unknown profile: %d, want 404", code)
	}

	// Metrics read the same counters.
	rec := httptest.NewRecorder()
	d.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	m := rec.Body.String()
	for _, want := range []string{
		fmt.Sprintf(`xdpswitch_port_rx_packets_total{network="lan",port=%q}`, a.Port),
		`xdpswitch_port_drops_total{network="lan",port="xss-lan",reason="runt"} 0`,
		`xdpswitch_fdb_entries{network="lan"}`,
		`xdpswitch_dhcp_leases{network="lan",state="bound"} 1`,
		`xdpswitch_dhcp_messages_total{network="lan",type="ack"}`,
		`xdpswitch_port_socket_total{counter="fill_ring_empty",network="lan"`,
		`xdpswitch_rule_packets_total{name="lan",rule="0",scope="network"} 0`,
		`xdpswitch_rule_packets_total{name="lan",rule="default",scope="network"}`,
		`xdpswitch_fragments_total{event="firsts"} 0`,
		`xdpswitch_fragments_held_frames 0`,
		`xdpswitch_umem_frames{queue="0",where="fill"}`,
		`xdpswitch_umem_frames{queue="0",where="held"} 0`,
		`xdpswitch_umem_accounting_ok{queue="0"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
