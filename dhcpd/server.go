// Package dhcpd is the DHCPv4 server the switch daemon runs for each network.
// It listens on the network's host-side interface like any host service: the
// switch forwards guests' DHCP traffic to the host stack, and this server
// answers it from one range, with static reservations, and keeps its leases
// on disk so a daemon restart does not renumber guests.
package dhcpd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
)

const (
	// offerHold is how long an offered address stays reserved for the client
	// that was offered it, waiting for its REQUEST.
	offerHold = 30 * time.Second
	// declineHold keeps a declined address out of the pool: some host we do
	// not know uses it, and handing it out again at once would loop.
	declineHold = 10 * time.Minute
	// exhaustLogEvery bounds the log lines a pool exhaustion produces while
	// clients keep retrying.
	exhaustLogEvery = time.Minute
)

// Counters are running totals since New; they tell an operator what the
// server sees without turning on debug logs.
type Counters struct {
	Discover, Offer, Request, Ack, Nak, Release, Decline, Inform uint64

	// Malformed counts packets that are unparseable, not a BOOTREQUEST,
	// without a message type, or not from an Ethernet client.
	Malformed uint64
	// Dropped counts well-formed messages this server does not answer:
	// relayed ones, server-only types, a REQUEST that names no address.
	Dropped uint64
	// PoolExhausted counts DISCOVERs left unanswered for want of an address.
	PoolExhausted uint64
}

type counters struct {
	discover, offer, request, ack, nak, release, decline, inform atomic.Uint64
	malformed, dropped, poolExhausted                            atomic.Uint64
}

// Server serves one network. All methods are safe for concurrent use.
type Server struct {
	cfg       Config // normalised: Subnet masked, Router and LeaseTime set
	log       *slog.Logger
	leasePath string

	netAddr, bcast       netip.Addr
	rangeStart, rangeEnd uint32
	resByMAC             map[macKey]Reservation
	resByIP              map[netip.Addr]macKey

	ctr counters

	mu           sync.Mutex
	recs         map[netip.Addr]*record
	byMAC        map[macKey]netip.Addr // a MAC's current or most recent address
	lastExhaust  time.Time
	exhaustQuiet uint64 // exhaustion events not logged since lastExhaust
	// changes counts the changes of the bound leases, for OnLeases.
	changes atomic.Uint64

	connMu  sync.Mutex
	conn    net.PacketConn
	closed  bool
	serving bool
}

// ErrClosed is returned by Serve after Close.
var ErrClosed = errors.New("dhcpd: server closed")

// New validates cfg and loads the persisted leases (expired ones dropped). It
// opens no socket, so the caller chooses where and when to Serve.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.Subnet = cfg.Subnet.Masked()
	if !cfg.Router.IsValid() {
		cfg.Router = cfg.ServerIP
	}
	if cfg.LeaseTime == 0 {
		cfg.LeaseTime = DefaultLeaseTime
	}
	cfg.DNS = slices.Clone(cfg.DNS)
	cfg.Reservations = slices.Clone(cfg.Reservations)
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Server{
		cfg:        cfg,
		log:        log.With("component", "dhcpd", "network", cfg.Network, "interface", cfg.Interface),
		leasePath:  filepath.Join(cfg.StateDir, "leases-"+cfg.Network+".json"),
		netAddr:    cfg.Subnet.Addr(),
		bcast:      broadcastAddr(cfg.Subnet),
		rangeStart: u32(cfg.RangeStart),
		rangeEnd:   u32(cfg.RangeEnd),
		resByMAC:   map[macKey]Reservation{},
		resByIP:    map[netip.Addr]macKey{},
		recs:       map[netip.Addr]*record{},
		byMAC:      map[macKey]netip.Addr{},
	}
	for _, r := range cfg.Reservations {
		r.MAC = slices.Clone(r.MAC)
		s.resByMAC[macKey(r.MAC)] = r
		s.resByIP[r.IP] = macKey(r.MAC)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("dhcpd: network %q: state directory: %w", cfg.Network, err)
	}
	if err := s.load(time.Now()); err != nil {
		return nil, fmt.Errorf("dhcpd: network %q: %w", cfg.Network, err)
	}
	return s, nil
}

// Leases returns the addresses currently held (offered, bound or declined),
// sorted by IP.
func (s *Server) Leases() []Lease {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []Lease{}
	for _, r := range s.sortedRecordsLocked() {
		if !r.active(now) {
			continue
		}
		out = append(out, Lease{
			MAC: net.HardwareAddr(slices.Clone(r.mac[:])), IP: r.ip,
			Hostname: r.hostname, Expiry: r.expiry, State: r.state,
		})
	}
	return out
}

