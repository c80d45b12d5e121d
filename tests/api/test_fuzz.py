"""Fuzz the API against its own OpenAPI schema: nothing a client sends may cause a 5xx.

schemathesis generates requests from /api/schema/ (valid ones and deliberately
invalid ones: wrong types, missing fields, unicode, odd headers) and calls the
WSGI application in-process. Hand-written hypothesis strategies add what a
schema cannot describe: bodies that are not JSON at all, huge strings, and
methods the API does not offer, control characters and separators in every
field (quoted local parts and domains included: an accepted enrollment must
store none and its email must build and verify), and pathological JSON
(depth, huge numbers, NaN, duplicate keys, BOM, invalid UTF-8, lone
surrogates: a 400 in the client's language). Every response must be below 500 and every
4xx must carry a JSON body; schemathesis also checks that each status code,
content type, header and body is the one the schema documents.
"""

import json
from collections import Counter

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from backend.enrollments.models import Enrollment
from outbox_worker.mime import build_email, header_text_problem
from outbox_worker.models import OutboxMessage
from tests.factories import make_product
from tests.staff import make_staff

pytestmark = pytest.mark.django_db

# Per operation, mode (valid/invalid) and identity (anonymous/staff): about 960
# requests from the schema, plus about 940 hand-written ones, for at least 1,000 a run.
EXAMPLES = 60
RAW_EXAMPLES = 150
MINIMUM_REQUESTS = 1000

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

FUZZ_SETTINGS = settings(
    deadline=None,
    database=None,
    derandomize=False,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture
def wsgi_app():
    # Django's test client does the same: closing "old" connections at the end
    # of each request would close the connection holding the test's transaction.
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    try:
        yield get_wsgi_application()
    finally:
        for signal in (request_started, request_finished):
            signal.connect(close_old_connections)


@pytest.fixture
def staff_token() -> str:
    return Token.objects.create(user=make_staff("equipe", "enrollments.view_enrollment")).key


STATUSES: Counter[int] = Counter()


def assert_sane(status: int, content_type: str, body: bytes, what: str) -> None:
    STATUSES[status] += 1
    assert status < 500, f"{what} → {status}: {body[:500]!r}"
    if status >= 400:
        assert content_type.startswith("application/json"), f"{what} → {status} {content_type}: {body[:200]!r}"
        json.loads(body)


def test_fuzz_the_api_from_its_schema(wsgi_app, staff_token):
    for _ in range(3):
        make_product()
    schema = schemathesis.openapi.from_wsgi("/api/schema/", wsgi_app)
    sent: Counter[str] = Counter()

    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} == {
        "GET /api/products/",
        "POST /api/enrollments/",
        "GET /api/enrollments/",
        "GET /api/enrollments/{id}/",
        "GET /healthz",
    }
    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            for headers in ({}, {"Authorization": f"Token {staff_token}"}):
                sent[f"{operation.label} {mode.value}"] += _fuzz_operation(operation, mode, headers)

    raw = _fuzz_raw_requests()
    total = sum(sent.values()) + raw
    print(f"fuzz: {total} requests ({dict(sent)}, raw={raw}); statuses {dict(sorted(STATUSES.items()))}")
    assert total >= MINIMUM_REQUESTS
    # The fuzzer reached the success paths too, not only the error ones.
    assert STATUSES[200] and STATUSES[201]


def _fuzz_operation(operation, mode: schemathesis.GenerationMode, headers: dict[str, str]) -> int:
    count = 0

    @settings(FUZZ_SETTINGS, max_examples=EXAMPLES)
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        nonlocal count
        count += 1
        response = case.call(headers=headers)
        assert_sane(
            response.status_code,
            response.headers.get("content-type", [""])[0],
            response.content,
            f"{case.method} {case.formatted_path} {case.headers!r} {case.body!r}",
        )
        case.validate_response(response, checks=CHECKS)

    try:
        run()
    except Unsatisfiable:
        # An operation with no inputs (GET /healthz) has nothing to make invalid.
        assert mode is schemathesis.GenerationMode.NEGATIVE and count == 0, operation.label
    return count


JSON_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "",
        "application/json; charset=latin-1",
    ]
)
# Any text JSON can carry, including what st.text() leaves out: lone
# surrogates ("\ud800" is valid JSON but not encodable) and control characters.
JSON_TEXT = st.text() | st.text(st.characters(categories=["Cs", "Cc", "Zl", "Zp", "Cf"]), min_size=1)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | JSON_TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)


