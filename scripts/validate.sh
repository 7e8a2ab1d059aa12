#!/usr/bin/env bash
# Validate the SAM template and the state machine definition (the Makefile's `validate` target).
#
#   1. sam validate --lint           SAM transform + cfn-lint's default rules
#   2. cfn-lint + cfn-lint-serverless  the serverless rules (-a cfn_lint_serverless.rules)
#   3. checkov                       cloudformation and secrets frameworks (and dockerfile for the
#                                    copier, Ray runtime and loader init images), offline; hadolint on the three
#   4. statelint                     on the ASL with the template's DefinitionSubstitutions applied.
#                                    statelint is a Ruby gem and RubyGems is not reachable here, and
#                                    Debian does not package it, so the npm package asl-validator
#                                    (pinned in package.json, installed into ./node_modules) does it.
#
# Every suppression lives in template.yaml next to the resource, with its reason.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=".venv-tools/bin"
export PATH="$PWD/$TOOLS:$PATH"
export SAM_CLI_TELEMETRY=0
REGION="${AWS_REGION:-us-east-1}"
ASL="statemachine/model_cache.asl.json"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

step() { printf '\n== %s\n' "$*"; }

step "sam validate --lint"
sam validate --lint --template template.yaml --region "$REGION"

step "cfn-lint with cfn-lint-serverless rules"
cfn-lint --append-rules cfn_lint_serverless.rules -- template.yaml

step "checkov (cloudformation, secrets)"
# --skip-download: offline; no guidelines or policies from the Prisma Cloud API.
checkov --quiet --compact --skip-download --framework cloudformation secrets \
  -f template.yaml -f samconfig.toml -f "$ASL" $(printf -- '-f %s ' events/*.json)
checkov --quiet --compact --skip-download --framework dockerfile secrets \
  -f containers/copier/Dockerfile -f containers/ray-serve/Dockerfile -f containers/loader-init/Dockerfile

step "hadolint on the container images"
hadolint containers/copier/Dockerfile containers/ray-serve/Dockerfile containers/loader-init/Dockerfile

step "statelint (asl-validator) on $ASL with DefinitionSubstitutions applied"
if [ ! -x node_modules/.bin/asl-validator ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
"$TOOLS/python" scripts/render_asl.py --template template.yaml "$ASL" > "$work/model_cache.rendered.asl.json"
node_modules/.bin/asl-validator --json-path "$work/model_cache.rendered.asl.json"

printf '\nvalidate: all checks passed\n'
