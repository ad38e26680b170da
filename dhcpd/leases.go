package dhcpd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/xdpswitch/xdpswitch/internal/atomicfile"
)

// Lease states as reported in Lease.State.
const (
	StateOffered  = "offered"
	StateBound    = "bound"
	StateDeclined = "declined"
	// stateFree marks a released or expired record that is kept only to hand
	// the same client its previous address again (RFC 2131 4.3.1).
	stateFree = "free"
)

// Lease is one entry of the lease table as seen from outside.
type Lease struct {
	MAC      net.HardwareAddr
	IP       netip.Addr
	Hostname string
	Expiry   time.Time
	State    string // StateOffered, StateBound or StateDeclined
}

type macKey [6]byte

func (m macKey) String() string { return net.HardwareAddr(m[:]).String() }

// record is the table's entry for one IP.
type record struct {
	mac      macKey
	ip       netip.Addr
	hostname string
	expiry   time.Time
	state    string
}

// active reports whether the record still holds its address.
func (r *record) active(now time.Time) bool {
	return r.state != stateFree && r.expiry.After(now)
}

// leaseFile is the on-disk form; versioned so a later format can refuse or
// convert an older one instead of misreading it.
type leaseFile struct {
	Version int         `json:"version"`
	Leases  []leaseJSON `json:"leases"`
}

type leaseJSON struct {
	MAC      string    `json:"mac"`
	IP       string    `json:"ip"`
	Hostname string    `json:"hostname,omitempty"`
	Expiry   time.Time `json:"expiry"`
	State    string    `json:"state"`
}

const leaseFileVersion = 1

// persistLocked writes the durable part of the table: bound and declined
// records. Offers are left out on purpose: they live 30 s, and writing one per
// DISCOVER would let any guest make the host fsync at packet rate.
// Called with s.mu held.
func (s *Server) persistLocked(now time.Time) error {
	f := leaseFile{Version: leaseFileVersion, Leases: []leaseJSON{}}
	for _, r := range s.sortedRecordsLocked() {
		if !r.active(now) || r.state == StateOffered {
			continue
		}
		f.Leases = append(f.Leases, leaseJSON{
			MAC: r.mac.String(), IP: r.ip.String(), Hostname: r.hostname,
			Expiry: r.expiry.UTC(), State: r.state,
		})
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.Write(s.leasePath, append(data, '\n'))
}

// load reads the lease file, keeping only leases that are unexpired and
// still fit the current configuration (it may have changed since).
func (s *Server) load(now time.Time) error {
	data, err := os.ReadFile(s.leasePath)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read leases: %w", err)
	}
	var f leaseFile
	if err := json.Unmarshal(data, &f); err != nil {
		return fmt.Errorf("lease file %s is corrupt (fix or remove it): %w", s.leasePath, err)
	}
	if f.Version != leaseFileVersion {
		return fmt.Errorf("lease file %s has version %d, want %d", s.leasePath, f.Version, leaseFileVersion)
	}
	kept, dropped := 0, 0
	for _, l := range f.Leases {
		r, why := s.parseStored(l, now)
		if r == nil {
			dropped++
			if why != "" {
				s.log.Info("dropping stored lease", "mac", l.MAC, "ip", l.IP, "reason", why)
			}
			continue
		}
		if old := s.recs[r.ip]; old != nil {
			s.log.Info("dropping duplicate stored lease", "mac", l.MAC, "ip", l.IP)
			dropped++
			continue
		}
		if r.state == StateBound {
			if _, dup := s.byMAC[r.mac]; dup {
				s.log.Info("dropping second stored lease of one MAC", "mac", l.MAC, "ip", l.IP)
				dropped++
				continue
			}
			s.byMAC[r.mac] = r.ip
		}
		s.recs[r.ip] = r
		kept++
	}
	s.log.Info("leases loaded", "file", s.leasePath, "kept", kept, "dropped", dropped)
	return nil
}

// parseStored turns a stored lease into a record, or says why it no longer
// applies (empty reason: merely expired).
func (s *Server) parseStored(l leaseJSON, now time.Time) (*record, string) {
	hw, err := net.ParseMAC(l.MAC)
	if err != nil || len(hw) != 6 {
		return nil, "bad MAC"
	}
	ip, err := netip.ParseAddr(l.IP)
	if err != nil || !ip.Is4() {
		return nil, "bad IP"
	}
	if l.State != StateBound && l.State != StateDeclined {
		return nil, "bad state " + l.State
	}
	if !l.Expiry.After(now) {
		return nil, ""
	}
	r := &record{mac: macKey(hw), ip: ip, hostname: sanitizeHostname(l.Hostname), expiry: l.Expiry, state: l.State}
	if r.state == StateDeclined {
		if !s.assignable(ip) {
			return nil, "address no longer in the range"
		}
		return r, ""
	}
	if !s.usableFor(r.mac, ip, now) {
		return nil, "address no longer allowed for this MAC (config changed)"
	}
	if res, ok := s.resByMAC[r.mac]; ok && res.Hostname != "" {
		r.hostname = res.Hostname
	}
	return r, ""
}
