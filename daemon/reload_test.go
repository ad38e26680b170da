package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/xdpswitch/xdpswitch/api"
	"github.com/xdpswitch/xdpswitch/config"
	"github.com/xdpswitch/xdpswitch/dataplane"
	"github.com/xdpswitch/xdpswitch/internal/testnet"
	"github.com/xdpswitch/xdpswitch/nat"
)

func TestReload(t *testing.T) {
	if !testnet.InNamespace(t) {
		return
	}
	var h [6]*testnet.Host
	for i := range h {
		h[i] = testnet.NewHost(t, fmt.Sprintf("10.87.0.%d/24", i+1))
	}
	run, state := t.TempDir(), t.TempDir()
	config := func(body string, args ...any) string {
		return fmt.Sprintf("run_dir: %s\nstate_dir: %s\nframes: 4096\n", run, state) + fmt.Sprintf(body, args...)
	}
	// What a run that crashed with NAT on left goes at the start, though
	// this config has none: it would masquerade a subnet no one asked for.
	if _, err := nat.Enable("crashed", netip.MustParsePrefix("10.85.0.0/24"), "lo"); err != nil {
		t.Fatal(err)
	}
	d := start(t, mustParse(t, config(`
networks:
  - name: lan
    ports:
      - %s
      - {name: %s, rules: {rules: [{action: deny, proto: udp, dst_ports: ["9"]}]}}
      - %s
    rules: {rules: [{action: deny, proto: tcp, dst_ports: ["23"]}]}
  - name: old
    gateway: 10.88.0.1/24
    dhcp: {range: [10.88.0.10, 10.88.0.20]}
    ports: [%s]
`, h[0].Port, h[1].Port, h[2].Port, h[3].Port)))
	defer d.Close()
	if natTable(t) {
		t.Error("the NAT table of a crashed run outlived the start")
	}
	cl := api.NewClient(serveAPI(t, d))
	ctx := context.Background()
	// A VM's port, plugged into the network that goes.
	if _, err := cl.AddPort(ctx, h[4].Port, "old"); err != nil {
		t.Fatal(err)
	}
	networks := func() []string {
		t.Helper()
		var names []string
		for _, n := range d.Networks() {
			names = append(names, n.Name)
		}
		return names
	}
	before := portsByName(t, cl)

	// What a running switch cannot change is refused, and nothing of the
	// config is applied.
	for _, tc := range []struct{ config, why string }{
		{strings.Replace(config("networks: [{name: lan}]\n"), "frames: 4096", "frames: 8192", 1), "frames changed"},
		{config("networks:\n  - name: old\n    gateway: 10.88.1.1/24\n"), `network "old": gateway changed`},
	} {
		err := d.Reload(mustParse(t, tc.config))
		if !errors.Is(err, ErrNeedsRestart) || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("reload: %v, want it refused as %q", err, tc.why)
		}
	}
	if got := portsByName(t, cl); len(got) != len(before) {
		t.Fatalf("a refused reload changed the ports: %v", got)
	}

	// lan: its rules replaced, h0 secured now (plugged in anew), h1's
	// rules removed, h2 unplugged, h5 plugged in. old goes, with the VM's
	// port; new comes.
	err := d.Reload(mustParse(t, config(`
networks:
  - name: lan
    ports:
      - {name: %s, mac: "%s"}
      - %s
      - %s
    rules: {default: allow, rules: [{action: deny, proto: tcp, dst_ports: ["22", "23"]}, {action: allow, proto: icmp}]}
  - name: new
`, h[0].Port, h[0].MAC, h[1].Port, h[5].Port)))
	if err != nil {
		t.Fatal(err)
	}
	if got := networks(); !slices.Equal(got, []string{"lan", "new"}) {
		t.Errorf("networks after the reload: %v", got)
	}
	got := portsByName(t, cl)
	for _, name := range []string{h[2].Port, h[3].Port, h[4].Port, "xss-old"} {
		if _, ok := got[name]; ok {
			t.Errorf("%s still plugged in", name)
		}
	}
	if p := got[h[0].Port]; !p.Security || p.MAC != h[0].MAC.String() {
		t.Errorf("%s: %+v, want secured with its MAC", h[0].Port, p)
	}
	if p := got[h[1].Port]; p.Rules != 0 {
		t.Errorf("%s: %d rules, want none", h[1].Port, p.Rules)
	}
	if p := got[h[5].Port]; p.Network != "lan" {
		t.Errorf("%s: %+v, want plugged into lan", h[5].Port, p)
	}
	if rs, err := cl.NetworkRules(ctx, "lan"); err != nil || rs.Ruleset == nil || len(rs.Ruleset.Rules) != 2 {
		t.Errorf("lan's rules: %+v, %v", rs, err)
	}
	if err := h[0].Ping(h[5].IP.String(), 1); err != nil {
		t.Error(err)
	}
	if err := h[1].Ping(h[5].IP.String(), 1); err != nil {
		t.Error(err)
	}
	if l, err := d.Leases("old"); err == nil {
		t.Errorf("leases of the removed network: %v", l)
	}

	// A step that fails is reported; the rest is applied, and the next
	// reload starts from what runs. h1 moves from lan (listed after it)
	// to new.
	moved := fmt.Sprintf(`
networks:
  - name: new
    ports: [%s, %s]
  - name: lan
    ports: [%s, xsnosuchdev]
`, h[2].Port, h[1].Port, h[0].Port)
	err = d.Reload(mustParse(t, config(`%s  - name: broken
    gateway: 10.89.0.1/24
    ports: [xsnosuchdev2]
`, moved)))
	if err == nil || !strings.Contains(err.Error(), "xsnosuchdev") || !strings.Contains(err.Error(), "xsnosuchdev2") {
		t.Errorf("reload with missing devices: %v", err)
	}
	// A network that could not be set up whole is not set up at all.
	if got := networks(); !slices.Equal(got, []string{"lan", "new"}) {
		t.Errorf("networks after a reload that failed to add one: %v", got)
	}
	if _, err := netlink.LinkByName("xsh-broken"); err == nil {
		t.Error("the failed network's host port is left")
	}
	got = portsByName(t, cl)
	if _, ok := got[h[5].Port]; ok {
		t.Errorf("%s still plugged in", h[5].Port)
	}
	for _, i := range []int{1, 2} {
		if p := got[h[i].Port]; p.Network != "new" {
			t.Errorf("%s: %+v, want plugged into new", h[i].Port, p)
		}
	}
	if err := h[1].Ping(h[2].IP.String(), 1); err != nil {
		t.Error(err)
	}

	// Converged: the same config again changes nothing but the missing
	// devices, which it reports again.
	before = portsByName(t, cl)
	err = d.Reload(mustParse(t, config("%s", moved)))
	if err == nil || !strings.Contains(err.Error(), "xsnosuchdev") {
		t.Errorf("reload with a missing device, again: %v", err)
	}
	if got := portsByName(t, cl); len(got) != len(before) {
		t.Errorf("ports after the same config again: %v, before %v", got, before)
	}
	if p := got[h[0].Port]; p.Security {
		t.Errorf("%s still secured: %+v", h[0].Port, p)
	}

	// A config port that the API holds stays the API's, and every reload
	// says why the config cannot have it.
	if _, err := cl.AddPort(ctx, h[3].Port, "new"); err != nil {
		t.Fatal(err)
	}
	held := fmt.Sprintf("networks:\n  - name: new\n    ports: [%s, %s]\n  - name: lan\n    ports: [%s, %s]\n",
		h[2].Port, h[1].Port, h[0].Port, h[3].Port)
	for range 2 {
		err = d.Reload(mustParse(t, config("%s", held)))
		if err == nil || !strings.Contains(err.Error(), "plugged in through the API") || strings.Contains(err.Error(), "exists") {
			t.Errorf("reload of a port the API holds: %v", err)
		}
		if p := portsByName(t, cl)[h[3].Port]; p.Network != "new" {
			t.Errorf("%s: %+v, want still the API's, in new", h[3].Port, p)
		}
	}

	// Rules the API set stay until the config changes its own: a config
	// whose rules only moved to other lines has not.
	ruled := held + "    rules: {rules: [{action: deny, proto: tcp, dst_ports: [\"23\"]}]}\n"
	_ = d.Reload(mustParse(t, config("%s", ruled))) // h3 is still the API's
	if err := cl.SetNetworkRules(ctx, "lan", &api.Ruleset{Rules: []api.Rule{{Action: "deny", Proto: "udp"}, {Action: "allow"}}}); err != nil {
		t.Fatal(err)
	}
	_ = d.Reload(mustParse(t, config("# a line more above the rules\n%s", ruled)))
	if rs, err := cl.NetworkRules(ctx, "lan"); err != nil || rs.Ruleset == nil || len(rs.Ruleset.Rules) != 2 {
		t.Errorf("lan's rules after a reload that moved the config's: %+v, %v; want the API's two", rs.Ruleset, err)
	}
}

