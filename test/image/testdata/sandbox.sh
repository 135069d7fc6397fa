#!/bin/sh
# sandbox.sh DATA BINARY WORKDIR [FLAGS...]
#
# Runs BINARY with FLAGS the way the image runs it, as far as the file system and the user go.
# Run it in a mount namespace of its own (unshare --mount --propagation private --fork), as
# root: every mount below lives and dies with that namespace, and the host sees none of them.
#
#   /                      a tmpfs holding only /raft-elector, then remounted read-only
#                          (like the image: distroless static, readOnlyRootFilesystem)
#   /proc                  procfs, read-only (a container runtime mounts /proc)
#   /var/lib/raft-elector  DATA=rw: a tmpfs owned by 65532:65532, mode 0700 (the emptyDir)
#                          DATA=ro: the same, read-only
#                          DATA=none: nothing there (and / is read-only)
#
# Then it chroots there and execs /raft-elector FLAGS as uid 65532, gid 65532, without
# capabilities. The network namespace is the host's, so loopback ports work. Before the exec it
# writes its pid (the member's pid after the exec) to WORKDIR/pid and prints "sandbox: exec" on
# stderr, so the caller can tell a failure of the member from a failure of this script.
set -eu

data=$1 bin=$2 work=$3
shift 3
uid=65532

root=$work/root
mkdir -p "$root"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$root"
cp "$bin" "$root/raft-elector"
chmod 0755 "$root/raft-elector"

mkdir "$root/proc"
mount -t proc -o ro,nosuid,nodev,noexec proc "$root/proc"

case $data in
rw | ro)
	mkdir -p "$root/var/lib/raft-elector"
	mount -t tmpfs -o "$data,mode=0700,uid=$uid,gid=$uid,nosuid,nodev,noexec,size=16m" tmpfs "$root/var/lib/raft-elector"
	;;
none) ;;
*)
	echo "sandbox: DATA must be rw, ro or none, not $data" >&2
	exit 64
	;;
esac

mount -o remount,ro "$root"

echo $$ >"$work/pid.tmp"
mv "$work/pid.tmp" "$work/pid"
echo "sandbox: exec /raft-elector as $uid:$uid in $root (data dir: $data)" >&2
exec chroot --userspec=$uid:$uid --groups=$uid "$root" /raft-elector "$@"
