#!/usr/bin/env bash
# The demo: three hosts, each in its own network namespace behind a veth
# pair, plugged into xdpswitchd and pinging each other through it. The
# daemon's counters are printed at the end, and everything is removed.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=bin/xdpswitchd
[ -x "$bin" ] || go build -o bin/ ./cmd/xdpswitchd
work=$(mktemp -d /tmp/xdpswitch-demo.XXXXXX)
tag=$$
hosts=(h1 h2 h3)
daemon_pid=

cleanup() {
	if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
		kill -TERM "$daemon_pid"
		wait "$daemon_pid" || true
	fi
	for h in "${hosts[@]}"; do
		ip link del "xd$tag$h" 2>/dev/null || true
		ip netns del "xsdemo-$tag-$h" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "Three hosts, each in a namespace, each behind a veth pair"
ports=()
for i in 1 2 3; do
	h=h$i ns="xsdemo-$tag-$h" port="xd$tag$h"
	ip netns add "$ns"
	ip link add "$port" type veth peer name eth0 netns "$ns"
	ip link set "$port" up
	ip -n "$ns" link set lo up
	ip -n "$ns" addr add "10.99.0.$i/24" dev eth0
	# Frames through AF_XDP carry no checksum-offload state.
	ip netns exec "$ns" ethtool -K eth0 tx off >/dev/null
	ip -n "$ns" link set eth0 up
	ports+=("$port")
	echo "$h: 10.99.0.$i in namespace $ns, switch port $port"
done

step "xdpswitchd with one network holding the three ports"
cat >"$work/xdpswitch.yaml" <<CONF
run_dir: $work/run
state_dir: $work/state
networks:
  - name: demo
    ports: [${ports[0]}, ${ports[1]}, ${ports[2]}]
CONF
cat "$work/xdpswitch.yaml"
"$bin" --config "$work/xdpswitch.yaml" >"$work/counters.txt" 2>"$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 100); do
	grep -q "xdpswitchd ready" "$work/daemon.log" && break
	kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/daemon.log"; exit 1; }
	sleep 0.1
done
grep -E "port added|ready" "$work/daemon.log"

step "Every host pings every other through the switch"
failed=0
for a in 1 2 3; do
	for b in 1 2 3; do
		[ "$a" = "$b" ] && continue
		if out=$(ip netns exec "xsdemo-$tag-h$a" ping -c 3 -i 0.2 -W 2 "10.99.0.$b" 2>&1); then
			echo "h$a -> h$b: $(echo "$out" | grep -E 'packets transmitted')"
		else
			echo "h$a -> h$b: FAILED"; echo "$out"; failed=1
		fi
	done
done

step "The daemon's counters"
kill -TERM "$daemon_pid"
wait "$daemon_pid" || true
daemon_pid=
cat "$work/counters.txt"
exit $failed
