"""runner.plan: how the environment's and the operator's parameter values are merged (unit)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from drillbook.config.environments import Environment
from drillbook.config.notebooks import Parameter, declared_parameters
from drillbook.errors import NotebookError
from drillbook.runner.plan import RunRequest, merge_parameters, with_defaults

SOURCE = 'env = "local"\ndry_run = True\napprove = []\nreplicas = 2\nratio = 0.5\nlabel = "x"\nstrict = False'
PATH = Path("drill.ipynb")


def declared(source: str = SOURCE) -> dict[str, Parameter]:
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["parameters"]})
    return declared_parameters(nbformat.v4.new_notebook(cells=[cell]), PATH.name)


def merge(env_values: dict[str, Any] | None = None, given: dict[str, Any] | None = None,
          source: str = SOURCE, **request: Any) -> dict[str, Any]:
    env = Environment(name="staging", parameters={"drill": env_values or {}})
    request_ = RunRequest("drill", "staging", given or {}, **request)
    return merge_parameters(request_, declared(source), "drill", env, PATH)


def test_values_from_the_command_line_are_coerced_to_the_declared_types() -> None:
    values = merge(given={"replicas": "3", "ratio": "0.25", "strict": "yes", "label": "y"})
    assert {k: values[k] for k in ("replicas", "ratio", "strict", "label")} == \
        {"replicas": 3, "ratio": 0.25, "strict": True, "label": "y"}


def test_the_command_line_overrides_the_environment_and_unset_values_are_left_to_the_notebook() -> None:
    values = merge(env_values={"replicas": 5, "label": "from-env"}, given={"replicas": "7"})
    assert values["replicas"] == 7 and values["label"] == "from-env"
    assert "ratio" not in values  # the notebook's own default applies


def test_the_runner_injects_env_dry_run_and_approvals_when_declared() -> None:
    values = merge(dry_run=False, approve=["promote"])
    assert (values["env"], values["dry_run"], values["approve"]) == ("staging", False, ["promote"])
    assert "change" not in values  # not declared: a plain notebook need not know drillbook


def test_a_plain_notebook_gets_nothing_it_does_not_declare() -> None:
    assert merge(source="n = 1", given={"n": "4"}) == {"n": 4}


@pytest.mark.parametrize("env_values, given, words", [
    ({}, {"nope": "1"}, ["no parameter 'nope'", "-p"]),
    ({"nope": 1}, {}, ["no parameter 'nope'", "environment staging"]),
    ({}, {"dry_run": "false"}, ["'dry_run' is set by the runner"]),
    ({"env": "prod"}, {}, ["'env' is set by the runner"]),
    ({}, {"replicas": "many"}, ["'replicas'", "expects int"]),
])
def test_bad_values_are_refused_with_their_origin(env_values: dict[str, Any], given: dict[str, Any],
                                                   words: list[str]) -> None:
    with pytest.raises(NotebookError) as caught:
        merge(env_values=env_values, given=given)
    assert all(word in caught.value.message for word in words), caught.value.message
    assert caught.value.hint


def test_with_defaults_fills_in_what_was_not_given() -> None:
    assert with_defaults(declared("a = 1\nb = 'x'"), {"b": "y"}) == {"a": 1, "b": "y"}
