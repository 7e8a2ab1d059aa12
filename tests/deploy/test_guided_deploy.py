"""`sam deploy --guided` asks only what a team must decide (issue 24).

The questions are counted from SAM CLI itself: the real `sam deploy --guided` reads template.yaml and
samconfig.toml, every prompt is answered with Enter (its default), and the run stops where SAM CLI
first calls AWS (its managed artifacts bucket), after the last question. Measured the same way on the
template before this change: 59 questions (51 parameters).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any

import pytest
from conftest import REPO_ROOT

pytestmark = pytest.mark.unit

SAM = REPO_ROOT / ".venv-tools" / "bin" / "sam"
MAX_PARAMETERS = 15
# SAM CLI's own questions around the parameters: stack name, region; confirm changes, IAM role
# creation, disable rollback, save arguments, config file, config environment.
SAM_OWN_QUESTIONS = 8
# A click prompt as SAM CLI prints it: a tab, the question, an optional [default], then ": ".
PROMPT = re.compile(r"\t([A-Z][A-Za-z0-9 ]*?[A-Za-z0-9])(?: \[[^\n]*?\])?: ")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    from cfnlint.decode import decode

    decoded, problems = decode(str(REPO_ROOT / "template.yaml"))
    assert decoded is not None, problems
    return dict(decoded)


@pytest.fixture(scope="module")
def guided_questions(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The questions of a real `sam deploy --guided`, each answered with Enter."""
    assert SAM.exists(), f"{SAM} is missing: run `make install`"
    work = tmp_path_factory.mktemp("guided")
    config = work / "samconfig.toml"
    shutil.copy(REPO_ROOT / "samconfig.toml", config)
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        # Nothing listens there: SAM CLI's first AWS call (after the questions) fails at once.
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_MAX_ATTEMPTS": "1",
        "SAM_CLI_TELEMETRY": "0",
    }
    env.pop("AWS_PROFILE", None)
    completed = subprocess.run(
        [
            str(SAM),
            "deploy",
            "--guided",
            "--template-file",
            str(REPO_ROOT / "template.yaml"),
            "--config-file",
            str(config),
            "--region",
            "us-east-1",
        ],
        input="\n" * 200,
        capture_output=True,
        text=True,
        cwd=work,
        env=env,
        timeout=300,
    )
    output = completed.stdout + completed.stderr
    assert "Looking for resources needed for deployment" in output, output[-3000:]
    questions = PROMPT.findall(output.split("Looking for resources needed for deployment")[0])
    assert config.read_text() == (REPO_ROOT / "samconfig.toml").read_text(), "the guided run saved nothing"
    return questions


def test_the_guided_deploy_asks_at_most_fifteen_parameters(
    template: dict[str, Any], guided_questions: list[str]
) -> None:
    # GIVEN the template and samconfig.toml WHEN `sam deploy --guided` runs, every answer the default
    asked = [question.removeprefix("Parameter ") for question in guided_questions if question.startswith("Parameter ")]
    # THEN it asks exactly the template's parameters, at most 15 of them, and SAM CLI's own 8 questions
    assert asked == list(template["Parameters"]), asked
    assert len(asked) <= MAX_PARAMETERS
    assert len(guided_questions) == len(asked) + SAM_OWN_QUESTIONS, guided_questions
    assert len(guided_questions) <= MAX_PARAMETERS + SAM_OWN_QUESTIONS


def test_every_parameter_is_described_grouped_labelled_and_blank_is_a_valid_answer(
    template: dict[str, Any],
) -> None:
    # GIVEN the template's parameters and its console interface
    interface = template["Metadata"]["AWS::CloudFormation::Interface"]
    grouped = [name for group in interface["ParameterGroups"] for name in group["Parameters"]]
    for name, spec in template["Parameters"].items():
        # THEN each has a Description, one group and a label
        assert spec.get("Description"), f"{name} has no Description"
        assert grouped.count(name) == 1, f"{name} is in {grouped.count(name)} ParameterGroups"
        assert name in interface["ParameterLabels"], f"{name} has no ParameterLabel"
        # AND its default (what Enter answers) passes its own AllowedPattern
        pattern = spec.get("AllowedPattern")
        if pattern is not None:
            assert re.fullmatch(pattern, str(spec.get("Default"))), f"{name}'s default fails {pattern}"
    assert set(grouped) == set(template["Parameters"]), "a group names something that is not a parameter"


def test_the_tuning_knobs_are_settings_not_questions(template: dict[str, Any]) -> None:
    # GIVEN the Settings mapping the knobs moved to
    settings = template["Mappings"]["Settings"]["Stack"]
    # THEN no knob is also a parameter, and every knob is read somewhere in the template
    assert not set(settings) & set(template["Parameters"])
    text = (REPO_ROOT / "template.yaml").read_text()
    for name in settings:
        assert f"!FindInMap [Settings, Stack, {name}]" in text, f"the Settings mapping's {name} is read nowhere"
    # AND the Rules, which may read parameters only, name the work prefix the mapping holds
    rules = str(template["Rules"])
    assert settings["WorkPrefix"] in rules


def test_the_fargate_copier_is_optional_and_its_network_required_with_it(template: dict[str, Any]) -> None:
    # GIVEN the copier's three parameters
    copier = {name: template["Parameters"][name] for name in ("CopierImageUri", "CopierVpcId", "CopierSubnetIds")}
    # THEN each may be left blank
    assert all(spec.get("Default") == "" for spec in copier.values()), copier
    # AND every copier resource exists only with the copier
    for name, resource in template["Resources"].items():
        if name.startswith("Copier"):
            assert resource.get("Condition") == "HasCopier", name
    # AND with an image the Rule requires the VPC and the subnets
    rule = template["Rules"]["TheCopierNeedsItsNetwork"]
    assert rule["RuleCondition"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "CopierImageUri"}, ""]}]}
    assert "CopierVpcId" in str(rule["Assertions"])
    assert "CopierSubnetIds" in str(rule["Assertions"])


def test_samconfig_holds_no_parameter_the_template_lacks() -> None:
    # GIVEN samconfig.toml's deploy parameters (a stale override would become a failed deploy)
    import tomllib

    config = tomllib.loads((REPO_ROOT / "samconfig.toml").read_text())
    overrides = str(config.get("default", {}).get("deploy", {}).get("parameters", {}).get("parameter_overrides", ""))
    template_text = (REPO_ROOT / "template.yaml").read_text()
    # THEN each name it overrides is a template parameter
    for name in re.findall(r"(\w+)=", overrides):
        assert re.search(rf"^  {name}:\n    Type:", template_text, re.M), name


def test_every_setting_is_documented_in_the_reference(template: dict[str, Any]) -> None:
    # GIVEN the Settings mapping and docs/reference/settings.md
    settings = template["Mappings"]["Settings"]["Stack"]
    reference = (REPO_ROOT / "docs" / "reference" / "settings.md").read_text()
    # THEN each setting has its row
    missing = [name for name in settings if f"`{name}`" not in reference]
    assert missing == []
