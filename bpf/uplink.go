package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// DefaultVXLANPort is the IANA VXLAN port (RFC 7348).
const DefaultVXLANPort = 4789

// DefaultFragTimeout is how long after an outer first fragment its later
// fragments still follow it to the switch: Linux's default reassembly time.
const DefaultFragTimeout = 30 * time.Second

// MaxVNI is the largest 24-bit VXLAN network identifier.
const MaxVNI = 1<<24 - 1

// MaxLocalAddrs is how many local VTEP addresses the uplink program knows.
const MaxLocalAddrs = 64

// UplinkConfig is what the uplink program is loaded with.
type UplinkConfig struct {
	// VXLANPort is the UDP destination port of VXLAN; 0 means 4789.
	VXLANPort uint16
	// Local are this host's VTEP addresses, IPv4 or IPv6: VXLAN to any other
	// address goes to the host stack. At least one.
	Local []netip.Addr
	// VNIs maps each VNI the switch serves to its network id, which the
	// program copies into the metadata record. More can be added with
	// SetVNI.
	VNIs map[uint32]uint32
	// FragTimeout bounds how long later outer fragments follow a VXLAN
	// first fragment to the switch; 0 means DefaultFragTimeout.
	FragTimeout time.Duration
}

// Uplink is the uplink program (bpf/src/uplink.c) loaded with its maps and,
// from AttachUplink, attached to the host's uplink NIC.
type Uplink struct {
	objs    uplinkObjects
	link    link.Link
	mode    XDPMode
	ifindex int
	closed  bool
}

// uplinkStatNames are the program's counters, in the order of enum
// uplink_stat in uplink.c.
var uplinkStatNames = []string{
	"decap_v4",
	"decap_v6",
	"pass_not_vxlan",
	"pass_not_local",
	"pass_unknown_vni",
	"pass_malformed",
	"frag_redirected",
	"frag_passed",
	"pass_no_socket",
	"pass_no_room",
	"drop_redirect",
}

// LoadUplinkProgram loads the uplink program and fills its maps without
// attaching it anywhere: AttachUplink uses it, and tests run the program
// with Program().Run.
func LoadUplinkProgram(cfg UplinkConfig) (*Uplink, error) {
	port := cfg.VXLANPort
	if port == 0 {
		port = DefaultVXLANPort
	}
	timeout := cfg.FragTimeout
	if timeout == 0 {
		timeout = DefaultFragTimeout
	}
	if timeout < 0 {
		return nil, fmt.Errorf("load uplink program: negative fragment timeout %v", timeout)
	}
	if len(cfg.Local) == 0 {
		return nil, errors.New("load uplink program: no local VTEP address")
	}
	if len(cfg.Local) > MaxLocalAddrs {
		return nil, fmt.Errorf("load uplink program: %d local VTEP addresses, at most %d", len(cfg.Local), MaxLocalAddrs)
	}
	for _, a := range cfg.Local {
		if !a.IsValid() || a.IsUnspecified() {
			return nil, fmt.Errorf("load uplink program: local VTEP address %v is not a usable address", a)
		}
	}
	for vni := range cfg.VNIs {
		if vni > MaxVNI {
			return nil, fmt.Errorf("load uplink program: VNI %d does not fit in 24 bits", vni)
		}
	}

	spec, err := loadUplink()
	if err != nil {
		return nil, fmt.Errorf("load uplink program: %w", err)
	}
	if err := spec.Variables[uplinkVarVxlanPort].Set(port); err != nil {
		return nil, fmt.Errorf("load uplink program: set VXLAN port: %w", err)
	}
	if err := spec.Variables[uplinkVarFragTimeoutNs].Set(uint64(timeout.Nanoseconds())); err != nil {
		return nil, fmt.Errorf("load uplink program: set fragment timeout: %w", err)
	}
	u := &Uplink{}
	if err := spec.LoadAndAssign(&u.objs, nil); err != nil {
		return nil, fmt.Errorf("load uplink program: %w", err)
	}
	for _, a := range cfg.Local {
		if err := u.objs.LocalAddrs.Put(uplinkUplinkAddr{B: a.As16()}, uint8(1)); err != nil {
			u.objs.Close()
			return nil, fmt.Errorf("load uplink program: add local address %v: %w", a, err)
		}
	}
	for vni, network := range cfg.VNIs {
		if err := u.SetVNI(vni, network); err != nil {
			u.objs.Close()
			return nil, fmt.Errorf("load uplink program: %w", err)
		}
	}
	return u, nil
}

