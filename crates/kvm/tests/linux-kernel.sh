#!/usr/bin/env bash
# Runs the Linux kernel test (tests/linux.rs) with Debian's cloud kernel: downloads the kernel
# package with `apt-get download` (never installed), unpacks it under target/, and points
# MEMVISOR_KVM_LINUX at its vmlinuz. Needs apt sources for Debian and /dev/kvm.
set -euo pipefail
root=$(cd "$(dirname "$0")/../../.." && pwd)
dir="$root/target/memvisor-kvm-linux"
mkdir -p "$dir"
cd "$dir"
if ! compgen -G "boot/vmlinuz-*" >/dev/null; then
  pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  apt-get download "$pkg"
  dpkg-deb -x ./"$pkg"_*.deb .
fi
kernel=$(compgen -G "$dir/boot/vmlinuz-*" | head -n 1)
cd "$root"
# The two boots run side by side (one vCPU each); each test's console is printed whole when it
# ends, passed or failed.
MEMVISOR_KVM_LINUX="$kernel" cargo nextest run -p memvisor-kvm --test linux \
  --success-output immediate --failure-output immediate
