// Package config reads and checks the daemon's YAML configuration.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/xdpswitch/xdpswitch/bpf"
	"github.com/xdpswitch/xdpswitch/dataplane"
	"github.com/xdpswitch/xdpswitch/dataplane/afxdp"
	"github.com/xdpswitch/xdpswitch/policy"
)

// Config is the daemon's configuration file.
type Config struct {
	// RunDir holds the daemon's lock (and later its API socket).
	RunDir string `yaml:"run_dir"`
	// StateDir holds what survives a restart.
	StateDir string `yaml:"state_dir"`
	// APISocket is the control API's unix socket (run_dir/api.sock).
	APISocket string `yaml:"api_socket"`
	// MetricsListen is the address of the Prometheus endpoint
	// (127.0.0.1:9470); empty means none.
	MetricsListen string `yaml:"metrics_listen"`
	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
	// Queues is the number of switching loops; every port needs as many
	// rx queues.
	Queues int `yaml:"queues"`
	// Frames is the UMEM size of each queue, in frames.
	Frames int `yaml:"frames"`
	// FrameSize is 2048 or 4096 bytes.
	FrameSize int `yaml:"frame_size"`
	// FillFrames is each socket's base share of frames for receiving;
	// sockets receiving traffic share an eighth of the UMEM beyond it.
	FillFrames int `yaml:"fill_frames"`
	// XDPMode is auto, native or generic.
	XDPMode string `yaml:"xdp_mode"`
	// BindMode is auto, copy or zerocopy.
	BindMode string `yaml:"bind_mode"`
	FDB      FDB    `yaml:"fdb"`

	// Uplink is the host's NIC towards other hosts, for VXLAN networks.
	Uplink *Uplink `yaml:"uplink"`

	Networks []Network `yaml:"networks"`
}

// Uplink is where VXLAN tunnels start and end on this host.
type Uplink struct {
	// Device is the NIC; its XDP program takes the VXLAN traffic for our
	// VNIs and passes everything else to the host stack.
	Device string `yaml:"device"`
	// Address is the local VTEP address, IPv4 or IPv6, one the host has on
	// the device.
	Address Addr `yaml:"address"`
}

// VXLANPort is the UDP port of the networks' tunnels (4789 when none).
func (c *Config) VXLANPort() uint16 {
	for _, n := range c.Networks {
		if n.VXLAN != nil {
			return n.VXLAN.Port
		}
	}
	return 4789
}

// VXLAN joins a network to the same VNI on other hosts.
type VXLAN struct {
	VNI uint32 `yaml:"vni"`
	// Remotes are the other hosts' VTEP addresses: broadcast and unknown
	// unicast are replicated to each.
	Remotes []Addr `yaml:"remotes"`
	// Port is the UDP destination port (4789).
	Port uint16 `yaml:"port"`
}

// FDB tunes every network's forwarding database.
type FDB struct {
	MaxEntries int      `yaml:"max_entries"`
	Aging      Duration `yaml:"aging"`
}

// Network is one isolated L2 segment and the devices plugged into it.
type Network struct {
	Name  string `yaml:"name"`
	Ports []Port `yaml:"ports"`
	// Gateway is the host's address on the network (10.10.0.1/24). With
	// it the network gets a host port that carries it.
	Gateway Prefix `yaml:"gateway"`
	// Gateway6 is the host's IPv6 address on the network, optional.
	Gateway6 Prefix `yaml:"gateway6"`
	// DHCP serves addresses from the gateway's subnet; needs Gateway.
	DHCP *DHCP `yaml:"dhcp"`
	// NAT masquerades the subnet out of the host's other interfaces.
	NAT bool `yaml:"nat"`
	// VXLAN extends the network to other hosts through the uplink.
	VXLAN *VXLAN `yaml:"vxlan"`
	// Rules allow or deny every frame forwarded within the network (IP
	// frames; ARP is port security's). None: everything is allowed.
	Rules *policy.Ruleset `yaml:"rules"`
}

// Port is a device plugged in at start. In YAML either just its name, or a
// mapping that also gives the MAC of the NIC behind it, for port security.
type Port struct {
	Name string `yaml:"name"`
	MAC  MAC    `yaml:"mac"`
	// Security restricts what the port may send to its own MAC and
	// addresses; on by default when a MAC is given.
	Security *bool `yaml:"security"`
	// IPv4 addresses and IPv6 prefixes the port may use besides its DHCP
	// leases and link-local addresses.
	IPv4 []Addr   `yaml:"ipv4"`
	IPv6 []Prefix `yaml:"ipv6"`
	// Rules are the port's own, by direction: in is what the port sends
	// into the switch, out what the switch sends to it.
	Rules *policy.Ruleset `yaml:"rules"`
}