// AttachUplink loads the uplink program and attaches it to the uplink NIC.
// Frames that are not VXLAN for a local address and a known VNI keep going
// to the host stack, so attaching never cuts the host off its NIC. A device
// that already runs an XDP program is refused (ErrDeviceBusy), like by
// AttachPort.
func AttachUplink(ifindex int, mode XDPMode, cfg UplinkConfig) (*Uplink, error) {
	name, err := deviceName(ifindex, "uplink program")
	if err != nil {
		return nil, err
	}
	u, err := LoadUplinkProgram(cfg)
	if err != nil {
		return nil, fmt.Errorf("uplink %s: %w", name, err)
	}
	u.ifindex = ifindex
	if u.link, u.mode, err = attachXDP(u.objs.XdpUplink, ifindex, mode); err != nil {
		u.objs.Close()
		return nil, fmt.Errorf("attach uplink program to %s: %w", name, err)
	}
	return u, nil
}

// Mode is the mode the program was attached in; XDPModeAuto for a program
// from LoadUplinkProgram, which is not attached.
func (u *Uplink) Mode() XDPMode { return u.mode }

// Program is the loaded program, for running it with BPF_PROG_TEST_RUN.
func (u *Uplink) Program() *ebpf.Program { return u.objs.XdpUplink }

// Register steers the VXLAN frames received on queue to the AF_XDP socket
// fd. Until a queue has a socket, its VXLAN frames go to the host stack
// untouched.
func (u *Uplink) Register(queue, fd int) error {
	if queue < 0 || queue >= MaxQueues {
		return fmt.Errorf("uplink: register socket: queue %d outside 0..%d", queue, MaxQueues-1)
	}
	if err := u.objs.Xsks.Put(uint32(queue), uint32(fd)); err != nil {
		return fmt.Errorf("uplink: register socket for queue %d: %w", queue, err)
	}
	return nil
}

// Unregister sends queue's VXLAN frames to the host stack again.
func (u *Uplink) Unregister(queue int) error {
	if queue < 0 || queue >= MaxQueues {
		return fmt.Errorf("uplink: unregister socket: queue %d outside 0..%d", queue, MaxQueues-1)
	}
	err := u.objs.Xsks.Delete(uint32(queue))
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("uplink: unregister socket for queue %d: %w", queue, err)
	}
	return nil
}

// SetVNI decapsulates VXLAN frames of vni from now on, tagging them with
// network.
func (u *Uplink) SetVNI(vni, network uint32) error {
	if vni > MaxVNI {
		return fmt.Errorf("uplink: set VNI %d: does not fit in 24 bits", vni)
	}
	if err := u.objs.Vnis.Put(vni, network); err != nil {
		return fmt.Errorf("uplink: set VNI %d: %w", vni, err)
	}
	return nil
}

// DeleteVNI lets VXLAN frames of vni go to the host stack again. Deleting a
// VNI that is not there is not an error.
func (u *Uplink) DeleteVNI(vni uint32) error {
	err := u.objs.Vnis.Delete(vni)
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("uplink: delete VNI %d: %w", vni, err)
	}
	return nil
}

// Stats reads the program's counters, summed over CPUs, by name: decap_v4
// and decap_v6 (decapsulated and handed to a socket), frag_redirected (an
// outer fragment handed to a socket raw), frag_passed (a later fragment with
// no VXLAN first fragment on record, given to the host), the pass_* reasons
// why a frame went to the host stack untouched (pass_not_vxlan,
// pass_not_local, pass_unknown_vni, pass_malformed, pass_no_socket,
// pass_no_room) and drop_redirect (decapsulated, then its socket vanished).
func (u *Uplink) Stats() (map[string]uint64, error) {
	s := make(map[string]uint64, len(uplinkStatNames))
	for key, name := range uplinkStatNames {
		var perCPU []uint64
		if err := u.objs.UplinkStats.Lookup(uint32(key), &perCPU); err != nil {
			return nil, fmt.Errorf("uplink: read program stats: %w", err)
		}
		var sum uint64
		for _, v := range perCPU {
			sum += v
		}
		s[name] = sum
	}
	return s, nil
}

// Close detaches the program (if attached) and frees its maps. Closing twice
// is a no-op.
func (u *Uplink) Close() error {
	if u.closed {
		return nil
	}
	u.closed = true
	var errs []error
	if u.link != nil {
		if err := u.link.Close(); err != nil {
			errs = append(errs, fmt.Errorf("detach uplink program: %w", err))
		}
	}
	if err := u.objs.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close uplink program: %w", err))
	}
	return errors.Join(errs...)
}

// UplinkMetaSize is the size of the metadata record the uplink program puts
// in front of every frame it hands to a socket (struct uplink_meta in
// bpf/src/meta.h): the descriptor's first UplinkMetaSize bytes are the
// record, the frame follows.
const UplinkMetaSize = 32

