"""Run statemachine/model_cache.asl.json in moto's Step Functions engine, against real servers.

A thin test-side wrapper over `model_cache_devtools.local_pipeline` (which `make demo` runs too):
that module says exactly what is real and what is routed (Lambda invocations to the handlers
in-process, ECS RunTask to the copier as a local process). Here the patches go through pytest's
MonkeyPatch, so they are undone after each test.
"""

from __future__ import annotations

import json
from types import ModuleType

import pytest
from conftest import MotoEndpoint

from model_cache_devtools import local_pipeline
from model_cache_devtools.local_pipeline import (
    ACCOUNT,
    FUNCTION_FOLDERS,
    MIB,
    CopierRun,
    Invocation,
    Router,
    Stack,
    create_stack,
    executing_state_machines,
    load_handler_module,
    render_asl,
)

__all__ = [
    "ACCOUNT",
    "ASL_PATH",
    "FUNCTIONS_DIR",
    "FUNCTION_FOLDERS",
    "MIB",
    "CopierRun",
    "Invocation",
    "Router",
    "Stack",
    "create_stack",
    "executing_state_machines",
    "install_routes",
    "load_handler_module",
    "refresh_children",
    "render_asl",
    "render_module",
]

FUNCTIONS_DIR = local_pipeline.functions_dir()
ASL_PATH = local_pipeline.asl_path()
# scripts/render_asl.py: the same substitution validate.sh applies before statelint.
render_module: ModuleType = local_pipeline.render_module()


def refresh_children(stack: Stack) -> dict[str, tuple[str, str]]:
    """execution name -> (repo_id, status) of every child execution a refresh started."""
    listed = stack.sfn.list_executions(stateMachineArn=stack.state_machine_arn, maxResults=1000)["executions"]
    children = {}
    for execution in listed:
        if execution["name"].startswith("refresh-"):
            described = stack.wait(execution["executionArn"])
            children[execution["name"]] = (json.loads(described["input"])["repo_id"], described["status"])
    return children


def install_routes(monkeypatch: pytest.MonkeyPatch, moto: MotoEndpoint) -> Router:
    """Route moto's Lambda and ECS calls to our code for this test (undone by monkeypatch)."""
    return local_pipeline.install_routes(monkeypatch, moto)