// UnmarshalYAML accepts a bare device name as well as a mapping.
func (p *Port) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		p.Name = n.Value
		return nil
	}
	type plain Port
	return n.Decode((*plain)(p))
}

// Secured tells whether port security applies to the port.
func (p *Port) Secured() bool {
	if p.Security != nil {
		return *p.Security
	}
	return p.MAC.HardwareAddr != nil
}

// HostPortNames are the devices of a network's host port: the host side
// carries the gateway address, the switch side is plugged into the switch.
func (n *Network) HostPortNames() (host, sw string) {
	return "xsh-" + n.Name, "xss-" + n.Name
}

// DHCP configures a network's DHCPv4 server.
type DHCP struct {
	// Range is the first and last address handed out.
	Range     []Addr        `yaml:"range"`
	LeaseTime Duration      `yaml:"lease_time"`
	DNS       []Addr        `yaml:"dns"`
	Domain    string        `yaml:"domain"`
	MTU       int           `yaml:"mtu"`
	Reserved  []Reservation `yaml:"reservations"`
}

// Reservation gives one MAC a fixed address.
type Reservation struct {
	MAC      MAC    `yaml:"mac"`
	IP       Addr   `yaml:"ip"`
	Hostname string `yaml:"hostname"`
}

// Prefix reads an address with its prefix length, such as 10.10.0.1/24.
type Prefix struct{ netip.Prefix }

// UnmarshalYAML parses the prefix.
func (p *Prefix) UnmarshalYAML(n *yaml.Node) error {
	v, err := netip.ParsePrefix(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not an address with a prefix length like 10.10.0.1/24", n.Line, n.Value)
	}
	p.Prefix = v
	return nil
}

// Addr reads an IP address.
type Addr struct{ netip.Addr }

// UnmarshalYAML parses the address.
func (a *Addr) UnmarshalYAML(n *yaml.Node) error {
	v, err := netip.ParseAddr(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not an IP address", n.Line, n.Value)
	}
	a.Addr = v
	return nil
}

// MAC reads an Ethernet address.
type MAC struct{ net.HardwareAddr }

// UnmarshalYAML parses the address.
func (m *MAC) UnmarshalYAML(n *yaml.Node) error {
	v, err := net.ParseMAC(n.Value)
	if err != nil || len(v) != 6 {
		return fmt.Errorf("line %d: %q is not a MAC address like 52:54:00:12:34:56", n.Line, n.Value)
	}
	m.HardwareAddr = v
	return nil
}

// Duration reads "300s", "5m" and the like.
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration like 300s or 5m", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

// Defaults for what the file leaves out.
const (
	DefaultRunDir   = "/run/xdpswitch"
	DefaultStateDir = "/var/lib/xdpswitch"
)

