# Sourced helper: start a test-bed "server" container the way a VM behaves (systemd PID 1,
# its own Docker engine). --privileged is not available on every kernel, so the container
# gets every capability but SYS_RESOURCE, unconfined seccomp/apparmor, the host cgroup tree,
# tmpfs /run and a volume for /var/lib/docker (overlay2 then works inside).
GREENLIGHT_SERVER_CAPS=(AUDIT_CONTROL AUDIT_READ AUDIT_WRITE BLOCK_SUSPEND CHOWN DAC_OVERRIDE
  DAC_READ_SEARCH FOWNER FSETID IPC_LOCK IPC_OWNER KILL LEASE LINUX_IMMUTABLE MAC_ADMIN
  MAC_OVERRIDE MKNOD NET_ADMIN NET_BIND_SERVICE NET_BROADCAST NET_RAW SETFCAP SETGID SETPCAP
  SETUID SYS_ADMIN SYS_BOOT SYS_CHROOT SYS_MODULE SYS_NICE SYS_PACCT SYS_PTRACE SYS_RAWIO
  SYS_TIME SYS_TTY_CONFIG SYSLOG WAKE_ALARM)

server_run() {  # name image [extra docker run args...]
  local name=$1 image=$2; shift 2
  local caps=() c
  for c in "${GREENLIGHT_SERVER_CAPS[@]}"; do caps+=(--cap-add "$c"); done
  docker run -d --name "$name" --hostname "$name" --network greenlight-test "${caps[@]}" \
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    --cgroupns host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
    --tmpfs /run --tmpfs /run/lock --tmpfs /tmp -v "$name-docker:/var/lib/docker" \
    "$@" "$image" /lib/systemd/systemd >/dev/null
}

server_wait_docker() {  # name
  local _
  for _ in $(seq 1 60); do
    docker exec "$1" docker info >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "testbed: the Docker engine inside $1 did not start" >&2
  return 1
}
