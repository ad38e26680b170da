package dataplane

import (
	"encoding/binary"
	"net"
)

// Frame builders for tests that speak to the kernel's own ARP and ICMP.

func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

func arpRequest(srcMAC net.HardwareAddr, srcIP, targetIP net.IP) []byte {
	p := make([]byte, 28)
	binary.BigEndian.PutUint16(p[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(p[2:], 0x0800) // IPv4
	p[4], p[5] = 6, 4
	binary.BigEndian.PutUint16(p[6:], 1) // request
	copy(p[8:], srcMAC)
	copy(p[14:], srcIP.To4())
	copy(p[24:], targetIP.To4())
	return ethFrame(bcast, srcMAC, etherTypeARP, p)
}

// arpReplyFrom reports whether f is an ARP reply from ip, and its MAC.
func arpReplyFrom(f []byte, ip net.IP) (net.HardwareAddr, bool) {
	if len(f) < 42 || binary.BigEndian.Uint16(f[12:]) != etherTypeARP || binary.BigEndian.Uint16(f[20:]) != 2 {
		return nil, false
	}
	if !net.IP(f[28:32]).Equal(ip) {
		return nil, false
	}
	return net.HardwareAddr(append([]byte{}, f[22:28]...)), true
}

func icmpEcho(dstMAC, srcMAC net.HardwareAddr, src, dst net.IP, id, seq uint16) []byte {
	icmp := make([]byte, 8+32)
	icmp[0] = 8 // echo request
	binary.BigEndian.PutUint16(icmp[4:], id)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	for i := 8; i < len(icmp); i++ {
		icmp[i] = byte(i)
	}
	binary.BigEndian.PutUint16(icmp[2:], checksum(icmp))
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(icmp)))
	ip[8] = 64
	ip[9] = 1
	copy(ip[12:], src.To4())
	copy(ip[16:], dst.To4())
	binary.BigEndian.PutUint16(ip[10:], checksum(ip))
	return ethFrame(dstMAC, srcMAC, etherTypeIPv4, append(ip, icmp...))
}

// isEchoReply reports whether f is an ICMP echo reply from src with id/seq.
func isEchoReply(f []byte, src net.IP, id, seq uint16) bool {
	if len(f) < 42 || binary.BigEndian.Uint16(f[12:]) != etherTypeIPv4 || f[23] != 1 {
		return false
	}
	ihl := int(f[14]&0x0f) * 4
	icmp := f[14+ihl:]
	return net.IP(f[26:30]).Equal(src) && len(icmp) >= 8 && icmp[0] == 0 &&
		binary.BigEndian.Uint16(icmp[4:]) == id && binary.BigEndian.Uint16(icmp[6:]) == seq
}
