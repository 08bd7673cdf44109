#!/usr/bin/env bash
# Checks each prerequisite of MoeCluster and installs only what is missing, printing one line per
# check or action. Safe to run any number of times. Sourced by ./moe; callable on its own.
#   bootstrap.sh [redis] [chromium] [fortunes]   -- also make sure redis-server, chromium, Debian's fortunes text are present
set -euo pipefail

say() { printf 'bootstrap: %s\n' "$*"; }
die() { printf 'bootstrap: %s\n' "$*" >&2; exit 1; }

# Runs a command as root: directly when we are root, through sudo when it works without a prompt.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo -n "$@"
  else return 90
  fi
}
need_root() {
  as_root true 2>/dev/null && return 0
  die "cannot install $1: not root and no password-less sudo; run ./moe as root, or install $1 yourself ($2)"
}

# The libstdc++ the loader will actually pick for TorchSharp's native library.
libstdcxx_path() {
  local p
  p=$(ldconfig -p 2>/dev/null | awk '/libstdc\+\+\.so\.6 .*x86-64/ {print $NF; exit}')
  [ -n "$p" ] || p=/usr/lib/x86_64-linux-gnu/libstdc++.so.6
  printf '%s' "$p"
}
has_glibcxx_3432() { grep -aq 'GLIBCXX_3\.4\.32' "$(libstdcxx_path)" 2>/dev/null; }

# TorchSharp 0.107's libtorch needs GCC 13's libstdc++ (GLIBCXX_3.4.32). Debian 12 has GCC 12's.
# The tested fix (DESIGN.md): take libstdc++6 from Debian 13 through a private source list and a
# private package-list directory, so every later plain apt-get still sees only Debian 12.
ensure_libstdcxx() {
  if has_glibcxx_3432; then say "libstdc++ has GLIBCXX_3.4.32: ok"; return; fi
  local id version
  id=$(. /etc/os-release && echo "${ID:-}"); version=$(. /etc/os-release && echo "${VERSION_ID:-}")
  [ "$id" = debian ] && [ "$version" = 12 ] ||
    die "libstdc++ lacks GLIBCXX_3.4.32 (needed by TorchSharp) and this is $id $version, not Debian 12; install GCC 13's libstdc++6 (Debian 13 / Ubuntu 24.04 have it)"
  need_root libstdc++6 "apt-get install -t trixie libstdc++6 from Debian 13"
  local src uri keyring dir
  src=$(grep -lsE '^(Suites:.*bookworm|deb .*bookworm)' /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null | head -n1 || true)
  [ -n "$src" ] || die "no Debian 12 source entry found under /etc/apt; cannot derive the Debian 13 mirror"
  if grep -q '^URIs:' "$src"; then
    uri=$(awk '/^URIs:/ {print $2; exit}' "$src")
    keyring=$(awk '/^Signed-By:/ {print $2; exit}' "$src")
  else
    uri=$(awk '/^deb / && /bookworm/ {for (i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; exit}}' "$src")
    keyring=""
  fi
  [ -n "$uri" ] || die "could not read the mirror URI from $src"
  [ -n "$keyring" ] || keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  dir=/var/lib/moecluster/apt-trixie
  as_root mkdir -p "$dir/lists/partial"
  printf 'deb [signed-by=%s] %s trixie main\n' "$keyring" "$uri" | as_root tee "$dir/trixie.list" >/dev/null
  local opts=(-o "Dir::Etc::SourceList=$dir/trixie.list" -o Dir::Etc::SourceParts=/dev/null -o "Dir::State::Lists=$dir/lists")
  say "installing libstdc++6 from Debian 13 (trixie) via $uri: TorchSharp needs GLIBCXX_3.4.32"
  as_root apt-get "${opts[@]}" -qq update >/dev/null || die "apt-get update of the trixie list failed (mirror $uri)"
  DEBIAN_FRONTEND=noninteractive as_root apt-get "${opts[@]}" -y -qq -t trixie install libstdc++6 >/dev/null ||
    die "apt-get install -t trixie libstdc++6 failed"
  has_glibcxx_3432 || die "libstdc++6 from trixie installed but GLIBCXX_3.4.32 is still missing in $(libstdcxx_path)"
  say "libstdc++ now has GLIBCXX_3.4.32"
}

ensure_dotnet() {
  command -v dotnet >/dev/null 2>&1 || die "the .NET SDK 10 is missing: install dotnet-sdk-10.0 (https://dot.net) and put dotnet on PATH"
  local major
  major=$(dotnet --version 2>/dev/null | cut -d. -f1)
  [ "${major:-0}" -ge 10 ] || die "dotnet $(dotnet --version) found; MoeCluster needs the .NET SDK 10 or newer"
  say "dotnet $(dotnet --version): ok"
}

ensure_redis() {
  if command -v redis-server >/dev/null 2>&1; then say "redis-server: ok"; return; fi
  need_root redis-server "apt-get install redis-server"
  say "installing redis-server from Debian's packages: the cluster tests use Redis membership and checkpoints"
  DEBIAN_FRONTEND=noninteractive as_root apt-get -y -qq install redis-server >/dev/null 2>&1 || {
    as_root apt-get -qq update >/dev/null
    DEBIAN_FRONTEND=noninteractive as_root apt-get -y -qq install redis-server >/dev/null
  } || die "apt-get install redis-server failed"
  # Debian's package starts a system server on 6379; the project starts its own on a private port.
  as_root systemctl disable --now redis-server >/dev/null 2>&1 || true
}

ensure_chromium() {
  if command -v chromium >/dev/null 2>&1; then say "chromium: ok"; return; fi
  need_root chromium "apt-get install chromium"
  say "installing chromium from Debian's packages: the status page's test loads it in a headless browser"
  DEBIAN_FRONTEND=noninteractive as_root apt-get -y -qq install chromium >/dev/null 2>&1 || {
    as_root apt-get -qq update >/dev/null
    DEBIAN_FRONTEND=noninteractive as_root apt-get -y -qq install chromium >/dev/null
  } || die "apt-get install chromium failed"
}

ensure_fortunes() {
  if [ -f /usr/share/games/fortunes/fortunes ]; then say "fortunes text: ok"; return; fi
  need_root fortunes "apt-get install fortunes"
  say "installing fortunes from Debian's packages: the language model (./moe lm) trains on its text"
  DEBIAN_FRONTEND=noninteractive as_root apt-get -y -qq install fortunes >/dev/null 2>&1 || {
    as_root apt-get -qq update >/dev/null
    DEBIAN_FRONTEND=noninteractive as_root apt-get -y -qq install fortunes >/dev/null
  } || die "apt-get install fortunes failed"
}

bootstrap_main() {
  ensure_dotnet
  ensure_libstdcxx
  for want in "$@"; do
    case "$want" in
      redis) ensure_redis ;;
      chromium) ensure_chromium ;;
      fortunes) ensure_fortunes ;;
      *) die "unknown prerequisite '$want'; known: redis, chromium, fortunes" ;;
    esac
  done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then bootstrap_main "$@"; fi
