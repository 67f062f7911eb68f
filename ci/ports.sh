# Sourced by the CI scripts that start servers on fixed ports.
#
# pick_port prints a port below the kernel's ephemeral range (so that no connection, live
# or in TIME_WAIT, left by the tests that ran before can hold it as its local port) that
# nothing listens on now.
pick_port() {
  local low port
  low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  for _ in $(seq 1 50); do
    port=$((10000 + RANDOM % (low - 10002)))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  echo "error: no free port found below $low" >&2
  return 1
}