// UplinkMetaVersion is the record layout ParseUplinkMeta understands.
const UplinkMetaVersion = 1

// Bits of UplinkMeta.Flags.
const (
	UplinkMetaOuterIPv6   = 1 << 0 // the underlay was IPv6
	UplinkMetaOuterVLAN   = 1 << 1 // the outer frame had one 802.1Q/802.1ad tag
	UplinkMetaRawFragment = 1 << 2 // an outer fragment, handed over undecapsulated

	uplinkMetaKnownFlags = UplinkMetaOuterIPv6 | UplinkMetaOuterVLAN | UplinkMetaRawFragment
)

// UplinkMeta is the uplink program's metadata record. Its wire layout
// (struct uplink_meta, 32 bytes):
//
//	offset size
//	 0     1   version (1)
//	 1     1   flags: bit 0 outer IPv6, bit 1 outer VLAN tag, bit 2 raw fragment
//	 2     2   outer UDP source port, network byte order (0 on a non-first fragment)
//	 4     4   VNI, host byte order (0 on a raw fragment)
//	 8     4   network id from the vnis map, host byte order (0 on a raw fragment)
//	12     4   reserved, zero
//	16    16   outer source address, network byte order; IPv4 as ::ffff:a.b.c.d
//
// For a decapsulated frame the data after the record is the inner Ethernet
// frame. For a raw fragment (RawFragment) it is the whole outer frame as
// received, Ethernet header, VLAN tag and all: the switch reassembles the
// datagram and decapsulates it itself.
type UplinkMeta struct {
	Version uint8
	Flags   uint8
	// OuterSrcPort is the outer UDP source port (host order here).
	OuterSrcPort uint16
	VNI          uint32
	Network      uint32
	// OuterSrc is the remote VTEP: an IPv4 address (unmapped) over an IPv4
	// underlay, an IPv6 address over IPv6.
	OuterSrc netip.Addr

	OuterIPv6, OuterVLAN, RawFragment bool
}

// ParseUplinkMeta reads a metadata record: exactly UplinkMetaSize bytes, the
// front of a frame from the uplink's socket. It refuses anything the
// program would never write (another version, unknown flags, reserved bytes
// set, a VNI beyond 24 bits, a raw fragment with a VNI, an IPv4 underlay
// whose address is not v4-mapped), so that a frame without a record is not
// taken for one.
func ParseUplinkMeta(b []byte) (UplinkMeta, error) {
	if len(b) != UplinkMetaSize {
		return UplinkMeta{}, fmt.Errorf("uplink metadata: %d bytes, want %d", len(b), UplinkMetaSize)
	}
	m := UplinkMeta{
		Version:      b[0],
		Flags:        b[1],
		OuterSrcPort: binary.BigEndian.Uint16(b[2:4]),
		VNI:          binary.NativeEndian.Uint32(b[4:8]),
		Network:      binary.NativeEndian.Uint32(b[8:12]),
	}
	if m.Version != UplinkMetaVersion {
		return UplinkMeta{}, fmt.Errorf("uplink metadata: version %d, want %d", m.Version, UplinkMetaVersion)
	}
	if m.Flags&^uplinkMetaKnownFlags != 0 {
		return UplinkMeta{}, fmt.Errorf("uplink metadata: unknown flags %#02x", m.Flags&^uplinkMetaKnownFlags)
	}
	if b[12]|b[13]|b[14]|b[15] != 0 {
		return UplinkMeta{}, fmt.Errorf("uplink metadata: reserved bytes %x not zero", b[12:16])
	}
	if m.VNI > MaxVNI {
		return UplinkMeta{}, fmt.Errorf("uplink metadata: VNI %d does not fit in 24 bits", m.VNI)
	}
	m.OuterIPv6 = m.Flags&UplinkMetaOuterIPv6 != 0
	m.OuterVLAN = m.Flags&UplinkMetaOuterVLAN != 0
	m.RawFragment = m.Flags&UplinkMetaRawFragment != 0
	if m.RawFragment && (m.VNI != 0 || m.Network != 0) {
		return UplinkMeta{}, fmt.Errorf("uplink metadata: raw fragment with VNI %d network %d", m.VNI, m.Network)
	}
	src := netip.AddrFrom16([16]byte(b[16:32]))
	if !m.OuterIPv6 {
		if !src.Is4In6() {
			return UplinkMeta{}, fmt.Errorf("uplink metadata: IPv4 underlay but source %v is not v4-mapped", src)
		}
		src = src.Unmap()
	}
	m.OuterSrc = src
	return m, nil
}
