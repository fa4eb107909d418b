# Sourced by the load-test scripts: wait_port PORT returns once something listens on
# 127.0.0.1:PORT (a condition, polled for up to 10 s), else fails with a message.
wait_port() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2; return 1
}