// Load reads and checks a config file.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse reads a config from YAML, refusing unknown keys (a typo must not
// silently leave a default in force), and checks it.
func Parse(b []byte) (*Config, error) {
	c := &Config{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the file is empty")
		}
		return nil, err
	}
	c.setDefaults()
	if err := c.Check(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Config) setDefaults() {
	if c.RunDir == "" {
		c.RunDir = DefaultRunDir
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.APISocket == "" {
		c.APISocket = filepath.Join(c.RunDir, "api.sock")
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.XDPMode == "" {
		c.XDPMode = "auto"
	}
	if c.BindMode == "" {
		c.BindMode = "auto"
	}
	if c.Queues == 0 {
		c.Queues = 1
	}
	if c.Frames == 0 {
		c.Frames = dataplane.DefaultFrames
	}
	if c.FrameSize == 0 {
		c.FrameSize = afxdp.DefaultUmemConfig().FrameSize
	}
	if c.FillFrames == 0 {
		c.FillFrames = dataplane.DefaultFillFrames
	}
	if c.FDB.MaxEntries == 0 {
		c.FDB.MaxEntries = dataplane.DefaultFDBMaxEntries
	}
	if c.FDB.Aging == 0 {
		c.FDB.Aging = Duration(dataplane.DefaultFDBAging)
	}
	for _, n := range c.Networks {
		if n.VXLAN != nil && n.VXLAN.Port == 0 {
			n.VXLAN.Port = 4789
		}
	}
}

// Check reports every problem in the config at once.
func (c *Config) Check() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if _, err := bpf.ParseXDPMode(c.XDPMode); err != nil {
		bad("xdp_mode: %v", err)
	}
	if _, err := afxdp.ParseMode(c.BindMode); err != nil {
		bad("bind_mode: %v", err)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level: %q is not debug, info, warn or error", c.LogLevel)
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			bad("metrics_listen: %q is not host:port", c.MetricsListen)
		}
	}
	if !filepath.IsAbs(c.APISocket) {
		bad("api_socket: %q is not an absolute path", c.APISocket)
	}
	umemErrs := len(errs)
	if c.Queues < 1 || c.Queues > bpf.MaxQueues {
		bad("queues: %d is not between 1 and %d", c.Queues, bpf.MaxQueues)
	}
	if c.FrameSize != 2048 && c.FrameSize != 4096 {
		bad("frame_size: %d is not 2048 or 4096", c.FrameSize)
	}
	if c.Frames < 64 || c.Frames&(c.Frames-1) != 0 {
		bad("frames: %d is not a power of two of at least 64", c.Frames)
	}
	if ring := afxdp.DefaultUmemConfig().FillRingSize; c.FillFrames < 1 || c.FillFrames > ring {
		bad("fill_frames: %d is not between 1 and %d, the fill ring's size", c.FillFrames, ring)
	}
	if len(errs) == umemErrs {
		// How they go together, as the switch will judge it.
		if err := c.Dataplane().Check(); err != nil {
			bad("frames, fill_frames: %v", err)
		}
	}
	if c.FDB.MaxEntries < 1 {
		bad("fdb.max_entries: %d is not positive", c.FDB.MaxEntries)
	}
	if c.FDB.Aging < Duration(time.Second) {
		bad("fdb.aging: %v is shorter than a second", time.Duration(c.FDB.Aging))
	}
	if len(c.Networks) == 0 {
		bad("networks: none configured")
	}
	if u := c.Uplink; u != nil {
		if err := checkDeviceName(u.Device); err != nil {
			bad("uplink.device %q: %v", u.Device, err)
		}
		if !u.Address.IsValid() {
			bad("uplink.address: the local VTEP address is missing")
		}
	}
	vnis := map[uint32]string{}
	port := uint16(0)
	for _, n := range c.Networks {
		x := n.VXLAN
		if x == nil {
			continue
		}
		if port != 0 && x.Port != port {
			bad("network %q: vxlan.port %d differs from another network's %d; the uplink listens on one port", n.Name, x.Port, port)
		}
		port = x.Port
		switch {
		case c.Uplink == nil:
			bad("network %q: vxlan needs an uplink", n.Name)
		case x.VNI == 0 || x.VNI >= 1<<24:
			bad("network %q: vxlan.vni %d is not between 1 and 16777215", n.Name, x.VNI)
		case vnis[x.VNI] != "":
			bad("network %q: vxlan.vni %d is already network %q's", n.Name, x.VNI, vnis[x.VNI])
		}
		vnis[x.VNI] = n.Name
		for _, r := range x.Remotes {
			if c.Uplink != nil && r.Is4() != c.Uplink.Address.Is4() {
				bad("network %q: vxlan remote %v is not of the uplink address's family", n.Name, r)
			}
		}
	}
	nets := map[string]bool{}
	// Devices the daemon plugs in by itself, by name.
	devices := map[string]string{}
	if c.Uplink != nil {
		devices[c.Uplink.Device] = "the uplink"
	}
	for _, n := range c.Networks {
		if n.Gateway.IsValid() {
			host, sw := n.HostPortNames()
			devices[host] = fmt.Sprintf("network %q's host port", n.Name)
			devices[sw] = fmt.Sprintf("network %q's host port", n.Name)
		}
	}
	ports := map[string]string{}
	for i, n := range c.Networks {
		switch {
		case n.Name == "":
			bad("networks[%d]: no name", i)
		case !validName(n.Name):
			bad("networks[%d]: name %q: use up to 32 letters, digits, '-', '_' or '.'", i, n.Name)
		case nets[n.Name]:
			bad("networks[%d]: name %q used twice", i, n.Name)
		}
		nets[n.Name] = true
		for _, err := range n.check() {
			bad("network %q: %v", n.Name, err)
		}
		if n.Rules != nil {
			if err := n.Rules.CheckNetwork(); err != nil {
				bad("network %q: rules: %v", n.Name, indent(err))
			}
		}
		for _, p := range n.Ports {
			if err := checkDeviceName(p.Name); err != nil {
				bad("network %q: port %q: %v", n.Name, p.Name, err)
			}
			if other, dup := ports[p.Name]; dup {
				bad("network %q: port %q is already in network %q", n.Name, p.Name, other)
			}
			if dev, taken := devices[p.Name]; taken {
				bad("network %q: port %q is %s", n.Name, p.Name, dev)
			}
			for _, a := range p.IPv4 {
				if !a.Is4() {
					bad("network %q: port %q: ipv4: %v is not IPv4", n.Name, p.Name, a)
				}
			}
			for _, pr := range p.IPv6 {
				if a := pr.Addr(); !a.Is6() || a.Is4In6() {
					bad("network %q: port %q: ipv6: %v is not IPv6", n.Name, p.Name, pr)
				}
			}
			if p.Secured() && p.MAC.HardwareAddr == nil {
				bad("network %q: port %q: security needs the mac of the NIC behind the port", n.Name, p.Name)
			}
			if p.Rules != nil {
				if err := p.Rules.Check(); err != nil {
					bad("network %q: port %q: rules: %v", n.Name, p.Name, indent(err))
				}
			}
			ports[p.Name] = n.Name
		}
	}
	return errors.Join(errs...)
}

