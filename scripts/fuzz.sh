#!/usr/bin/env bash
# Builds every fuzz target of fuzz/ once (cargo fuzz, on stable: --sanitizer none) and runs each
# for a bounded time; fails when any target found a panic (assertions included), an input slower
# than 10 s or one that ran out of memory. Prints, per target, the executions and the coverage
# libFuzzer reached. docs/testing.md, "Fuzzing".
#
#   scripts/fuzz.sh                  every target, FUZZ_SECONDS (default 20) each
#   FUZZ_SECONDS=300 scripts/fuzz.sh filter patch     two targets, five minutes each
#
# The committed seeds (fuzz/corpus/<target>/) are read, never written: what a run finds goes to
# a scratch corpus under the target directory (kept between runs), and a crashing input to
# fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-20}"
target_dir="${CARGO_TARGET_DIR:-$PWD/target}/fuzz"
triple="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$target_dir/$triple/release"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz is not installed (scripts/setup.sh installs it)" >&2
  exit 1
fi
# cargo fuzz has no --locked: check the committed lock file is complete first.
cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi

echo "fuzz: building ${#targets[@]} targets into $target_dir"
# One build for all targets; overflow checks and debug assertions are on (cargo fuzz's default).
cargo fuzz build --fuzz-dir fuzz --sanitizer none --target-dir "$target_dir"

status=0
printf '%-18s %12s %8s %8s  %s\n' target executions cov features result
for target in "${targets[@]}"; do
  scratch="$target_dir/corpus/$target"
  artifacts="fuzz/artifacts/$target"
  log="$target_dir/logs/$target.log"
  mkdir -p "$scratch" "$artifacts" "$(dirname "$log")"
  options=(
    "-max_total_time=$seconds"
    # An input that takes seconds is a finding too (a parser that goes quadratic).
    -timeout=10
    -rss_limit_mb=2048
    -print_final_stats=1
    "-artifact_prefix=$artifacts/"
  )
  if [ -f "fuzz/dict/$target.dict" ]; then
    options+=("-dict=fuzz/dict/$target.dict")
  fi
  # The first directory receives new inputs; the committed seeds come second, read only.
  if "$bin_dir/$target" "${options[@]}" "$scratch" "fuzz/corpus/$target" >"$log" 2>&1; then
    result=ok
  else
    result="FAILED (exit $?; log $log)"
    status=1
  fi
  # A target that fails at once prints neither line: no match must not end the script.
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
  coverage="$(grep -E '^#[0-9]+' "$log" | grep -oE 'cov: [0-9]+ ft: [0-9]+' | tail -n 1 || true)"
  cov="$(echo "$coverage" | awk '{print $2}')"
  features="$(echo "$coverage" | awk '{print $4}')"
  printf '%-18s %12s %8s %8s  %s\n' "$target" "${runs:-?}" "${cov:-?}" "${features:-?}" "$result"
  if [ "$result" != ok ]; then
    # The crash report: the panic and its message, libFuzzer's verdict, the input's file name.
    {
      grep -E -A3 "panicked at" "$log" | head -n 8
      grep -E "ERROR: libFuzzer|SUMMARY|Test unit written" "$log"
    } >&2 || true
  fi
done
exit "$status"
