#!/usr/bin/env bash
# Static analysis of the Terraform under infra/terraform with checkov, installed from PyPI into
# a virtual environment under target/ on first use. Fails on any finding that is neither fixed
# nor skipped in place with its reason (`#checkov:skip=ID:reason`).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/checkov-venv
if [ ! -x "$venv/bin/checkov" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet 'checkov>=3.2,<4'
fi
# Offline: no policy metadata from the vendor's service (nothing but PyPI is reached here).
BC_SKIP_MAPPING=TRUE "$venv/bin/checkov" --skip-download --directory infra/terraform \
    --framework terraform --quiet --compact "$@"
