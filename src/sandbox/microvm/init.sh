#!/kiln/busybox sh
# The init (PID 1) of a `microvm` sandbox's guest: the agent Kiln talks to. Runs from the
# initramfs scripts/microvm-image.sh builds (busybox and the kernel's modules, nothing else);
# the host's /usr is shown read-only over virtio-9p, as the oci driver binds it.
#
# Ports of the virtio-serial device, in the order the driver adds them:
#   /dev/hvc0     the command's terminal (a virtio console: a tty here)
#   /dev/vport0p1 control, lines both ways (below)
#   /dev/vport0p2 the command's stdin and stdout+stderr when it has no terminal
# Limits come on the kernel command line: kiln.memory (bytes), kiln.pids, kiln.disk (bytes),
# kiln.files, kiln.nofile, and the command's kiln.uid and kiln.gid; the limits apply to a
# cgroup every process of the command runs in.
#
# Control, host to guest:
#   arg B64 / env B64 / cwd B64   one argument, NAME=value or the directory (base64), before:
#   prepare TERMINAL              readies the command (TERMINAL 1: on hvc0) up to its exec
#   start ROWS COLS               lets it run (its terminal sized ROWS x COLS)
#   size ROWS COLS                the terminal's new size (the kernel sends SIGWINCH)
#   signal N                      signal N to the command
#   stats                         asks for a stats line
# Guest to host:
#   ready                         booted, limits applied, waiting for the command
#   prepared                      the command waits at its gate
#   started                       the command runs
#   exit CODE OOM                 it ended: the shell's status (128+N for signal N) and
#                                 whether the cgroup saw an out-of-memory kill (0/1);
#                                 then the machine powers off
#   stats MEMORY PIDS CPU_USEC    the cgroup's memory.current, pids.current, usage_usec
bb=/kiln/busybox
$bb mount -t proc -o hidepid=2 proc /proc
$bb mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_mmio virtio_console netfs fscache 9pnet 9pnet_virtio 9p; do
  $bb insmod /modules/$m.ko || { echo "kiln-init: insmod $m failed" >/dev/ttyS0; $bb poweroff -f; }
done
$bb mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose usr /usr ||
  { echo "kiln-init: no /usr" >/dev/ttyS0; $bb poweroff -f; }
for l in bin sbin lib lib64; do [ -e /usr/$l ] && $bb ln -sf usr/$l /$l; done

arg() { $bb sed -n "s/.*kiln\.$1=\([0-9]*\).*/\1/p" /proc/cmdline; }
memory=$(arg memory) pids=$(arg pids) disk=$(arg disk) files=$(arg files) nofile=$(arg nofile)
uid=$(arg uid) gid=$(arg gid)

$bb mkdir -p /work /tmp /run/kiln /dev/pts /dev/shm
$bb mount -t tmpfs -o size=$disk,nr_inodes=$files,mode=0755,uid=$uid,gid=$gid work /work
$bb mount -t tmpfs -o size=$((disk / 4)),nr_inodes=$files,mode=1777 tmp /tmp
$bb mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts
$bb mount -t tmpfs -o size=$((disk / 16)),nr_inodes=1024,mode=1777 shm /dev/shm
$bb ln -sf pts/ptmx /dev/ptmx
# The agent's own files and the cgroups, out of the command's reach (the root is read-only).
$bb mount -t tmpfs -o size=1m,mode=0700 run /run/kiln
$bb mkdir /run/kiln/cg
$bb mount -t cgroup2 cgroup2 /run/kiln/cg || { echo "kiln-init: no cgroup2" >/dev/ttyS0; $bb poweroff -f; }
echo "+memory +pids +cpu" >/run/kiln/cg/cgroup.subtree_control
box=/run/kiln/cg/box
$bb mkdir $box
echo "$memory" >$box/memory.max
echo 0 >$box/memory.swap.max 2>/dev/null
echo "$pids" >$box/pids.max