def _fuzz_raw_requests() -> int:
    """Requests no schema describes: garbage bodies, huge and exotic strings, wrong methods."""
    client = Client()
    count = 0

    @settings(FUZZ_SETTINGS, max_examples=RAW_EXAMPLES)
    @given(body=st.binary(max_size=2000), content_type=JSON_TYPES)
    def garbage(body, content_type):
        nonlocal count
        count += 1
        r = client.generic("POST", "/api/enrollments/", data=body, content_type=content_type)
        assert_sane(r.status_code, r.get("Content-Type", ""), r.content, f"POST garbage {body[:50]!r}")

    @settings(FUZZ_SETTINGS, max_examples=RAW_EXAMPLES)
    @given(body=st.dictionaries(st.sampled_from(["product", "name", "email", "phone", "x"]), JSON_VALUES))
    def wrong_types(body):
        nonlocal count
        count += 1
        r = client.post("/api/enrollments/", data=json.dumps(body), content_type="application/json")
        assert_sane(r.status_code, r.get("Content-Type", ""), r.content, f"POST {body!r}"[:200])

    product = make_product()

    @settings(FUZZ_SETTINGS, max_examples=RAW_EXAMPLES)
    @given(
        field=st.sampled_from(["product", "name", "email", "phone"]),
        value=JSON_VALUES | st.emails() | st.integers(min_value=-(2**80), max_value=2**80),
        email=st.emails(),
    )
    def one_bad_field(field, value, email):
        # A valid body with one field replaced: the bad value reaches the
        # database and the renderer whenever validation lets it through.
        nonlocal count
        count += 1
        body = {"product": product.pk, "name": "Ana", "email": email, field: value}
        r = client.post("/api/enrollments/", data=json.dumps(body), content_type="application/json")
        assert_sane(r.status_code, r.get("Content-Type", ""), r.content, f"POST {body!r}"[:300])

    @settings(FUZZ_SETTINGS, max_examples=40)
    @given(
        size=st.integers(min_value=1_000, max_value=200_000),
        char=st.characters(codec="utf-8"),
        field=st.sampled_from(["name", "email", "phone"]),
    )
    def huge(size, char, field):
        nonlocal count
        count += 1
        body = {"product": 1, "name": "Ana", "email": "a@example.com", field: char * size}
        r = client.post("/api/enrollments/", data=json.dumps(body), content_type="application/json")
        assert_sane(r.status_code, r.get("Content-Type", ""), r.content, f"POST huge {field}")
        if field == "phone" and not (char * size).strip():
            # An all-blank phone is trimmed to "no phone": accepted (or 409 for a repeat).
            assert r.status_code in (201, 409, 413)
        else:
            assert r.status_code in (400, 413)

    @settings(FUZZ_SETTINGS, max_examples=RAW_EXAMPLES)
    @given(
        method=st.sampled_from(["PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "POST", "GET", "HEAD"]),
        path=st.sampled_from(
            [
                "/api/products/",
                "/api/enrollments/",
                "/api/enrollments/1/",
                "/healthz",
                "/api/enrollments/99999999999999999999999/",
                "/api/",
                "/api/nada",
            ]
        ),
        # What a WSGI server hands Django: raw bytes of the query string, as latin-1.
        query=st.binary(max_size=30).map(lambda raw: raw.decode("latin-1")),
    )
    def methods(method, path, query):
        nonlocal count
        count += 1
        r = client.generic(method, path, data=b"{}", content_type="application/json", QUERY_STRING=query)
        # A response to HEAD has no body by definition; its headers still say JSON.
        body = b"{}" if method == "HEAD" else r.content
        assert_sane(r.status_code, r.get("Content-Type", ""), body, f"{method} {path}?{query!r}")

    @settings(FUZZ_SETTINGS, max_examples=RAW_EXAMPLES)
    @given(field=st.sampled_from(["name", "email", "phone"]), value=HOSTILE_TEXT, email=st.emails())
    def header_breakers(field, value, email):
        # Control characters and separators in every field, in every position
        # an address allows (quoted local part, domain): refused, or stored
        # without a single character the header rule forbids.
        nonlocal count
        count += 1
        body = {"product": product.pk, "name": "Ana", "email": email, field: value}
        r = client.post("/api/enrollments/", data=json.dumps(body), content_type="application/json")
        assert_sane(r.status_code, r.get("Content-Type", ""), r.content, f"POST {body!r}"[:300])
        if r.status_code == 201:
            assert_buildable(r.json()["id"])

    @settings(FUZZ_SETTINGS, max_examples=RAW_EXAMPLES)
    @given(body=PATHOLOGICAL_JSON, language=st.sampled_from(["pt-BR", "en"]))
    def pathological(body, language):
        nonlocal count
        count += 1
        r = client.generic(
            "POST", "/api/enrollments/", data=body, content_type="application/json", HTTP_ACCEPT_LANGUAGE=language
        )
        assert_sane(r.status_code, r.get("Content-Type", ""), r.content, f"POST pathological {body[:80]!r}")
        assert r.status_code in (400, 413), (r.status_code, body[:80])
        if r.status_code == 400:
            assert _is_portuguese(r.json()["detail"]) == (language == "pt-BR"), r.content

    for run in (garbage, wrong_types, one_bad_field, huge, methods, header_breakers, pathological):
        run()
    return count


# --- hostile text and pathological JSON ------------------------------------------

# Everything the header rule refuses (and what str.splitlines() splits on).
BREAKERS = st.sampled_from([chr(c) for c in [*range(0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]])
PIECE = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8)


HOSTILE_TEXT = st.one_of(
    st.builds(lambda a, c, b: f"{a}{c}{b}", PIECE, BREAKERS, PIECE),
    st.builds(lambda a, c: f'"{a}{c}x"@example.com', st.text("abc.-", max_size=5), BREAKERS),
    st.builds(lambda c: f'"x{c}x-evil\\ :pwned"@example.com', BREAKERS),
    st.builds(lambda a, c: f"ana@{a}{c}.com", st.text("abcáé", min_size=1, max_size=5), BREAKERS),
    st.builds(lambda c: f"ana@exa{c}mple.com", st.sampled_from(["\u202e", "\u200e", "\ufffd", "\u00ad", "ß"])),
)


def _nested(depth: int, kind: str) -> bytes:
    opening, closing = {"list": (b"[", b"]"), "object": (b'{"a":', b"}")}[kind]
    return opening * depth + b"1" + closing * depth


PATHOLOGICAL_JSON = st.one_of(
    st.builds(_nested, st.integers(min_value=33, max_value=9000), st.sampled_from(["list", "object"])),
    st.integers(min_value=51, max_value=6000).map(lambda n: b'{"product": ' + b"7" * n + b"}"),
    st.integers(min_value=309, max_value=99999).map(lambda e: f'{{"product": -1e{e}}}'.encode()),
    st.sampled_from([b"NaN", b"Infinity", b"-Infinity"]).map(lambda c: b'{"product": ' + c + b"}"),
    st.sampled_from(["product", "name", "email", "x"]).map(lambda k: f'{{"{k}": 1, "{k}": 2}}'.encode()),
    st.just(b'\xef\xbb\xbf{"product": 1}'),
    st.binary(min_size=1, max_size=3).filter(lambda b: not _is_utf8(b)).map(lambda b: b'{"name": "' + b + b'"}'),
    st.integers(min_value=0xD800, max_value=0xDFFF).map(lambda c: f'{{"name": "Ana\\u{c:04x}"}}'.encode()),
    st.text(max_size=20).map(lambda t: ("{" + json.dumps(t)[1:-1]).encode()),
)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


PT_BR_MARKERS = (
    "JSON inválido",
    "aninhado",
    "dígitos",
    "não é",
    "A chave",
    "O corpo",
    "O texto",
    "vazio",
    "sempre UTF-8",
)


def _is_portuguese(detail: str) -> bool:
    return any(marker in detail for marker in PT_BR_MARKERS)


def assert_buildable(enrollment_id: int) -> None:
    """The enrollment's stored text obeys the header rule and its email builds and verifies."""
    enrollment = Enrollment.objects.get(pk=enrollment_id)
    for text in (enrollment.name, enrollment.email):
        assert header_text_problem(text) is None, repr(text)
    build_email(OutboxMessage.objects.get(source=enrollment.outbox_source))
