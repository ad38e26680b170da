package vxlan

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

// goldenInner is an ICMP echo request from 10.95.0.1 to 10.95.0.2, 42 bytes.
const goldenInner = "020000bb0002 020000aa0001 0800" +
	"4500 001c 1234 0000 4001 0000 0a5f0001 0a5f0002" +
	"0800 f7fe 0001 0000"

// The outer headers below were computed by hand (and checked with a few
// lines of Python), not with this package. The source port 0xf8e6 (63718)
// and the flow label 0x13b00 are the flow hash of goldenInner under seed 0:
// they pin the hash, whose change would move every flow to another port.
const (
	// IPv4, untagged, VNI 42, the Encoder's first identification (1).
	// Header checksum: 4500+004e+0001+4000+4011+0a5e+0001+0a5e+0002 =
	// 0xda1f, complemented 0x25e0.
	goldenIPv4 = "029400000002 029400000001 0800" + // Ethernet
		"45 00 004e 0001 4000 40 11 25e0 0a5e0001 0a5e0002" + // IPv4: 78 bytes, DF, TTL 64, UDP
		"f8e6 12b5 003a 0000" + // UDP 63718 → 4789, 58 bytes, no checksum
		"08 000000 00002a 00" + // VXLAN: I flag, VNI 42
		goldenInner

	// IPv6 in VLAN 94, hop limit 255, VNI 0xabcdef. UDP checksum over
	// the pseudo-header (addresses, length 58, next header 17), the UDP
	// and VXLAN headers and the inner frame: 0x9c68.
	goldenIPv6 = "029400000002 029400000001 8100 005e 86dd" + // Ethernet, VLAN 94
		"6 00 13b00 003a 11 ff" + // IPv6: flow label 0x13b00, 58 bytes, UDP, hop limit 255
		"fd000094000000000000000000000001" +
		"fd000094000000000000000000000002" +
		"f8e6 12b5 003a 9c68" + // UDP
		"08 000000 abcdef 00" + // VXLAN: I flag, VNI 0xabcdef
		goldenInner
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGolden(t *testing.T) {
	inner := unhex(t, goldenInner)
	u6 := underlay6()
	u6.VLAN, u6.TTL = 94, 255
	for _, tc := range []struct {
		name   string
		golden string
		vni    uint32
		u      *Underlay
		check  func() error // the test's own checksum code
	}{
		{"ipv4", goldenIPv4, 42, underlay4(), func() error { return checkIPv4Header(unhex(t, goldenIPv4)[14:]) }},
		{"ipv6", goldenIPv6, 0xabcdef, u6, func() error { return checkUDP(unhex(t, goldenIPv6)[18:], false) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := unhex(t, tc.golden)
			got, err := encapCopy(&Encoder{}, inner, tc.vni, tc.u)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("encapsulated\n%x\nwant\n%x", got, want)
			}
			if err := tc.check(); err != nil {
				t.Error(err)
			}
			in, vni, src, sport, err := DecapFrame(want, isLocal, 0)
			if err != nil || !bytes.Equal(in, inner) || vni != tc.vni || src != tc.u.Src || sport != 0xf8e6 {
				t.Fatalf("decap: %x %d %v %d %v", in, vni, src, sport, err)
			}
		})
	}
	if l := flowLabel(flowHash(inner, 0)); l != 0x13b00 {
		t.Errorf("flow label %#x", l)
	}
}
