package netdev

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/safchain/ethtool"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// HostPortKind is the device pair behind a network's host port.
type HostPortKind int

const (
	// NetkitSingle is one netkit device without a peer: the host stack and
	// the switch's XDP program and sockets share it.
	NetkitSingle HostPortKind = iota + 1
	// NetkitPair is a netkit pair: the host side carries the gateway
	// address, the switch side the XDP program and sockets.
	NetkitPair
	// Veth is a veth pair, used the same way as a netkit pair.
	Veth
)

func (k HostPortKind) String() string {
	switch k {
	case NetkitSingle:
		return "netkit-single"
	case NetkitPair:
		return "netkit-pair"
	case Veth:
		return "veth"
	}
	return fmt.Sprintf("HostPortKind(%d)", int(k))
}

// hostPortAlias marks devices the daemon made, so that a leftover of a
// crashed run can be recognised and replaced, and an operator's device of
// the same name never is.
const hostPortAlias = "xdpswitch host port"

// HostPort is the link between a network and the host's own stack.
type HostPort struct {
	Kind HostPortKind
	// Host is the device that carries the gateway address; the DHCP
	// server listens on it.
	Host string
	// Switch is the device the switch plugs in: the same as Host for a
	// single netkit device.
	Switch string
	// Refused says why each preferred kind was not used.
	Refused []string
	// MAC is the host side's address: the gateway's, the same for the
	// same device name in every run (see HostPortMAC).
	MAC net.HardwareAddr
}

// HostPortMAC is the address a host port's host side gets: derived from
// its name (so from its network's), locally administered. A restarted
// daemon makes its host ports anew; with a new address each time the VMs
// would keep sending to the gateway's old one until their ARP entries
// expired, a minute cut off from the host and the outside.
func HostPortMAC(name string) net.HardwareAddr {
	h := sha256.Sum256([]byte("xdpswitch host port " + name))
	mac := net.HardwareAddr(h[:6])
	mac[0] = mac[0]&^1 | 2 // unicast, locally administered
	return mac
}

// CreateHostPort makes a network's host port, trying a single netkit
// device, then a netkit pair, then a veth pair, and sets both sides up with
// the host side's checksum and segmentation offloads off: frames the host
// sends cross the switch as plain frames, with no offload state to finish
// them. A device left by a crashed run under the same name is replaced.
func CreateHostPort(host, sw string) (*HostPort, error) {
	for _, name := range []string{host, sw} {
		if err := removeLeftover(name); err != nil {
			return nil, err
		}
	}
	hp := &HostPort{Host: host, Switch: sw, MAC: HostPortMAC(host)}
	attempts := []struct {
		kind   HostPortKind
		create func() error
	}{
		{NetkitSingle, func() error { return addNetkitSingle(host) }},
		{NetkitPair, func() error { return addNetkitPair(host, sw) }},
		{Veth, func() error {
			return netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host}, PeerName: sw})
		}},
	}
	for _, a := range attempts {
		err := a.create()
		if err == nil {
			hp.Kind = a.kind
			break
		}
		hp.Refused = append(hp.Refused, fmt.Sprintf("%s: %v", a.kind, explain(err)))
	}
	if hp.Kind == 0 {
		return nil, fmt.Errorf("host port %s: no kind could be made: %s", host, strings.Join(hp.Refused, "; "))
	}
	if hp.Kind == NetkitSingle {
		hp.Switch = host
	}
	if err := hp.setUp(); err != nil {
		hp.Delete()
		return nil, err
	}
	return hp, nil
}

// explain turns the kernel's answer for an unknown link kind into words.
func explain(err error) error {
	if errors.Is(err, unix.EOPNOTSUPP) {
		return errors.New("the kernel has no such device kind (operation not supported)")
	}
	return err
}