func (s *Server) sortedRecordsLocked() []*record {
	rs := make([]*record, 0, len(s.recs))
	for _, r := range s.recs {
		rs = append(rs, r)
	}
	slices.SortFunc(rs, func(a, b *record) int { return a.ip.Compare(b.ip) })
	return rs
}

// Counters returns a snapshot of the counters.
func (s *Server) Counters() Counters {
	c := &s.ctr
	return Counters{
		Discover: c.discover.Load(), Offer: c.offer.Load(), Request: c.request.Load(),
		Ack: c.ack.Load(), Nak: c.nak.Load(), Release: c.release.Load(),
		Decline: c.decline.Load(), Inform: c.inform.Load(), Malformed: c.malformed.Load(),
		Dropped: c.dropped.Load(), PoolExhausted: c.poolExhausted.Load(),
	}
}

// Close stops a running Serve (which then returns nil) and makes later Serve
// calls fail. Leases are already on disk, so there is nothing to flush.
func (s *Server) Close() error {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	s.closed = true
	if s.conn != nil {
		return s.conn.Close()
	}
	return nil
}

// Serve opens UDP port 67 bound to cfg.Interface (SO_BINDTODEVICE, so each
// network's server sees only its own link) and serves until ctx is done,
// returning nil then. The socket is created in the calling goroutine's
// network namespace: call Serve from a thread locked in the right one.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.claim(); err != nil {
		return err
	}
	conn, err := server4.NewIPv4UDPConn(s.cfg.Interface, &net.UDPAddr{Port: dhcpv4.ServerPort})
	if err != nil {
		s.release()
		return fmt.Errorf("dhcpd: network %q: listen on %s udp/%d: %w", s.cfg.Network, s.cfg.Interface, dhcpv4.ServerPort, err)
	}
	return s.serveClaimed(ctx, conn)
}

// ServeConn serves on a socket the caller made (for a namespace or a socket
// handed over by a supervisor); it must be a UDP socket on port 67 that may
// send broadcasts. The conn is closed when ServeConn returns.
func (s *Server) ServeConn(ctx context.Context, conn net.PacketConn) error {
	if err := s.claim(); err != nil {
		conn.Close()
		return err
	}
	return s.serveClaimed(ctx, conn)
}

// claim makes sure only one Serve runs: two read loops would split the
// traffic between them for no gain.
func (s *Server) claim() error {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.serving {
		return fmt.Errorf("dhcpd: network %q: already serving", s.cfg.Network)
	}
	s.serving = true
	return nil
}

func (s *Server) release() {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	s.serving = false
	s.conn = nil
}

func (s *Server) serveClaimed(ctx context.Context, conn net.PacketConn) error {
	s.connMu.Lock()
	if s.closed {
		s.connMu.Unlock()
		s.release()
		conn.Close()
		return ErrClosed
	}
	s.conn = conn
	s.connMu.Unlock()
	defer func() {
		conn.Close()
		s.release()
	}()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	s.log.Info("DHCP server listening", "addr", conn.LocalAddr().String(), "server_ip", s.cfg.ServerIP,
		"range", s.cfg.RangeStart.String()+"-"+s.cfg.RangeEnd.String())
	buf := make([]byte, 65536)
	for {
		n, peer, err := conn.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil || s.isClosed() {
				s.log.Info("DHCP server stopped")
				return nil
			}
			return fmt.Errorf("dhcpd: network %q: read: %w", s.cfg.Network, err)
		}
		before := s.changes.Load()
		reply, dst := s.handlePacket(buf[:n], time.Now())
		if s.changes.Load() != before && s.cfg.OnLeases != nil {
			s.cfg.OnLeases()
		}
		if reply == nil {
			if s.log.Enabled(ctx, slog.LevelDebug) {
				s.log.Debug("no reply", "peer", fmt.Sprint(peer), "bytes", n)
			}
			continue
		}
		to := &net.UDPAddr{IP: dst.AsSlice(), Port: dhcpv4.ClientPort}
		if _, err := conn.WriteTo(reply, to); err != nil {
			s.log.Warn("send reply failed", "to", to.String(), "err", err)
		}
	}
}

func (s *Server) isClosed() bool {
	s.connMu.Lock()
	defer s.connMu.Unlock()
	return s.closed
}
