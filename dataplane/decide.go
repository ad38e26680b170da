package dataplane

// decide is the per-frame forwarding decision: validate the frame, apply
// the port's security (nil: none), note its source for learning, and find
// the destination port. flood is true for
// broadcast, multicast and unknown unicast. The caller holds the FDB's read
// lock for the whole batch.
func decide(f []byte, in uint32, sec *security, fdb *FDB, now int64, l *learning) (out uint32, flood bool, reason DropReason, ok bool) {
	if reason, ok := validate(f); !ok {
		return 0, false, reason, false
	}
	if sec != nil {
		if reason, ok := sec.check(f); !ok {
			return 0, false, reason, false
		}
	}
	fdb.noteSource(macKey(f[6:12]), in, now, l)
	dst := macKey(f[0:6])
	if isMulticastKey(dst) {
		return 0, true, 0, true
	}
	e, found := fdb.lookup(dst)
	if !found {
		return 0, true, 0, true
	}
	if e.port == in {
		return 0, false, DropSamePort, false
	}
	return e.port, false, 0, true
}
