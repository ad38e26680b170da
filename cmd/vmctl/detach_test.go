package main

import (
	"path/filepath"
	"testing"
)

// The detach of a NIC is in TestAttachDetach (attach_test.go).

func TestDetachUsage(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		parts []string
	}{
		{[]string{"detach"}, []string{"detach: no VM given", "(vmctl detach -h for help)"}},
		{[]string{"detach", "vm1"}, []string{"detach: --qmp SOCKET is required"}},
		{[]string{"detach", "vm1", "vm2", "--qmp", "q"}, []string{`detach: unexpected argument "vm2"`}},
		{[]string{"detach", "vm1", "--qmp", "q", "--mac", "nope"}, []string{`detach: --mac "nope" is not an Ethernet address`}},
		{[]string{"detach", "vm1", "--qmp", "q", "--timeout", "0s"}, []string{"detach: --timeout 0s must be positive"}},
		{[]string{"detach", "vm1", "--qmp", "q", "--network", "lan"}, []string{"flag provided but not defined: -network"}},
	} {
		wantFailure(t, "/nonexistent/api.sock", exitUsage, tc.args, tc.parts...)
	}
}

func TestDetachFailure(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "vm1.qmp")
	wantFailure(t, "/nonexistent/api.sock", exitFailure, []string{"detach", "vm1", "--qmp", missing, "--mac", "52:54:00:00:00:01"},
		"vmctl: detach NIC 52:54:00:00:00:01 from vm1: QMP connect on "+missing+": no such socket")
}