# Its own users, no host account; no user namespaces (the Debian kernel's switch).
printf 'root:x:0:0:root:/root:/bin/sh\nkiln:x:%s:%s:kiln:/work:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' "$uid" "$gid" >/etc/passwd
printf 'root:x:0:\nkiln:x:%s:\nnogroup:x:65534:\n' "$gid" >/etc/group
printf '127.0.0.1 localhost sandbox\n' >/etc/hosts
echo sandbox >/etc/hostname
$bb hostname sandbox
$bb sysctl -qw kernel.unprivileged_userns_clone=0 user.max_user_namespaces=0 kernel.dmesg_restrict=1
$bb ip link set lo up
$bb rmdir /root 2>/dev/null  # the kernel's, for a root it mounts
$bb mount -o remount,ro / 2>/dev/null

exec 3<>/dev/vport0p1
echo ready >&3

set --
envs=""
cwd=/work
# (the x keeps trailing newlines, which $(...) would strip, then goes)
decode() { v=$(echo "$1" | $bb base64 -d; echo x); v=${v%x}; }
while read -r op a b c <&3; do
  case $op in
  arg) decode "$a" && set -- "$@" "$v" ;;
  env) decode "$a" && envs="$envs
$v" ;;
  cwd) decode "$a" && cwd=$v ;;
  size) $bb stty -F /dev/hvc0 rows "$a" cols "$b" ;;
  signal) [ -s /run/kiln/pid ] && $bb kill -"$a" "$($bb cat /run/kiln/pid)" 2>/dev/null ;;
  stats)
    echo "stats $($bb cat $box/memory.current) $($bb cat $box/pids.current)" \
      "$($bb sed -n 's/^usage_usec //p' $box/cpu.stat)" >&3 ;;
  prepare)
    # Everything up to the command's own exec, done before it is asked for (a warm pool's
    # machines wait here): the chain runs to a gate, a shell of the user's that waits for a
    # line on a FIFO only this init writes, then becomes the command (exec: the same pid).
    # A background job of a non-interactive shell starts with SIGINT and SIGQUIT ignored,
    # which no shell may undo: coreutils' env --default-signal does (Ctrl-C works), as the
    # gate's last step: until then a Ctrl-C is one typed before the program and ends nothing
    # (the host is told "started" before the gate's exec).
    if [ "$a" = 1 ]; then
      io=/dev/hvc0
      setsid=-c
    else
      io=/dev/vport0p2
      setsid=
    fi
    # The command's environment: PATH, HOME, TERM and the spec's (exported one by one:
    # values keep their spaces).
    echo "$envs" | $bb grep . >/run/kiln/env
    $bb mkfifo -m 0600 /run/kiln/gate
    (
      # One open of the port: a virtio port takes one at a time.
      $bb sh -c 'echo $$ >'$box'/cgroup.procs && echo $$ >/run/kiln/pid && cd "$0" || exit 126
        export PATH=/usr/local/bin:/usr/bin:/bin HOME=/work TERM=xterm-256color
        while IFS= read -r kv; do export "$kv"; done </run/kiln/env
        ulimit -n '"$nofile"'
        exec '"$bb"' setsid '"$setsid"' /usr/bin/setpriv --reuid='"$uid"' --regid='"$gid"' \
          --clear-groups --inh-caps=-all --bounding-set=-all --no-new-privs -- \
          '"$bb"' sh -c "read -r _ <&3 || exit 97; exec 3<&-; exec /usr/bin/env --default-signal \"\$@\"" kiln-gate "$@"' \
        "$cwd" "$@" 0<>$io 1>&0 2>&0 3</run/kiln/gate &
      wait $!
      code=$?
      oom=$($bb sed -n 's/^oom_kill //p' $box/memory.events)
      [ "${oom:-0}" -gt 0 ] && oom=1 || oom=0
      echo "exit $code $oom" >&3
      $bb sync
      $bb poweroff -f
    ) &
    echo prepared >&3
    ;;
  start)
    # The terminal's size (it is open: the gate holds it), then the gate opens.
    [ "$io" = /dev/hvc0 ] && $bb stty -F /dev/hvc0 sane rows "$a" cols "$b"
    echo go >/run/kiln/gate
    echo started >&3
    ;;
  esac
done
$bb poweroff -f