func (hp *HostPort) setUp() error {
	if err := hp.setMAC(); err != nil {
		return err
	}
	for _, name := range []string{hp.Host, hp.Switch} {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return fmt.Errorf("host port %s: %w", name, err)
		}
		if err := netlink.LinkSetAlias(l, hostPortAlias); err != nil {
			return fmt.Errorf("host port %s: set alias: %w", name, err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("host port %s: set up: %w", name, err)
		}
	}
	if err := DisableOffloads(hp.Host); err != nil {
		return fmt.Errorf("host port %s: %w", hp.Host, err)
	}
	return nil
}

// setMAC gives the host side its address, before it is up: a device that
// comes up with one address and then changes it has already announced
// the first (its IPv6 link-local address, for one).
func (hp *HostPort) setMAC() error {
	l, err := netlink.LinkByName(hp.Host)
	if err != nil {
		return fmt.Errorf("host port %s: %w", hp.Host, err)
	}
	if err := netlink.LinkSetHardwareAddr(l, hp.MAC); err != nil {
		return fmt.Errorf("host port %s: set address %s: %w", hp.Host, hp.MAC, err)
	}
	return nil
}

// Delete removes the host port's devices (one end takes its peer along).
func (hp *HostPort) Delete() error {
	l, err := netlink.LinkByName(hp.Host)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("host port %s: %w", hp.Host, err)
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("host port %s: delete: %w", hp.Host, err)
	}
	return nil
}

func removeLeftover(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil
	}
	if l.Attrs().Alias != hostPortAlias {
		return fmt.Errorf("host port %s: a device of that name exists and is not one the switch made; rename the network's host port", name)
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("host port %s: remove leftover of an earlier run: %w", name, err)
	}
	return nil
}

// IFLA_NETKIT_PAIRING and its values; golang.org/x/sys and the netlink
// library do not have them yet.
const (
	iflaNetkitPairing  = 10
	netkitDeviceSingle = 1
)

// addNetkitSingle builds the RTM_NEWLINK request by hand: the netlink
// library's Netkit type always describes a pair.
func addNetkitSingle(name string) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_CREATE|unix.NLM_F_EXCL|unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_IFNAME, nl.ZeroTerminated(name)))
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("netkit"))
	data := info.AddRtAttr(nl.IFLA_INFO_DATA, nil)
	data.AddRtAttr(unix.IFLA_NETKIT_MODE, nl.Uint32Attr(unix.NETKIT_L2))
	data.AddRtAttr(unix.IFLA_NETKIT_POLICY, nl.Uint32Attr(unix.NETKIT_PASS))
	data.AddRtAttr(iflaNetkitPairing, nl.Uint32Attr(netkitDeviceSingle))
	req.AddData(info)
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

func addNetkitPair(host, sw string) error {
	nk := &netlink.Netkit{
		LinkAttrs:  netlink.LinkAttrs{Name: host},
		Mode:       netlink.NETKIT_MODE_L2,
		Policy:     netlink.NETKIT_POLICY_FORWARD,
		PeerPolicy: netlink.NETKIT_POLICY_FORWARD,
	}
	nk.SetPeerAttrs(&netlink.LinkAttrs{Name: sw})
	return netlink.LinkAdd(nk)
}

// DisableOffloads turns off a device's transmit checksum and segmentation
// offloads, so that what it sends is complete on the wire.
func DisableOffloads(name string) error {
	e, err := ethtool.NewEthtool()
	if err != nil {
		return fmt.Errorf("ethtool: %w", err)
	}
	defer e.Close()
	features, err := e.Features(name)
	if err != nil {
		return fmt.Errorf("read offloads: %w", err)
	}
	off := map[string]bool{}
	for f, on := range features {
		if on && (strings.HasPrefix(f, "tx-checksum") || strings.HasSuffix(f, "segmentation")) {
			off[f] = false
		}
	}
	if len(off) == 0 {
		return nil
	}
	if err := e.Change(name, off); err != nil {
		return fmt.Errorf("turn offloads off: %w", err)
	}
	return nil
}
