"""Test helpers: the fake Management API behind a client that validates every response against PayNow's spec."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache

import httpx
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from starlette.testclient import TestClient

from ops.admin.paynow_api import ManagementApi, RetryPolicy
from ops.local.fake_paynow import FakePayNow, create_app, spec

URI = "urn:paynow:management-api"


@cache
def _registry() -> Registry:
    return Registry().with_resource(URI, Resource.from_contents(spec(), default_specification=DRAFT202012))


def _templates() -> list[tuple[re.Pattern[str], str]]:
    out = []
    for path in spec()["paths"]:
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$"
        out.append((re.compile(pattern), path))
    return out


_TEMPLATES = _templates()


def response_validator(method: str, path: str, status: int) -> Draft202012Validator | None:
    """The spec's schema of this operation's answer (its status, else `default`); None for a body-less answer."""
    candidates = [t for pattern, t in _TEMPLATES if pattern.match(path) and method.lower() in spec()["paths"][t]]
    template = min(candidates, key=lambda t: t.count("{"))  # a literal segment (webhooks/resend) beats a parameter
    responses = spec()["paths"][template][method.lower()]["responses"]
    key = str(status) if str(status) in responses else "default"
    content = responses[key].get("content")
    if content is None:
        return None
    return _validator(template, method.lower(), key)


@cache
def _validator(template: str, method: str, key: str) -> Draft202012Validator:
    pointer = "/".join(part.replace("~", "~0").replace("/", "~1")
                       for part in ("paths", template, method, "responses", key, "content",
                                    "application/json", "schema"))
    return Draft202012Validator({"$ref": f"{URI}#/{pointer}"}, registry=_registry())


@dataclass
class Checked:
    """Every response the fake gave, validated (a response outside the spec fails the test that caused it)."""

    responses: list[tuple[str, str, int]] = field(default_factory=list)

    def hook(self, response: httpx.Response) -> None:
        response.read()
        request = response.request
        validator = response_validator(request.method, request.url.path, response.status_code)
        if validator is None:
            assert not response.content, f"{request.url.path} {response.status_code} has a body the spec lacks"
        else:
            validator.validate(response.json())
        self.responses.append((request.method, request.url.path, response.status_code))


def client(fake: FakePayNow, checked: Checked) -> TestClient:
    http = TestClient(create_app(fake), base_url="http://paynow.test")
    http.event_hooks = {"request": [], "response": [checked.hook]}
    return http


def api(fake: FakePayNow, checked: Checked, *, key: str | None = None, attempts: int = 6,
        sleeps: list[float] | None = None) -> ManagementApi:
    waits = sleeps if sleeps is not None else []
    return ManagementApi(fake.api_key if key is None else key, client=client(fake, checked),
                         policy=RetryPolicy(attempts=attempts, base_delay=0.5, max_delay=30.0),
                         sleep=waits.append)


def store_path(fake: FakePayNow, tail: str) -> str:
    return f"/v1/stores/{fake.store_id}/{tail}"
