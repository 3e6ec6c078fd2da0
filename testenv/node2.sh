# Node 2's own pieces, sourced by testenv/node.sh 2 (needs NDIR and lib.sh): the mount
# namespace its daemons run in, its dockerd, its kubelet's cgroup root. Never executed.

NODE2_BRIDGE=r2ddocker2
NODE2_BRIDGE_CIDR=172.30.0.1/16
# What node 2's daemon needs for builds (repo2docker images, the base the test repositories'
# Dockerfiles start FROM). Copied from the host's daemon by id; kept in node 2's data root.
NODE2_IMAGES=(R2D_BUILD_IMAGE R2D_BUILD_IMAGE_2024 R2D_SINGLEUSER_IMAGE)

# node2_namespace: a process holding a private mount namespace ($NDIR/mountns.pid). Daemons
# of a namespace that is gone are stopped first: they would hold the old one.
node2_namespace() {
  pid_alive "$NDIR/mountns.pid" && return 0
  stop_pid "$NDIR/kubelet"; stop_pid "$NDIR/containerd"; stop_pid "$NDIR/dockerd"
  step "node 2's mount namespace"
  mkdir -p "$NDIR/docker" "$NODE_DOCKER_DIR"
  start_bg "$NDIR/mountns" unshare --mount --propagation private sleep infinity
  # The new namespace starts as a copy of the host's mounts, node 1's containers' and pods'
  # among them: those copies would pin node 1's layers and volumes, so they go. Then the
  # node's Docker socket directory becomes node 2's own, and so does /etc/docker (dockerd
  # reads its identity, key.json, from there: two daemons with one ID look like one).
  mkdir -p "$NDIR/etc-docker" /etc/docker
  nsenter -t "$(cat "$NDIR/mountns.pid")" -m -- bash -c '
    awk "{print \$2}" /proc/self/mounts | grep -E "^(/var/lib/docker/|/run/docker/|/var/run/docker/|/run/containerd/|/run/netns/|/var/run/netns/|$1/)" \
      | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
    mount --bind "$2" "$3" && mount --bind "$4" /etc/docker' _ "$TESTENV_DIR/node" "$NDIR/docker" "$NODE_DOCKER_DIR" "$NDIR/etc-docker" \
    || die "could not prepare node 2's mount namespace"
  end_step
}

# node2_dockerd: node 2's Docker daemon, in the namespace, on its own bridge, socket, state.
# --iptables=false: the host's daemon owns Docker's chains (two daemons rewriting them undo
# each other); the few rules node 2's containers need are added here once.
node2_dockerd() {
  ip link show "$NODE2_BRIDGE" >/dev/null 2>&1 || {
    ip link add "$NODE2_BRIDGE" type bridge && ip addr add "$NODE2_BRIDGE_CIDR" dev "$NODE2_BRIDGE"
  } || die "could not create the bridge $NODE2_BRIDGE"
  ip link set "$NODE2_BRIDGE" up
  local subnet=172.30.0.0/16
  iptables -t nat -C POSTROUTING -s "$subnet" ! -o "$NODE2_BRIDGE" -j MASQUERADE 2>/dev/null \
    || iptables -t nat -A POSTROUTING -s "$subnet" ! -o "$NODE2_BRIDGE" -j MASQUERADE
  for dir in -i -o; do
    iptables -C FORWARD "$dir" "$NODE2_BRIDGE" -j ACCEPT 2>/dev/null || iptables -I FORWARD "$dir" "$NODE2_BRIDGE" -j ACCEPT
  done
  mkdir -p "$NODE2_DOCKER_DATA" "$NDIR/docker-exec"
  echo '{}' >"$NDIR/daemon.json"  # not the host's /etc/docker/daemon.json
  docker2_up() { docker -H "unix://$NDIR/docker/docker.sock" info >/dev/null 2>&1; }
  # A pid file left by the daemons of an earlier start (node-down.sh kills them) whose number
  # the kernel has since given to another process: dockerd would take that process for its
  # containerd and wait 90 s for a socket that never comes. Kept only if the process is ours.
  for stale in "$NDIR/dockerd-own.pid" "$NDIR/docker-exec/containerd/containerd.pid"; do
    if [[ -f "$stale" ]] && ! { pid_alive "$stale" \
        && tr '\0' ' ' <"/proc/$(cat "$stale")/cmdline" 2>/dev/null | grep -qF "$NDIR/"; }; then
      rm -f "$stale"
    fi
  done
  ensure_daemon "$NDIR/dockerd" docker2_up "${IN_NODE[@]}" dockerd --config-file "$NDIR/daemon.json" \
    --data-root "$NODE2_DOCKER_DATA" --exec-root "$NDIR/docker-exec" --pidfile "$NDIR/dockerd-own.pid" \
    -H "unix://$NDIR/docker/docker.sock" --bridge "$NODE2_BRIDGE" --iptables=false --ip-masq=false \
    --cgroup-parent /r2d-node-2-docker
  node2_images
}

# node2_images: the host daemon's build images in node 2's daemon (skipped when the id matches).
node2_images() {
  local var image id
  for var in "${NODE2_IMAGES[@]}"; do
    image=$(grep "^$var=" "$TESTENV_DIR/images.env" | cut -d= -f2-) || die "no $var in $TESTENV_DIR/images.env: run testenv/images.sh"
    id=$(docker image inspect -f '{{.Id}}' "$image") || die "the host's daemon has no $image"
    [[ "$(docker -H "unix://$NDIR/docker/docker.sock" image inspect -f '{{.Id}}' "$image" 2>/dev/null)" == "$id" ]] && continue
    step "load $image into node 2's dockerd"
    docker save "$image" | docker -H "unix://$NDIR/docker/docker.sock" load -q >/dev/null || die "loading $image into node 2 failed"
    end_step
  done
}

# node2_cgroup_root PATH: the kubelet's cgroup root must exist in every hierarchy first
# ("cgroup [...] has some missing paths"), and a cpuset child gets its parent's cpus and mems.
node2_cgroup_root() {
  local h d
  for h in /sys/fs/cgroup/*/; do
    d="$h${1#/}"
    mkdir -p "$d"
    if [[ -f "${h}cpuset.cpus" && -z "$(tr -d '[:space:]' <"$d/cpuset.cpus")" ]]; then
      cat "${h}cpuset.cpus" >"$d/cpuset.cpus"
      cat "${h}cpuset.mems" >"$d/cpuset.mems"
    fi
  done
}
