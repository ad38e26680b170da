// Package vmctl plugs NICs into running QEMU guests and connects them to
// xdpswitchd: it is the library behind the vmctl command.
//
// Attach creates a tap device, asks the daemon (package api) to add it as a
// port of a network, hands the tap's file descriptors to QEMU over its QMP
// socket (getfd with SCM_RIGHTS, netdev_add) and hot-plugs a virtio-net-pci
// device on it (device_add). Every name is derived from the NIC's MAC
// address, so Detach finds all of it again from the MAC alone:
//
//	MAC 52:54:00:ab:cd:ef
//	tap device      xs525400abcdef
//	QMP device id   xs-525400abcdef
//	QMP netdev id   xsnd-525400abcdef
//
// Once QEMU has the tap, vmctl closes its own descriptors: the tap lives as
// long as QEMU holds it, and when QEMU exits the tap vanishes and the daemon
// removes the port by itself.
//
// The NIC is plugged with every checksum and segmentation offload off:
// frames that cross an AF_XDP switch carry no offload state, so a guest must
// neither hand over partial checksums nor expect them.
package vmctl

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/xdpswitch/xdpswitch/api"
)

// Name prefixes of what Attach makes. The tap prefix keeps the tap's name
// within IFNAMSIZ-1 (15) bytes: "xs" and 12 hex digits.
const (
	TapPrefix    = "xs"
	DevicePrefix = "xs-"
	NetdevPrefix = "xsnd-"
)

// MaxQueues bounds the queues of one NIC.
const MaxQueues = 64

// Attachment is a NIC that vmctl plugged into a VM.
type Attachment struct {
	VM     string           // the VM's name, as the caller gave it
	MAC    net.HardwareAddr // the guest NIC's address
	Tap    string           // the tap device in the host, and the switch port's name
	Device string           // QEMU's device id (virtio-net-pci)
	Netdev string           // QEMU's netdev id (tap backend)
	Queues int
	// Network is the switch network the port is in; List leaves it empty
	// (QEMU does not know it).
	Network string
	// Port is the switch port as the daemon reported it when it was added
	// (Attach only).
	Port api.Port
	// GuestReady says the guest's driver took the NIC (virtio DRIVER_OK)
	// before Attach returned; false when Attach did not wait.
	GuestReady bool
}

// Names returns the names Attach gives the tap device, the QMP device and
// the QMP netdev of the NIC with address mac.
func Names(mac net.HardwareAddr) (tap, device, netdev string) {
	h := hex.EncodeToString(mac)
	return TapPrefix + h, DevicePrefix + h, NetdevPrefix + h
}

// macFromDevice recovers the MAC from a QMP device id made by Attach.
func macFromDevice(id string) (net.HardwareAddr, bool) {
	h, ok := strings.CutPrefix(id, DevicePrefix)
	if !ok || len(h) != 12 || strings.ToLower(h) != h {
		return nil, false
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		return nil, false
	}
	return net.HardwareAddr(b), true
}

// RandomMAC returns a random unicast address in QEMU's 52:54:00 range.
func RandomMAC() net.HardwareAddr {
	mac := net.HardwareAddr{0x52, 0x54, 0x00, 0, 0, 0}
	if _, err := rand.Read(mac[3:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return mac
}

// checkMAC refuses an address a NIC cannot have.
func checkMAC(mac net.HardwareAddr) error {
	if len(mac) != 6 {
		return fmt.Errorf("MAC %s: not a 6-byte Ethernet address", mac)
	}
	if mac[0]&1 != 0 {
		return fmt.Errorf("MAC %s is a multicast address; a NIC needs a unicast one", mac)
	}
	if string(mac) == "\x00\x00\x00\x00\x00\x00" {
		return errors.New("MAC 00:00:00:00:00:00 is not a NIC's address")
	}
	return nil
}
