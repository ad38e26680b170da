// Package api is the daemon's control API: HTTP with JSON bodies over a unix
// socket, versioned under /v1/. The daemon serves it; vmctl and scripts use
// the Client here.
//
//	GET    /v1/networks              networks, their host ports and DHCP counters
//	GET    /v1/ports                 ports with their counters
//	POST   /v1/ports                 plug a device in: {"name": "tap0", "network": "lan"}
//	DELETE /v1/ports/{name}          unplug it
//	GET    /v1/fdb[?network=NAME]    learned MACs
//	GET    /v1/leases[?network=NAME] DHCP leases
//	GET    /v1/stats                 counters of ports, forwarding databases and DHCP; where the frames are
//	GET    /v1/networks/{name}/rules a network's rules and their counters
//	PUT    /v1/networks/{name}/rules replace them: a Ruleset
//	DELETE /v1/networks/{name}/rules remove them (everything is allowed)
//	GET, PUT, DELETE /v1/ports/{name}/rules   the same for a port
//	GET    /debug/pprof/...          Go's profiles of the daemon (net/http/pprof), for go tool pprof
//
// Errors come back with a fitting status code and {"error": "message"}.
//
// The daemon records the ports plugged in here, and the rules then set on
// them, and plugs them in again when it restarts, as long as their device
// is still there. Rules set here on a network or on a port from the
// config last until the daemon restarts, or a reload finds them changed
// in the config: the config is theirs.
package api

import (
	"time"
)

// DefaultSocket is where the daemon listens unless its config says
// otherwise (api_socket).
const DefaultSocket = "/run/xdpswitch/api.sock"

// Error is the body of every failed request.
type Error struct {
	Error string `json:"error"`
}

// AddPort is the body of POST /v1/ports.
type AddPort struct {
	Name    string `json:"name"`
	Network string `json:"network"`
	// MAC is the address of the NIC behind the port (a VM's virtio-net).
	MAC string `json:"mac,omitempty"`
	// Security restricts the port to its own MAC and addresses; on by
	// default when MAC is given.
	Security *bool `json:"security,omitempty"`
	// IPv4 addresses and IPv6 prefixes the port may use besides its DHCP
	// leases and link-local addresses.
	IPv4 []string `json:"ipv4,omitempty"`
	IPv6 []string `json:"ipv6,omitempty"`
	// Rules are the port's own rules, in force from the first frame.
	Rules *Ruleset `json:"rules,omitempty"`
}

// Port is a port with its counters.
type Port struct {
	Name     string `json:"name"`
	Network  string `json:"network"`
	Ifindex  int    `json:"ifindex"`
	XDPMode  string `json:"xdp_mode"`
	BindMode string `json:"bind_mode"`
	Queues   int    `json:"queues"`
	MAC      string `json:"mac,omitempty"`
	Security bool   `json:"security"`
	// AllowedIPv4 are the addresses a secured port may send from
	// (configured and leased); none means any, until a lease is granted.
	AllowedIPv4 []string `json:"allowed_ipv4,omitempty"`
	// Rules is how many rules the port has; RulesDefault their default.
	Rules        int          `json:"rules"`
	RulesDefault string       `json:"rules_default,omitempty"`
	Counters     PortCounters `json:"counters"`
}

// PortCounters are a port's counts. Rx is what the switch took from the
// port, Tx what it handed to the port's device.
type PortCounters struct {
	RxPackets uint64            `json:"rx_packets"`
	RxBytes   uint64            `json:"rx_bytes"`
	TxPackets uint64            `json:"tx_packets"`
	TxBytes   uint64            `json:"tx_bytes"`
	TxErrors  uint64            `json:"tx_errors"`
	Drops     map[string]uint64 `json:"drops"`
	// The XDP program's verdicts, and the kernel's AF_XDP statistics.
	XDPRedirected        uint64 `json:"xdp_redirected"`
	XDPPassed            uint64 `json:"xdp_passed"`
	SocketRxDropped      uint64 `json:"socket_rx_dropped"`
	SocketRxRingFull     uint64 `json:"socket_rx_ring_full"`
	SocketFillRingEmpty  uint64 `json:"socket_fill_ring_empty"`
	SocketTxRingEmpty    uint64 `json:"socket_tx_ring_empty"`
	SocketRxInvalidDescs uint64 `json:"socket_rx_invalid_descs"`
	SocketTxInvalidDescs uint64 `json:"socket_tx_invalid_descs"`
}

// Network is a network as the daemon runs it.
type Network struct {
	Name     string     `json:"name"`
	Ports    []string   `json:"ports"`
	Gateway  string     `json:"gateway,omitempty"`
	Gateway6 string     `json:"gateway6,omitempty"`
	NAT      bool       `json:"nat"`
	HostPort *HostPort  `json:"host_port,omitempty"`
	FDB      FDBStats   `json:"fdb"`
	DHCP     *DHCPStats `json:"dhcp,omitempty"`
	// Rules is how many rules the network has; RulesDefault their default.
	Rules        int    `json:"rules"`
	RulesDefault string `json:"rules_default,omitempty"`
}