// check reports the problems of a network's own settings.
func (n *Network) check() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if n.Name != "" {
		host, _ := n.HostPortNames()
		if err := checkDeviceName(host); err != nil && n.Gateway.IsValid() {
			bad("name too long for its host port device %q: keep network names to 11 characters", host)
		}
	}
	gw := n.Gateway.Prefix
	if gw.IsValid() {
		if !gw.Addr().Is4() {
			bad("gateway: %v is not IPv4 (use gateway6 for IPv6)", gw)
		} else if gw.Bits() > 30 || gw.Addr() == gw.Masked().Addr() {
			bad("gateway: %v must be a host address in a subnet of at least 4 addresses", gw)
		}
	}
	if g6 := n.Gateway6.Prefix; g6.IsValid() && (!g6.Addr().Is6() || g6.Addr().Is4In6()) {
		bad("gateway6: %v is not IPv6", g6)
	}
	if n.NAT && !gw.IsValid() {
		bad("nat needs a gateway")
	}
	if d := n.DHCP; d != nil {
		if !gw.IsValid() {
			bad("dhcp needs a gateway")
			return errs
		}
		subnet := gw.Masked()
		if len(d.Range) != 2 {
			bad("dhcp.range: want [first, last], got %d addresses", len(d.Range))
		} else {
			first, last := d.Range[0].Addr, d.Range[1].Addr
			switch {
			case !subnet.Contains(first) || !subnet.Contains(last):
				bad("dhcp.range: %v-%v is not inside %v", first, last, subnet)
			case last.Less(first):
				bad("dhcp.range: %v comes after %v", first, last)
			}
		}
		if d.LeaseTime != 0 && d.LeaseTime < Duration(time.Minute) {
			bad("dhcp.lease_time: %v is shorter than a minute", time.Duration(d.LeaseTime))
		}
		if d.MTU != 0 && (d.MTU < 576 || d.MTU > 9000) {
			bad("dhcp.mtu: %d is not between 576 and 9000", d.MTU)
		}
		macs, ips := map[string]bool{}, map[netip.Addr]bool{}
		for _, r := range d.Reserved {
			switch {
			case r.MAC.HardwareAddr == nil || !r.IP.IsValid():
				bad("dhcp.reservations: each needs mac and ip")
			case !subnet.Contains(r.IP.Addr) || r.IP.Addr == gw.Addr():
				bad("dhcp.reservations: %v for %v is not a free address of %v", r.IP, r.MAC, subnet)
			case macs[r.MAC.String()] || ips[r.IP.Addr]:
				bad("dhcp.reservations: %v or %v reserved twice", r.MAC, r.IP)
			}
			macs[r.MAC.String()], ips[r.IP.Addr] = true, true
		}
	}
	return errs
}

// indent puts each of a joined error's lines on its own indented line, so
// that a ruleset's many problems read as a list under their ruleset.
func indent(err error) string {
	return "\n    " + strings.ReplaceAll(err.Error(), "\n", "\n    ")
}

// validName keeps network names to what is safe in device names, file
// names, URLs and firewall comments.
func validName(s string) bool {
	if len(s) > 32 || s == "." || s == ".." { // not a path segment of its own
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return true
}

// checkDeviceName applies the kernel's rules for interface names.
func checkDeviceName(s string) error {
	if s == "" || len(s) > 15 {
		return errors.New("device names are 1 to 15 bytes")
	}
	if s == "." || s == ".." {
		return errors.New("not a device name")
	}
	for _, r := range s {
		if r == '/' || r == ':' || r <= ' ' || r > '~' {
			return fmt.Errorf("device names cannot contain %q", r)
		}
	}
	return nil
}

// Dataplane turns the config into the switch's own.
func (c *Config) Dataplane() dataplane.Config {
	xdp, _ := bpf.ParseXDPMode(c.XDPMode)
	bind, _ := afxdp.ParseMode(c.BindMode)
	umem := afxdp.DefaultUmemConfig()
	umem.NumFrames = c.Frames
	umem.FrameSize = c.FrameSize
	return dataplane.Config{
		Queues:        c.Queues,
		Umem:          umem,
		FillFrames:    c.FillFrames,
		BindMode:      bind,
		XDPMode:       xdp,
		FDBMaxEntries: c.FDB.MaxEntries,
		FDBAging:      time.Duration(c.FDB.Aging),
	}
}
