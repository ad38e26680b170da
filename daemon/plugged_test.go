package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/xdpswitch/xdpswitch/api"
	"github.com/xdpswitch/xdpswitch/config"
	"github.com/xdpswitch/xdpswitch/internal/testnet"
)

// TestPluggedPortsSurviveRestart: ports plugged in through the API come
// back when the daemon starts again, with the rules set on them since;
// those whose device went meanwhile, or that were unplugged, do not.
func TestPluggedPortsSurviveRestart(t *testing.T) {
	if !testnet.InNamespace(t) {
		return
	}
	a := testnet.NewHost(t, "10.86.0.1/24")
	b := testnet.NewHost(t, "10.86.0.2/24")
	c := testnet.NewHost(t, "10.86.0.3/24")
	state := t.TempDir()
	cfg := func() *config.Config {
		return mustParse(t, fmt.Sprintf(`
run_dir: %s
state_dir: %s
frames: 4096
networks:
  - name: lan
`, t.TempDir(), state))
	}
	var d *Daemon
	t.Cleanup(func() {
		if d != nil {
			d.Close()
		}
	})
	restart := func() *api.Client {
		t.Helper()
		if d != nil {
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
		}
		d = start(t, cfg())
		return api.NewClient(serveAPI(t, d))
	}
	recorded := func() []string {
		t.Helper()
		raw, err := os.ReadFile(filepath.Join(state, pluggedFile))
		if err != nil {
			t.Fatal(err)
		}
		var f pluggedPorts
		if err := json.Unmarshal(raw, &f); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, p := range f.Ports {
			names = append(names, p.Name)
		}
		slices.Sort(names)
		return names
	}
	ctx := context.Background()
	noTelnet := &api.Ruleset{Rules: []api.Rule{{Action: "deny", Proto: "tcp", DstPorts: []string{"23"}}}}
	noDiscard := &api.Ruleset{Rules: []api.Rule{{Action: "deny", Proto: "udp", DstPorts: []string{"9"}}, {Action: "allow", Proto: "icmp"}}}

	cl := restart()
	if _, err := cl.AddPortWith(ctx, api.AddPort{Name: a.Port, Network: "lan", MAC: a.MAC.String(), Rules: noTelnet}); err != nil {
		t.Fatal(err)
	}
	for _, h := range []*testnet.Host{b, c} {
		if _, err := cl.AddPort(ctx, h.Port, "lan"); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.SetPortRules(ctx, b.Port, noDiscard); err != nil {
		t.Fatal(err)
	}
	if err := cl.SetPortRules(ctx, a.Port, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Ping(b.IP.String(), 1); err != nil {
		t.Fatal(err)
	}

	// c's device goes while the daemon is down.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = nil
	l, err := netlink.LinkByName(c.Port)
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkDel(l); err != nil {
		t.Fatal(err)
	}
	cl = restart()
	got := portsByName(t, cl)
	if len(got) != 2 {
		t.Errorf("after a restart, ports %v; want %s and %s", got, a.Port, b.Port)
	}
	if p := got[a.Port]; p.Network != "lan" || p.MAC != a.MAC.String() || !p.Security || p.Rules != 0 {
		t.Errorf("%s after a restart: %+v; want lan, its MAC, secured, its rules removed", a.Port, p)
	}
	if p := got[b.Port]; p.Network != "lan" || p.Security || p.Rules != 2 {
		t.Errorf("%s after a restart: %+v; want lan, unsecured, the 2 rules set on it", b.Port, p)
	}
	if rs, err := cl.PortRules(ctx, b.Port); err != nil || rs.Ruleset == nil || rs.Ruleset.Rules[0].DstPorts[0] != "9" {
		t.Errorf("%s's rules after a restart: %+v, %v", b.Port, rs, err)
	}
	if err := a.Ping(b.IP.String(), 1); err != nil {
		t.Fatalf("after a restart: %v", err)
	}
	want := []string{a.Port, b.Port}
	slices.Sort(want)
	if got := recorded(); !slices.Equal(got, want) {
		t.Errorf("recorded %v, want %v", got, want)
	}

	// Unplugged through the API: not back after a restart.
	if err := cl.RemovePort(ctx, b.Port); err != nil {
		t.Fatal(err)
	}
	if got := recorded(); len(got) != 1 || got[0] != a.Port {
		t.Errorf("recorded %v after unplugging %s", got, b.Port)
	}
	cl = restart()
	if got := portsByName(t, cl); len(got) != 1 || got[a.Port].Name == "" {
		t.Errorf("after unplugging %s and a restart: %v", b.Port, got)
	}

	// A record that cannot be read is kept aside, and the daemon starts.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = nil
	if err := os.WriteFile(filepath.Join(state, pluggedFile), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	cl = restart()
	if got := portsByName(t, cl); len(got) != 0 {
		t.Errorf("ports from an unreadable record: %v", got)
	}
	if raw, err := os.ReadFile(filepath.Join(state, pluggedFile+".bad")); err != nil || string(raw) != "{not json" {
		t.Errorf("the unreadable record was not kept aside: %q, %v", raw, err)
	}
	if got := recorded(); len(got) != 0 {
		t.Errorf("recorded %v after starting without a record", got)
	}
}

// portsByName is the switch's ports, as the API lists them, by name.
func portsByName(t *testing.T, cl *api.Client) map[string]api.Port {
	t.Helper()
	ps, err := cl.Ports(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]api.Port{}
	for _, p := range ps {
		m[p.Name] = p
	}
	return m
}
