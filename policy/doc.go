// Package policy decides whether the switch lets a frame through: ordered
// allow and deny rules per network and per port, first match wins, and a
// default (allow unless the ruleset says default: deny).
//
// A rule matches on direction (in: from the port into the switch, out: from
// the switch to the port; a network's rules apply to every frame forwarded
// within it), IP protocol, source and destination prefixes (IPv4 and
// IPv6), and source and destination port ranges. An empty field matches
// everything; a list matches when one of its items does.
//
//	default: deny
//	rules:
//	  - {action: allow, direction: in, proto: tcp, dst_ports: ["22", "8000-8080"], src: [10.0.0.0/8]}
//	  - {action: allow, proto: icmpv6}
//
// # Compiling
//
// The switch classifies every frame, so the lookup must not grow with the
// number of rules: its work is a few trie steps per field and a few
// candidate rules, whether there are ten rules or ten thousand. What does
// grow is the tries' depth (a handful of rules need none, a hundred a
// node step and a leaf), the share of packets that meet a candidate, and
// memory, so time per lookup grows in steps as the classifier outgrows
// its shallowest shape and the caches. BenchmarkMatch on one core of an
// Intel Xeon VM: about 18 ns for one rule, 30 ns for 100, 39 ns for 1,000
// and 55 ns for 10,000, where a scan of the rules takes 95 µs. One flow
// among 10,000 rules crowded around its hosts, the switch benchmark's
// rules (BenchmarkRuleLookup in bench), takes about 25 ns, and 14 ns with
// one rule. Compile turns the ordered rules into a Classifier in four steps.
//
// Dead rules go first: a rule that repeats an earlier one, or whose
// directions and protocols earlier catch-alls already cover, can never be
// the first match.
//
// Rules that name nothing but a direction and a protocol ("allow icmpv6")
// match every packet of it; a table of 3 directions by 256 protocols holds
// the first such rule for each, so one load gives the best of them.
//
// Every other rule is indexed under one of its fields: destination prefix,
// source prefix, destination port or source port, whichever makes it a
// candidate of the fewest packets. That is the field where its values
// cover the smallest share of the key space (a rule from a /20 to a /30
// goes under the /30), unless other rules crowd those values: an interval
// sweep counts the most rules that overlap it in each field, and a crowd
// weighs as its cube, so that a hundred rules for one server from a
// hundred sources go under their sources, not all into the server's list.
// Indexing a rule under one field, not all, is what keeps wildcards
// cheap: a rule that says nothing about source ports is simply not in the
// source port index, and costs a lookup there nothing.
//
// Each index cuts its key space (IPv4 or IPv6 addresses, or the ports of
// one protocol) into intervals at its rules' boundaries. The rules whose
// values cover an interval, in rule order and cut after the first one that
// matches every packet that gets there, are its candidate list; equal
// lists are stored once, and a list of one rule is stored in place.
//
// A candidate is a rule number with a filter beside it: the rule's
// directions, families and protocol class (the protocols rules usually
// name each have one), and whether it names ports (a later fragment has
// none). Most candidates in a list that a packet does not match fail on
// these, so they cost no load beyond the trie's. What the index leaves to
// check is, for most rules, at most an IPv4 prefix for each address the
// index did not check, a destination port range, and what the filter
// holds, with the exact protocol: a fixed 32-byte entry per rule holds
// those, and a candidate costs a read of that entry and a few operations
// without a branch on the rule's shape. A single candidate, the most
// common case, goes to its entry at once, inside Match. Only rules that
// name more (IPv6 prefixes or lists outside their index, source ports)
// have their record read; the action comes from a bitmap of the rules.
//
// # Looking up
//
// A packet looks up its destination, source, destination port and source
// port, each in the index of its family or protocol. The first rule that
// matches it is the first that matches in the list of the field that
// rule is indexed under, so the lookup takes each list's first match,
// searching each only below the best match so far (the direction and
// protocol table gives the first one). The candidates are the rules that
// cover the packet in the field they are indexed under: in a realistic
// ruleset, and in the random ones the tests and the benchmark use, none
// or one or two, whether there are ten rules or ten thousand.
//
// An index maps a key to its list with a multibit trie over the interval
// boundaries, built for few dependent loads and few instructions, since
// at 10,000 rules those are what a lookup costs. The boundaries are one
// sorted array, each next to the value that ends at it; the nodes only
// narrow a key down to a run of five (IPv4) or four (IPv6) boundaries,
// which the lookup compares with the key at once. So a boundary is stored
// once, and nodes need a few slots per boundary: the tries of 10,000
// rules take well under a megabyte, most of it touched rarely. The root is
// a table that the key's top bits index; a node's stride is chosen for its
// boundaries, the last level widened until its slots fit a run. An IPv4
// trie first clamps the key into the aligned block that holds all its
// boundaries and drops the bits they share: rules within 10/8 spend no
// level on its first eight bits, which for 100 rules crowded there is a
// third of the lookup. The builder keeps the shallowest trie that a
// memory bound allows, because the cost of a lookup is the trie's depth:
// it depends on how boundaries cluster (a root and one node step for
// IPv4, two for IPv6 with its sites and subnets) and hardly on how many
// there are. Port tries hold a value for every port below a root and one
// node level, when that is small: a node step costs less than a
// comparison with a run.
//
// The walks are written for the CPU: a step is one load and a few
// arithmetic operations that pick the slot without branching (a walk that
// reached its leaf or value early goes on reading a dummy and keeps it),
// so random traffic costs no mispredicted branches; the lookups of a
// packet run in lockstep so that the CPU works on their loads at once;
// and a classifier is a handful of flat arrays of 32- and 64-bit words
// that all tries of a kind share. IPv6 nodes are path compressed, a child
// covering only the span of its boundaries (IPv6 prefixes sit deep inside
// common prefixes); the walk still picks slots from the key's bits alone,
// and the run it ends in also compares the key with the boundaries on
// either side: a key that left the clusters on the way fails that, and
// takes a binary search of the boundaries.
//
// What a lookup cannot escape is overlap: a packet checks every rule that
// covers it in the field the rule is indexed under. Thousands of rules for one
// host that differ only in overlapping port ranges would all be
// candidates for a packet to that host. Rules whose ranges would replicate
// into too many candidate lists (a budget per index) are checked one by
// one instead; sensible rulesets have none.
//
// # Running
//
// A Classifier is immutable. A Table holds the one in force behind an
// atomic pointer: the control plane compiles a new ruleset aside and swaps
// it in; loops load it once per batch and never lock. Counters are per
// loop and per classifier (matches, packets, bytes for each rule and the
// default), counted in the loop's own memory and published once per batch,
// so a frame costs no atomic operation; Stats adds the loops' counts up.
//
// PacketFromFrame reads what rules match on from an Ethernet frame: VLAN
// tags, IPv4, IPv6 with its extension headers walked to the upper layer.
// A fragment other than the first has no ports; the caller judges it by
// the first fragment's verdict (RFC 8900 §6.3).
package policy
