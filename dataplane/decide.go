package dataplane

// decide is the per-frame forwarding decision: validate the frame, apply
// the port's security (nil: none), note its source for learning, and find
// the destination port. flood is true for
// broadcast, multicast and unknown unicast. The caller holds the FDB's read
// lock for the whole batch.
func decide(f []byte, in uint32, sec *security, fdb *FDB, now int64, l *learning) (out fdbEntry, flood bool, reason DropReason, ok bool) {
	return decideFrom(f, in, &localVTEP, sec, fdb, now, l)
}

// localVTEP is the zero VTEP of frames from local ports.
var localVTEP [16]byte

// decideFrom is decide for a frame that arrived behind vtep (the uplink).
func decideFrom(f []byte, in uint32, vtep *[16]byte, sec *security, fdb *FDB, now int64, l *learning) (out fdbEntry, flood bool, reason DropReason, ok bool) {
	if reason, ok := validate(f); !ok {
		return out, false, reason, false
	}
	if sec != nil {
		if reason, ok := sec.check(f); !ok {
			return out, false, reason, false
		}
	}
	fdb.noteSource(macKey(f[6:12]), in, vtep, now, l)
	return route(f, in, fdb)
}

// route finds where a valid frame from port in goes: one port, or a flood
// for broadcast, multicast and unknown unicast.
func route(f []byte, in uint32, fdb *FDB) (out fdbEntry, flood bool, reason DropReason, ok bool) {
	dst := macKey(f[0:6])
	if isMulticastKey(dst) {
		return out, true, 0, true
	}
	e, found := fdb.lookup(dst)
	if !found {
		return out, true, 0, true
	}
	if e.port == in {
		// Also split horizon: what came from the tunnel never goes back.
		return out, false, DropSamePort, false
	}
	return e, false, 0, true
}