// HostPort is the network's link to the host's stack: which kind of
// device it got, and why the preferred kinds were refused.
type HostPort struct {
	Kind    string   `json:"kind"`
	Host    string   `json:"host"`
	Switch  string   `json:"switch"`
	Refused []string `json:"refused,omitempty"`
}

// FDBStats counts a forwarding database's changes.
type FDBStats struct {
	Entries int    `json:"entries"`
	Learned uint64 `json:"learned"`
	Moved   uint64 `json:"moved"`
	Aged    uint64 `json:"aged"`
	Full    uint64 `json:"full"`
}

// DHCPStats counts a DHCP server's messages.
type DHCPStats struct {
	Discover      uint64 `json:"discover"`
	Offer         uint64 `json:"offer"`
	Request       uint64 `json:"request"`
	Ack           uint64 `json:"ack"`
	Nak           uint64 `json:"nak"`
	Release       uint64 `json:"release"`
	Decline       uint64 `json:"decline"`
	Inform        uint64 `json:"inform"`
	Malformed     uint64 `json:"malformed"`
	Dropped       uint64 `json:"dropped"`
	PoolExhausted uint64 `json:"pool_exhausted"`
}

// FDBEntry is one learned MAC.
type FDBEntry struct {
	Network    string  `json:"network"`
	MAC        string  `json:"mac"`
	Port       string  `json:"port"`
	AgeSeconds float64 `json:"age_seconds"`
	// VTEP is the remote host a MAC learned through the uplink is behind.
	VTEP string `json:"vtep,omitempty"`
}

// Lease is one DHCP lease.
type Lease struct {
	Network  string    `json:"network"`
	MAC      string    `json:"mac"`
	IP       string    `json:"ip"`
	Hostname string    `json:"hostname,omitempty"`
	State    string    `json:"state"`
	Expires  time.Time `json:"expires"`
}

// Stats is everything the switch counts.
type Stats struct {
	Ports    []Port    `json:"ports"`
	Networks []Network `json:"networks"`
	// Reassembly counts the outer fragments of tunnel packets put back
	// together before decapsulation.
	Reassembly Reassembly `json:"reassembly"`
	// Fragments counts the fragments of datagrams that met rules, which
	// take the verdict of their datagram's first fragment.
	Fragments Fragments `json:"fragments"`
	// Frames is where each switching loop's UMEM frames are, one loop per
	// queue index: the answer to drops for want of a frame (no_frame,
	// fill_ring_empty).
	Frames []FrameQueue `json:"frames"`
}

// FrameQueue counts one loop's UMEM frames by where they are. Free, Fill,
// Tx and Held add up to Total.
type FrameQueue struct {
	Queue int `json:"queue"`
	Total int `json:"total"`
	Free  int `json:"free"`
	Fill  int `json:"fill"` // lent to the kernel to receive into
	Tx    int `json:"tx"`   // lent to the kernel to send, until it completes
	Held  int `json:"held"` // early fragments waiting for their verdict
	// Error says how the loop's frame accounting check failed: a frame
	// in two places or in none, a bug in the switch. Empty when every
	// frame is where the loop believes it is.
	Error string `json:"error,omitempty"`
}

// Fragments is the state and counts of the switch's fragment tracking.
type Fragments struct {
	Datagrams  int    `json:"datagrams"`   // tracked now
	Pending    int    `json:"pending"`     // waiting for their first fragment
	HeldFrames int    `json:"held_frames"` // early fragments waiting with them
	HeldBytes  int    `json:"held_bytes"`
	Fragments  uint64 `json:"fragments"` // taken in
	Firsts     uint64 `json:"firsts"`    // first fragments judged
	Allowed    uint64 `json:"allowed"`   // fragments given an allow verdict
	Denied     uint64 `json:"denied"`
	Held       uint64 `json:"held"`     // early fragments held
	Released   uint64 `json:"released"` // and later given their verdict
	// Dropped counts fragments dropped by the tracker's own rules, by
	// reason (overlap, tiny_first, timed_out, over_memory, ...).
	Dropped          map[string]uint64 `json:"dropped"`
	DroppedDatagrams map[string]uint64 `json:"dropped_datagrams"`
}

// Reassembly is the state and counts of tunnel fragment reassembly.
type Reassembly struct {
	Datagrams        int               `json:"datagrams"` // in progress
	Bytes            int               `json:"bytes"`     // held
	Fragments        uint64            `json:"fragments"` // taken in
	Reassembled      uint64            `json:"reassembled"`
	Dropped          map[string]uint64 `json:"dropped"`           // fragments, by reason
	DroppedDatagrams map[string]uint64 `json:"dropped_datagrams"` // by reason
}
