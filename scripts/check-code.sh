#!/usr/bin/env bash
# Source checks run by CI (CTest test `code_checks`) and by hand before a commit:
#   format    every tracked C++ file is clang-format clean (.clang-format: Google, 100 columns)
#   layering  the include-direction rules of docs/architecture.md
#   co_await  the GCC 12 rule: never `co_await f(args)` in one expression (docs/architecture.md)
#   tidy      clang-tidy on the C++ files changed since BASE (default: HEAD~1), when a build
#             directory with compile_commands.json is given (QKDN_BUILD_DIR or --build DIR)
# Usage: scripts/check-code.sh [--only format|layering|co_await|tidy] [--build DIR] [--base REV]
# Exit status: 0 when every selected check passes; each failure is printed as file:line: reason.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

only="" build="${QKDN_BUILD_DIR:-}" base="HEAD~1"
while [ $# -gt 0 ]; do
  case "$1" in
    --only) only="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    --base) base="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "check-code: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
want() { [ -z "$only" ] || [ "$only" = "$1" ]; }

failed=0
fail() { echo "$1"; failed=1; }

# Tracked sources, or all sources when this is not a git checkout (a release tarball).
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t sources < <(git ls-files '*.cpp' '*.hpp' '*.h' '*.cc')
else
  mapfile -t sources < <(find base controller southbound northbound db interworking tools tests bench \
                           -name '*.cpp' -o -name '*.hpp' | sort)
fi

if want format; then
  fmt=$(command -v clang-format || command -v clang-format-14 || true)
  if [ -z "$fmt" ]; then
    fail "format: clang-format not found (scripts/install-deps.sh installs it)"
  else
    out=$("$fmt" --dry-run --Werror "${sources[@]}" 2>&1 | grep -E '^[^ ].*: (error|warning):' || true)
    if [ -n "$out" ]; then
      echo "$out" | cut -d: -f1,2 | sort -u | sed 's/$/: not clang-format clean (run clang-format -i)/'
      failed=1
    fi
  fi
fi

# layering: rule = "files matching PATH_REGEX must not include INCLUDE_REGEX".
# An optional fourth argument names includes that are allowed although they match.
check_includes() {
  local path_re="$1" inc_re="$2" why="$3" allow="${4:-^$}" f
  for f in "${sources[@]}"; do
    [[ "$f" =~ $path_re ]] || continue
    grep -nE "^[[:space:]]*#[[:space:]]*include[[:space:]]*[<\"]($inc_re)" "$f" |
      grep -vE "$allow" |
      while IFS=: read -r line text; do echo "$f:$line: $why: $text"; done
  done
}
if want layering; then
  out=$(
    # The pure core: no transport, database or JSON; nothing above it.
    check_includes '^controller/(core|include)/' \
      'boost/asio|boost/beast|boost/json|pqxx|prometheus/|qkdn/(net|db|northbound|southbound|service|interworking)/' \
      'the core includes no transport, database, JSON or upper-layer header'
    # The southbound and the database never reach up into the northbound or the service.
    check_includes '^southbound/' 'qkdn/(northbound|service|db|interworking)/' \
      'southbound does not include northbound, service, db or interworking'
    check_includes '^db/' 'qkdn/(northbound|service|southbound|net|interworking)/|boost/asio|boost/beast' \
      'db does not include northbound, service, southbound, interworking or transport'
    # Interworking (Cxi between controllers) sits beside the southbound: core, base/net and
    # base/json below it; never the service, the northbound, the database or the Ck southbound.
    check_includes '^interworking/' 'qkdn/(northbound|service|db|southbound)/|pqxx|boost/beast' \
      'interworking does not include northbound, service, db, southbound or Beast'
    # Tools are applications of the southbound interfaces: never the controller's insides.
    check_includes '^tools/' 'qkdn/(northbound|service|db)/|boost/beast' \
      'tools do not include northbound, service, db or Beast'
    # base/ is below everything.
    check_includes '^base/' 'qkdn/(northbound|service|southbound|db|controller|interworking)/' \
      'base includes nothing above it'
  )
  if [ -n "$out" ]; then echo "$out"; failed=1; fi
fi

if want co_await; then
  # An awaited call in one expression: `co_await name(`, `co_await a.b(`, `co_await x->f(`,
  # `co_await ns::f<T>(`. Allowed: `co_await std::move(op)`, `co_await op`, `co_await (a || b)`.
  out=$(grep -nE 'co_await[[:space:]]+[A-Za-z_][A-Za-z0-9_:.>-]*(<[^;]*>)?[[:space:]]*\(' \
          "${sources[@]}" 2>/dev/null | grep -vE 'co_await[[:space:]]+std::move[[:space:]]*\(' |
          grep -vE '^[^:]+:[0-9]+:[[:space:]]*//' || true)
  if [ -n "$out" ]; then
    echo "$out" | sed -E 's/^([^:]+:[0-9]+):.*/\1: GCC 12 rule: build the awaitable first, then co_await std::move(op)/'
    failed=1
  fi
fi

if want tidy && [ -n "$build" ]; then
  tidy=$(command -v clang-tidy || command -v clang-tidy-14 || true)
  max_files=${QKDN_TIDY_MAX_FILES:-20}
  if [ -z "$tidy" ] || [ ! -f "$build/compile_commands.json" ]; then
    fail "tidy: needs clang-tidy and $build/compile_commands.json"
  elif ! git rev-parse --verify --quiet "$base^{commit}" >/dev/null; then
    echo "tidy: no revision $base here (a shallow clone?): nothing to compare, tidy skipped"
  else
    # Translation units in the build (compile_commands.json) changed since $base; the first
    # $max_files of them (a large merge would take too long in CI; the rest are listed).
    mapfile -t changed < <(git diff --name-only --diff-filter=AM "$base" -- '*.cpp' |
                             while read -r f; do
                               grep -qF "\"file\": \"$root/$f\"" "$build/compile_commands.json" &&
                                 echo "$f"
                             done)
    if [ "${#changed[@]}" -gt "$max_files" ]; then
      echo "tidy: ${#changed[@]} files changed since $base; checking the first $max_files, not: ${changed[*]:$max_files}"
      changed=("${changed[@]:0:$max_files}")
    fi
    for f in "${changed[@]}"; do
      if ! "$tidy" -p "$build" --quiet --warnings-as-errors='*' "$f" >/tmp/check-code-tidy.$$ 2>&1; then
        grep -E ': (warning|error):' /tmp/check-code-tidy.$$ | grep -F "$root/" || true
        fail "tidy: $f has findings (clang-tidy -p $build $f)"
      fi
    done
    rm -f /tmp/check-code-tidy.$$
    echo "tidy: ${#changed[@]} changed files checked"
  fi
fi

if [ "$failed" -eq 0 ]; then echo "check-code: ${only:-all checks} passed (${#sources[@]} files)"; fi
exit "$failed"