// TestReloadVXLAN: a VXLAN network that a reload cannot set up whole is
// not left behind, and tunnels cannot move to a UDP port other than the
// one the uplink took at the start.
func TestReloadVXLAN(t *testing.T) {
	if !testnet.InNamespace(t) {
		return
	}
	up, vm := testnet.NewHost(t, "10.86.0.2/24"), testnet.NewHost(t, "10.86.1.2/24")
	run, state := t.TempDir(), t.TempDir()
	withNetworks := func(networks string, args ...any) *config.Config {
		return mustParse(t, fmt.Sprintf("run_dir: %s\nstate_dir: %s\nframes: 4096\nuplink: {device: %s, address: 10.86.0.1}\nnetworks:\n  - name: lan\n", run, state, up.Port)+
			fmt.Sprintf(networks, args...))
	}
	d := start(t, withNetworks(""))
	defer d.Close()
	if err := api.NewClient(serveAPI(t, d)).RemovePort(context.Background(), up.Port); err == nil || !strings.Contains(err.Error(), "is the uplink") {
		t.Errorf("removing the uplink through the API: %v", err)
	}
	inSwitch := func(name string) bool {
		return slices.ContainsFunc(d.Switch().Networks(), func(n dataplane.NetworkInfo) bool { return n.Name == name })
	}

	err := d.Reload(withNetworks("  - {name: vx, vxlan: {vni: 7, port: 8472}}\n"))
	if !errors.Is(err, ErrNeedsRestart) || !strings.Contains(err.Error(), "VXLAN port changed") {
		t.Errorf("reload that moves the tunnels to port 8472: %v, want it refused", err)
	}
	err = d.Reload(withNetworks("  - {name: vx, vxlan: {vni: 7}, ports: [xsnosuchdev]}\n"))
	if err == nil || !strings.Contains(err.Error(), "xsnosuchdev") {
		t.Errorf("reload with a missing device: %v", err)
	}
	if inSwitch("vx") {
		t.Error("the VXLAN network that could not be set up is left in the switch")
	}
	if err := d.Reload(withNetworks("  - {name: vx, vxlan: {vni: 7}, ports: [%s]}\n", vm.Port)); err != nil {
		t.Fatal(err)
	}
	if !inSwitch("vx") {
		t.Error("the VXLAN network is not in the switch")
	}
}
