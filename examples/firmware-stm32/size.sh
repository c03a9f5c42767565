#!/usr/bin/env bash
# Builds the firmware twice, with and without the `fitz` feature, and prints
# the flash and RAM each takes and the difference: what fitz-wire +
# fitz-client + fitz-embassy cost on a Cortex-M4F.
#
# Toolchain: Debian's rustc-web 1.96 + rust-web-src + lld-22 (TOOLCHAIN.md 3B),
# linked as the rustup toolchain `debian-web`; core is built from source
# (-Zbuild-std=core), so a reachable `alloc` fails the build. .ci/run installs
# those packages; rust-web-llvm pulls in llvm-22, which provides llvm-size-22.
#
# Environment: CARGO_TARGET_DIR (default: target/ here; both variants share
# it, only the firmware crate itself is rebuilt for the second), and the
# FITZ_* build-time settings of src/config.rs.
set -euo pipefail
# A relative CARGO_TARGET_DIR means relative to where the script was called.
if [ -n "${CARGO_TARGET_DIR:-}" ]; then
  mkdir -p "$CARGO_TARGET_DIR"
  CARGO_TARGET_DIR=$(cd "$CARGO_TARGET_DIR" && pwd)
fi
# cargo reads .cargo/config.toml (DEFMT_LOG, runner) from the directory it runs in.
cd "$(dirname "$0")"

TARGET=thumbv7em-none-eabihf
BIN=firmware-stm32
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
out="$CARGO_TARGET_DIR/$TARGET/release"

rustup toolchain list | grep -q '^debian-web' || rustup toolchain link debian-web /usr
if command -v llvm-size-22 >/dev/null; then SIZE=llvm-size-22
elif command -v llvm-size >/dev/null; then SIZE=llvm-size
else echo "size.sh: llvm-size not found (apt-get install llvm-22)" >&2; exit 1
fi

build() { # $1 = variant name, rest = cargo feature flags
  local name=$1; shift
  local t0=$SECONDS
  RUSTC_BOOTSTRAP=1 cargo +debian-web build --locked --release -Zbuild-std=core --target "$TARGET" "$@"
  cp "$out/$BIN" "$out/$BIN-$name"
  echo "built $name in $((SECONDS - t0)) s"
}

# Section sizes in bytes: .vector_table+.text+.rodata (flash only), .data
# (flash for its initial values and RAM), .bss+.uninit (RAM only; .uninit is
# defmt-rtt's buffer). The stack is not counted: it takes the rest of RAM.
sections() { # $1 = ELF; prints "text data bss"
  "$SIZE" -A "$1" | awk '
    $1 == ".vector_table" || $1 == ".text" || $1 == ".rodata" { t += $2 }
    $1 == ".data" { d += $2 }
    $1 == ".bss" || $1 == ".uninit" { b += $2 }
    END { if (t == 0) exit 1; print t + 0, d + 0, b + 0 }'
}

build no-fitz --no-default-features
build fitz

s0=$(sections "$out/$BIN-no-fitz")
s1=$(sections "$out/$BIN-fitz")
read -r t0 d0 b0 <<<"$s0"
read -r t1 d1 b1 <<<"$s1"

echo
echo "STM32F429ZI ($TARGET), release: opt-level=z, lto, codegen-units=1"
"$SIZE" -A "$out/$BIN-fitz" | awk '$1 ~ /^\.(vector_table|text|rodata|data|bss|uninit)$/'
printf '\n%-22s %8s %8s %8s %10s %10s\n' variant text data bss flash ram
row() { printf '%-22s %8d %8d %8d %10d %10d\n' "$1" "$2" "$3" "$4" $(($2 + $3)) $(($3 + $4)); }
row "without fitz" "$t0" "$d0" "$b0"
row "with fitz" "$t1" "$d1" "$b1"
row "fitz's share" $((t1 - t0)) $((d1 - d0)) $((b1 - b0))
echo "(text = .vector_table+.text+.rodata; bss = .bss+.uninit; flash = text+data; ram = data+bss, stack not included)"

# The statics behind the RAM figure, as laid out for this target: Fitz's
# Resources (every buffer and table of the client) and each task's
# storage (its future plus the executor's header).
if command -v llvm-nm-22 >/dev/null; then NM=llvm-nm-22; else NM=llvm-nm; fi
echo
echo "statics of the fitz build (bytes, from the symbol table):"
"$NM" -S -C "$out/$BIN-fitz" | grep -E ' [bBdD] .*(RESOURCES|::POOL)' \
  | while read -r _addr size _kind name; do printf '%8d  %s\n' "$((16#$size))" "$name"; done | sort -rn
