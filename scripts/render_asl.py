"""Apply DefinitionSubstitutions to the state machine ASL, the way CloudFormation does.

Used by scripts/validate.sh (statelint/asl-validator needs real ARNs in place) and by the
pipeline tests (moto runs the very same file with moto's ARNs). Strict both ways: a `${Name}` in
the ASL without a value, or a value the ASL never uses, is an error, so the ASL and
template.yaml's DefinitionSubstitutions cannot drift apart.

    python scripts/render_asl.py [--template template.yaml] [ASL] > rendered.json

with placeholder values of the right shape for every substitution the template declares.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ASL = REPO_ROOT / "statemachine" / "model_cache.asl.json"
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
_ACCOUNT = "123456789012"
_REGION = "us-east-1"


class SubstitutionError(ValueError):
    pass


def placeholders(asl_text: str) -> set[str]:
    return set(_PLACEHOLDER.findall(asl_text))


def render(asl_text: str, values: dict[str, str]) -> str:
    """The ASL with every `${Name}` replaced; the result must be valid JSON."""
    used = placeholders(asl_text)
    missing = sorted(used - values.keys())
    unused = sorted(values.keys() - used)
    if missing or unused:
        raise SubstitutionError(f"ASL placeholders without a value: {missing}; values the ASL never uses: {unused}")
    rendered = _PLACEHOLDER.sub(lambda match: values[match.group(1)], asl_text)
    json.loads(rendered)
    return rendered


def template_substitution_names(template_path: Path) -> set[str]:
    from cfnlint.decode import decode

    template, matches = decode(str(template_path))
    if template is None:
        raise SubstitutionError(f"cannot read {template_path}: {matches}")
    state_machines = [
        resource
        for resource in template.get("Resources", {}).values()
        if resource.get("Type") == "AWS::Serverless::StateMachine"
    ]
    names: set[str] = set()
    for resource in state_machines:
        names.update(resource.get("Properties", {}).get("DefinitionSubstitutions", {}).keys())
    return names


def placeholder_value(name: str) -> str:
    """A value of the right shape for a substitution name, for validation only."""
    arn = f"arn:aws:{{service}}:{_REGION}:{_ACCOUNT}:{{resource}}"
    if name.endswith("FunctionArn"):
        return arn.format(service="lambda", resource=f"function:model-cache-{name[: -len('FunctionArn')].lower()}")
    if name == "CopierClusterArn":
        return arn.format(service="ecs", resource="cluster/model-cache-copier")
    if name == "CopierTaskDefinitionArn":
        return arn.format(service="ecs", resource="task-definition/model-cache-copier:1")
    if name == "CopierSubnetIds":
        return "subnet-0123456789abcdef0,subnet-0fedcba9876543210"
    if name == "CopierSecurityGroupId":
        return "sg-0123456789abcdef0"
    if name == "CopierConfigured":
        return "true"
    if name == "CopierAssignPublicIp":
        return "DISABLED"
    if name == "BucketName":
        return "model-cache-bucket"
    if name == "CachePrefix":
        return "models"
    if name == "WorkPrefix":
        return "_model-cache-work"
    if name == "GatedPrefix":
        return "gated-models"
    if name == "UnitLayout":
        return "auto"
    if name.endswith("Bytes"):
        return "16777216"
    if name.endswith("Seconds"):
        return "30"
    raise SubstitutionError(f"no placeholder value for substitution {name}; add one to scripts/render_asl.py")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("asl", nargs="?", type=Path, default=DEFAULT_ASL)
    parser.add_argument("--template", type=Path, default=REPO_ROOT / "template.yaml")
    args = parser.parse_args(argv)
    asl_text = args.asl.read_text()
    names = template_substitution_names(args.template)
    try:
        rendered = render(asl_text, {name: placeholder_value(name) for name in names})
    except SubstitutionError as exc:
        print(f"render_asl: {args.asl} vs {args.template}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
