# shellcheck shell=bash disable=SC2034  # sets variables for the script that sources it
# A chain of real Linux routers for the benchmark scripts (sourced, not run): the shell
# twin of Tests/TestSupport/RouterChain.swift, same addresses and rules.
#
#   prober --1-- r1 --2-- r2 ... rN --(N+1)-- destination
#
# Link j joins node j-1 ("next", 198.18.j.1 / 2001:db8:j::1) and node j ("prev", 198.18.j.2
# / 2001:db8:j::2); hop k answers from 198.18.k.2; the destination is 198.18.(N+1).2 with a
# TCP listener on port 8080 (socat: half-open probes never reach it; what mtr -T completes
# it accepts and closes). No namespace has a default route: nothing leaves the machine.
#
#   chain_make N [TAG]                 sets chain_prober, chain_routers[1..N], chain_destination
#   chain_loss HOP "numgen inc mod 10 == 0" | "numgen random mod 1000 < 100"
#   chain_rate_limit HOP               the kernel's ICMP rate limit left on (1000 ms) at HOP
#   chain_counter NAMESPACE NAME       a named counter's packets (table inet netprobe_fault)
#   chain_accepted                     connections the destination's listener has accepted
#   chain_delete                       (also at exit, when chain_trap is called)

chain_namespaces=()

chain_make() {
  local routers=$1 tag=${2:-$$} k namespace
  chain_prober="nb-rc-p-$tag"
  chain_destination="nb-rc-d-$tag"
  chain_routers=("")
  for k in $(seq "$routers"); do chain_routers+=("nb-rc-r$k-$tag"); done
  local nodes=("$chain_prober" "${chain_routers[@]:1}" "$chain_destination")
  chain_namespaces+=("${nodes[@]}")
  for namespace in "${nodes[@]}"; do
    ip netns add "$namespace"
    ip -n "$namespace" link set lo up
    local forward=1
    [ "$namespace" = "$chain_prober" ] || [ "$namespace" = "$chain_destination" ] && forward=0
    ip netns exec "$namespace" sysctl -q -w net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
      net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0 \
      net.ipv4.ip_forward=$forward net.ipv6.conf.all.forwarding=$forward \
      net.ipv4.icmp_ratelimit=0 net.ipv6.icmp.ratelimit=0 \
      net.ipv4.icmp_msgs_per_sec=100000 net.ipv4.icmp_msgs_burst=10000
  done
  local link
  for link in $(seq $((routers + 1))); do
    local left=${nodes[$((link - 1))]} right=${nodes[$link]}
    ip link add prev netns "$right" type veth peer name next netns "$left"
    ip -n "$left" addr add "198.18.$link.1/24" dev next
    ip -n "$left" addr add "2001:db8:$link::1/64" dev next nodad
    ip -n "$right" addr add "198.18.$link.2/24" dev prev
    ip -n "$right" addr add "2001:db8:$link::2/64" dev prev nodad
    ip -n "$left" link set next up
    ip -n "$right" link set prev up
  done
  local position
  for position in "${!nodes[@]}"; do
    namespace=${nodes[$position]}
    if [ "$position" -le "$routers" ]; then
      ip -n "$namespace" -4 route add 198.18.0.0/15 via "198.18.$((position + 1)).2"
      ip -n "$namespace" -6 route add 2001:db8::/32 via "2001:db8:$((position + 1))::2"
    else
      ip -n "$namespace" -4 route add 198.18.0.0/15 via "198.18.$position.1"
      ip -n "$namespace" -6 route add 2001:db8::/32 via "2001:db8:$position::1"
    fi
    if [ "$position" -ge 2 ] && [ "$position" -le "$routers" ]; then
      ip -n "$namespace" -4 route add 198.18.1.0/24 via "198.18.$position.1"
      ip -n "$namespace" -6 route add 2001:db8:1::/64 via "2001:db8:$position::1"
    fi
  done
  chain_target4="198.18.$((routers + 1)).2"
  chain_target6="2001:db8:$((routers + 1))::2"
  # Every node answers before anything is measured (links and neighbours settle).
  local address tries
  for k in $(seq $((routers + 1))); do
    for address in "198.18.$k.2" "2001:db8:$k::2"; do
      for tries in $(seq 100); do
        ip netns exec "$chain_prober" ping -n -q -c 1 -W 1 "$address" >/dev/null 2>&1 && break
        [ "$tries" = 100 ] && { echo "router chain: $address never answered" >&2; return 1; }
      done
    done
  done
  chain_listener_log=$(mktemp "/tmp/netprobe-chain-listener.XXXXXX")
  ip netns exec "$chain_destination" socat -d -d "TCP6-LISTEN:8080,ipv6only=0,reuseaddr,backlog=1024,fork" /dev/null >/dev/null 2>"$chain_listener_log" &
  chain_listener=$!
  for tries in $(seq 100); do
    ip netns exec "$chain_destination" ss -ltn 2>/dev/null | grep -q ':8080 ' && break
    sleep 0.05
  done
}

chain_loss() {
  local hop=$1 condition=$2
  ip netns exec "${chain_routers[$hop]}" nft -f - <<NFT
table inet netprobe_fault {
  counter seen {}
  counter dropped {}
  chain lossy {
    counter name "seen"
    $condition counter name "dropped" drop
  }
  chain prerouting {
    type filter hook prerouting priority -150; policy accept;
    ip saddr 198.18.1.1 icmp type echo-request jump lossy
    ip6 saddr 2001:db8:1::1 icmpv6 type echo-request jump lossy
    ip saddr 198.18.1.1 tcp flags syn / syn,ack jump lossy
    ip6 saddr 2001:db8:1::1 tcp flags syn / syn,ack jump lossy
  }
}
NFT
}

chain_rate_limit() {
  ip netns exec "${chain_routers[$1]}" sysctl -q -w net.ipv4.icmp_ratelimit=1000 net.ipv6.icmp.ratelimit=1000 \
    net.ipv4.icmp_msgs_per_sec=1000 net.ipv4.icmp_msgs_burst=50
}

chain_counter() {
  ip netns exec "$1" nft list counter inet netprobe_fault "$2" | sed -n 's/.*packets \([0-9]*\).*/\1/p'
}

chain_accepted() {
  grep -c "accepting connection" "$chain_listener_log" || true
}

chain_reset_counters() {
  ip netns exec "$1" nft reset counters table inet netprobe_fault >/dev/null
}

chain_delete() {
  if [ -n "${chain_listener:-}" ]; then kill "$chain_listener" 2>/dev/null || true; fi
  if [ -n "${chain_listener_log:-}" ]; then rm -f "$chain_listener_log"; fi
  local namespace
  for namespace in "${chain_namespaces[@]}"; do ip netns delete "$namespace" 2>/dev/null || true; done
  chain_namespaces=()
}
