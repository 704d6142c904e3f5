# Sourced by the launch scripts: `--dry-run` as the first argument prints every command (shell-quoted, one
# per line) instead of running it. Usage inside a script: `dry_run_flag "$@" && shift; run CMD ARGS...`.
DRY_RUN=${DRY_RUN:-}
dry_run_flag() { if [ "${1:-}" = "--dry-run" ]; then DRY_RUN=1; return 0; fi; return 1; }
run() {
  if [ -n "$DRY_RUN" ]; then printf '%q ' "$@" | sed 's/ $//'; echo; else "$@"; fi
}
