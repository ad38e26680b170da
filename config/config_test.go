package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// The example in configs/ must stay a valid config with the defaults it
// claims.
func TestExampleConfig(t *testing.T) {
	c, err := Load("../configs/xdpswitch.yaml")
	if err != nil {
		t.Fatal(err)
	}
	d, err := Parse([]byte("networks: [{name: lan}]"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Uplink == nil || c.Uplink.Device != "eth1" || c.VXLANPort() != 4789 {
		t.Errorf("example uplink %+v, port %d", c.Uplink, c.VXLANPort())
	}
	// Networks and the uplink are examples; everything else is a default.
	c.Networks, d.Networks = nil, nil
	c.Uplink = nil
	if !reflect.DeepEqual(c, d) {
		t.Errorf("example config differs from the defaults:\nexample  %+v\ndefaults %+v", *c, *d)
	}
	if got := time.Duration(d.FDB.Aging); got != 300*time.Second {
		t.Errorf("default aging %v, want 300s", got)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"", "empty"},
		{"networks: []", "networks: none configured"},
		{"netwrks: []", "field netwrks not found"},
		{"networks: [{name: a}, {name: a}]", `name "a" used twice`},
		{"networks: [{ports: [x]}]", "no name"},
		{"networks: [{name: 'a b'}]", "letters, digits"},
		{"networks: [{name: a, ports: [x]}, {name: b, ports: [x]}]", `port "x" is already in network "a"`},
		{"networks: [{name: a, ports: [averyveryverylongname]}]", "1 to 15 bytes"},
		{"networks: [{name: a, ports: ['a/b']}]", "cannot contain"},
		{"queues: 0\nnetworks: [{name: a}]", ""},
		{"queues: 65\nnetworks: [{name: a}]", "queues: 65 is not between 1 and 64"},
		{"frames: 1000\nnetworks: [{name: a}]", "power of two"},
		{"fill_frames: 4096\nnetworks: [{name: a}]", "fill_frames: 4096 is not between 1 and 2048"},
		{"frames: 64\nnetworks: [{name: a}]", "cannot serve one port"},
		{"frames: 256\nfill_frames: 32\nnetworks: [{name: a}]", ""},
		{"networks: [{name: '.'}]", "letters, digits"},
		{"networks: [{name: '..'}]", "letters, digits"},
		{"uplink: {device: eth1, address: 10.0.0.1}\nnetworks: [{name: a, ports: [eth1]}]", `port "eth1" is the uplink`},
		{"networks: [{name: a, gateway: 10.1.0.1/24}, {name: b, ports: [xss-a]}]", `port "xss-a" is network "a"'s host port`},
		{"networks: [{name: a, ports: [{name: t0, mac: '52:54:00:00:00:01', ipv4: ['fd00::1']}]}]", "ipv4: fd00::1 is not IPv4"},
		{"networks: [{name: a, ports: [{name: t0, mac: '52:54:00:00:00:01', ipv4: ['::ffff:10.0.0.1']}]}]", "is not IPv4"},
		{"networks: [{name: a, ports: [{name: t0, mac: '52:54:00:00:00:01', ipv6: [10.0.0.0/8]}]}]", "ipv6: 10.0.0.0/8 is not IPv6"},
		{"frame_size: 1500\nnetworks: [{name: a}]", "frame_size"},
		{"xdp_mode: turbo\nnetworks: [{name: a}]", "xdp_mode"},
		{"bind_mode: fast\nnetworks: [{name: a}]", "bind_mode"},
		{"log_level: loud\nnetworks: [{name: a}]", "log_level"},
		{"fdb: {aging: soon}\nnetworks: [{name: a}]", "not a duration"},
		{"fdb: {aging: 10ms}\nnetworks: [{name: a}]", "shorter than a second"},
		{"networks: {name: a}", "cannot unmarshal"},
		{"metrics_listen: 9470\nnetworks: [{name: a}]", "host:port"},
		{"api_socket: api.sock\nnetworks: [{name: a}]", "absolute path"},
		{"networks: [{name: a, gateway: 10.1.0.1}]", "prefix length"},
		{"networks: [{name: a, gateway: 10.1.0.0/24}]", "host address"},
		{"networks: [{name: a, gateway: 'fd00::1/64'}]", "not IPv4"},
		{"networks: [{name: a, gateway6: 10.1.0.1/24}]", "not IPv6"},
		{"networks: [{name: averylongname, gateway: 10.1.0.1/24}]", "11 characters"},
		{"networks: [{name: a, nat: true}]", "nat needs a gateway"},
		{"networks: [{name: a, vxlan: {vni: 5}}]", "vxlan needs an uplink"},
		{"uplink: {device: eth1}\nnetworks: [{name: a}]", "local VTEP address"},
		{"uplink: {device: eth1, address: 10.0.0.1}\nnetworks: [{name: a, vxlan: {vni: 0}}]", "vxlan.vni 0"},
		{"uplink: {device: eth1, address: 10.0.0.1}\nnetworks: [{name: a, vxlan: {vni: 5}}, {name: b, vxlan: {vni: 5}}]", "already network"},
		{"uplink: {device: eth1, address: 10.0.0.1}\nnetworks: [{name: a, vxlan: {vni: 5, remotes: ['fd00::2']}}]", "family"},
		{"uplink: {device: eth1, address: 'fd00::1'}\nnetworks: [{name: a, vxlan: {vni: 5, remotes: ['fd00::2'], port: 8472}}]", ""},
		{"uplink: {device: eth1, address: 10.0.0.1}\nnetworks: [{name: a, vxlan: {vni: 5, port: 8472}}, {name: b, vxlan: {vni: 6}}]", "listens on one port"},
		{"networks: [{name: a, ports: [{name: t0, security: true}]}]", "security needs the mac"},
		{"networks: [{name: a, ports: [{name: t0, mac: 'x'}]}]", "not a MAC"},
		{"networks: [{name: a, ports: [{name: t0, mac: '52:54:00:00:00:01', ipv4: [10.0.0.5], ipv6: ['fd00::/64']}, t1]}]", ""},
		{"networks: [{name: a, rules: {default: deny, rules: [{action: allow, proto: icmp}]}, ports: [{name: t0, rules: {rules: [{action: deny, direction: out, proto: tcp, dst_ports: ['22']}]}}]}]", ""},
		{"networks: [{name: a, rules: {rules: [{action: deny, direction: in}]}}]", `network "a": rules:`},
		{"networks: [{name: a, rules: {rules: [{action: deny, direction: in}]}}]", "for port rules"},
		{"networks: [{name: a, rules: {rules: [{action: deny, proto: icmp, dst_ports: ['22']}, {action: perhaps}]}}]", "icmp has no ports"},
		{"networks: [{name: a, rules: {rules: [{action: deny, proto: icmp, dst_ports: ['22']}, {action: perhaps}]}}]", `"perhaps" is not allow or deny`},
		{"networks: [{name: a, rules: {defualt: deny}}]", `unknown field "defualt"`},
		{"networks: [{name: a, ports: [{name: t0, rules: {rules: [{action: allow, src: [10.0.0.1/8]}]}}]}]", `port "t0": rules:`},
		{"networks: [{name: a, ports: [{name: t0, rules: {rules: [{action: allow, src: [10.0.0.1/8]}]}}]}]", "did you mean 10.0.0.0/8"},
		{"networks: [{name: a, dhcp: {range: [10.1.0.10, 10.1.0.20]}}]", "dhcp needs a gateway"},
		{"networks: [{name: a, gateway: 10.1.0.1/24, dhcp: {range: [10.1.0.10]}}]", "want [first, last]"},
		{"networks: [{name: a, gateway: 10.1.0.1/24, dhcp: {range: [10.1.0.10, 10.2.0.20]}}]", "not inside"},
		{"networks: [{name: a, gateway: 10.1.0.1/24, dhcp: {range: [10.1.0.30, 10.1.0.20]}}]", "comes after"},
		{"networks: [{name: a, gateway: 10.1.0.1/24, dhcp: {range: [10.1.0.10, 10.1.0.20], lease_time: 5s}}]", "shorter than a minute"},
		{"networks: [{name: a, gateway: 10.1.0.1/24, dhcp: {range: [10.1.0.10, 10.1.0.20], mtu: 100}}]", "dhcp.mtu"},
		{"networks: [{name: a, gateway: 10.1.0.1/24, dhcp: {range: [10.1.0.10, 10.1.0.20], reservations: [{mac: 'zz', ip: 10.1.0.5}]}}]", "not a MAC"},
		{"networks: [{name: a, gateway: 10.1.0.1/24, dhcp: {range: [10.1.0.10, 10.1.0.20], reservations: [{mac: '52:54:00:00:00:01', ip: 10.1.0.1}]}}]", "not a free address"},
		{"networks: [{name: a, gateway: 10.1.0.1/24, dhcp: {range: [10.1.0.10, 10.1.0.20], reservations: [{mac: '52:54:00:00:00:01', ip: 10.1.0.5}, {mac: '52:54:00:00:00:01', ip: 10.1.0.6}]}}]", "reserved twice"},
		{"networks: [{name: a, gateway: 10.1.0.1/24, gateway6: 'fd00::1/64', nat: true, dhcp: {range: [10.1.0.10, 10.1.0.20], dns: [10.1.0.1], domain: lan, mtu: 1500, lease_time: 2h, reservations: [{mac: '52:54:00:00:00:01', ip: 10.1.0.5, hostname: web}]}}]", ""},
	} {
		_, err := Parse([]byte(tc.yaml))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%q: unexpected error %v", tc.yaml, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%q: error %v, want one containing %q", tc.yaml, err, tc.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("networks: [{name: lan, ports: [a, b]}]\nfdb: {aging: 5m}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err == nil && c.Check() != nil {
			t.Fatal("Parse accepted a config that Check refuses")
		}
	})
}
