package dataplane

import "testing"

// TestActiveRxQueues reads the queues a device receives on from sysfs.
func TestActiveRxQueues(t *testing.T) {
	if n := activeRxQueues("lo"); n != 1 {
		t.Errorf("lo receives on %d queues, want 1", n)
	}
	if n := activeRxQueues("xsnosuchdev"); n != 0 {
		t.Errorf("a device that does not exist: %d queues, want 0", n)
	}
}
