#!/usr/bin/env bash
# Assemble the root filesystem of Herald's container image from a built binary and the
# Debian system it was built on, for image/Containerfile (FROM scratch, COPY rootfs/ /).
#
#   image/stage.sh [BINARY] [OUT_DIR]
#       BINARY   default target/release/herald (CARGO_TARGET_DIR is honoured)
#       OUT_DIR  default target/image; the root filesystem goes to OUT_DIR/rootfs and
#                image/Containerfile is copied beside it, so OUT_DIR is the build context.
#
# What goes in: the binary as /usr/local/bin/herald; the shared libraries `ldd` says it needs
# (glibc's libc, libm, libgcc_s and the dynamic loader: Herald is linked against glibc, and no
# musl target is available here) at the paths the loader looks in; /etc/ssl/certs from
# Debian's ca-certificates (for HTTPS receivers; rustls reads the system roots); /etc/passwd
# and /etc/group with the non-root user and group 65532 (`nonroot`, the chart's
# securityContext); a minimal /etc/nsswitch.conf; the Debian copyright files of the packages
# the libraries and certificates come from. Nothing is written at run time: the image runs
# with a read-only root filesystem.
#
# Used by tests/image/build-and-test.sh (CI), by the two-stage Containerfile at the top of the
# repository (in its builder stage) and by the release workflow. Needs a Debian-based system
# (dpkg, ldd, ca-certificates).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${1:-${CARGO_TARGET_DIR:-target}/release/herald}"
OUT="${2:-${CARGO_TARGET_DIR:-target}/image}"
ROOT="$OUT/rootfs"

[ -x "$BIN" ] || { echo "stage.sh: no binary at $BIN (cargo build --release -p herald)" >&2; exit 1; }
[ -s /etc/ssl/certs/ca-certificates.crt ] || {
  echo "stage.sh: /etc/ssl/certs/ca-certificates.crt is missing (apt-get install ca-certificates)" >&2
  exit 1
}

rm -rf "$ROOT"
mkdir -p "$ROOT/usr/local/bin" "$ROOT/etc/ssl/certs" "$ROOT/usr/share/doc" "$ROOT/tmp"
chmod 1777 "$ROOT/tmp"
install -m 0755 "$BIN" "$ROOT/usr/local/bin/herald"

packages=(ca-certificates)
# Every library the binary loads (resolved through symlinks), and the loader at the path the
# binary names (its PT_INTERP, e.g. /lib64/ld-linux-x86-64.so.2).
while read -r lib; do
  [ -n "$lib" ] || continue
  real="$(readlink -f "$lib")"
  mkdir -p "$ROOT$(dirname "$lib")"
  cp -L "$real" "$ROOT$lib"
  # Debian's package of the library, for its copyright file.
  pkg="$(dpkg -S "$real" 2>/dev/null | head -1 | cut -d: -f1 || true)"
  [ -z "$pkg" ] && pkg="$(dpkg -S "$lib" 2>/dev/null | head -1 | cut -d: -f1 || true)"
  [ -n "$pkg" ] && packages+=("$pkg")
done < <(ldd "$BIN" | awk '/=> \// { print $3; next } /^[ \t]*\// { print $1 }')

for pkg in $(printf '%s\n' "${packages[@]}" | sort -u); do
  if [ -e "/usr/share/doc/$pkg/copyright" ]; then
    mkdir -p "$ROOT/usr/share/doc/$pkg"
    cp -L "/usr/share/doc/$pkg/copyright" "$ROOT/usr/share/doc/$pkg/copyright"
  fi
done

# The CA bundle (one file; rustls and OpenSSL-style lookups read it) from Debian's package.
cp -L /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"

cat >"$ROOT/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$ROOT/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
mkdir -p "$ROOT/home/nonroot"
chown 65532:65532 "$ROOT/home/nonroot" 2>/dev/null || true
cat >"$ROOT/etc/nsswitch.conf" <<'EOF'
hosts: files dns
passwd: files
group: files
EOF

cp image/Containerfile "$OUT/Containerfile"
echo "stage.sh: $ROOT ($(du -sh "$ROOT" | cut -f1)): $(cd "$ROOT" && find . -type f | sort | tr '\n' ' ')" >&2
