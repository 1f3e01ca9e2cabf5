"""Who may do what on an environment: ``access: {operators: [...], approvers: [{name, key}]}``.

Roles: a viewer reads the site (anyone); an operator runs notebooks (when ``operators`` is given,
only those logins may); an approver signs approvals of a dry run's plan with their own key
(``drillbook approve``). On an environment that requires approval (every ``production: true``
one) a real run needs an approval by an approver who is not its operator (four eyes).

An approver's ``key`` is their public key: an OpenSSH line (``ssh-ed25519 AAAA… comment``), a PEM
block, or a path to a file holding either (relative to the project). Only ed25519 keys are accepted.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

LOGIN = r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$"


class Approver(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=LOGIN)
    key: str = Field(min_length=1, max_length=4096)


class Access(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    operators: list[str] = Field(default_factory=list)  # empty: anyone may run (not approve)
    approvers: list[Approver] = Field(default_factory=list)
