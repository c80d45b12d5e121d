"""Every body the JSON parser cannot take is a 400 JSON error in the client's language, never a 500."""

import pytest
from django.test import Client

from backend.enrollments.models import Enrollment

pytestmark = pytest.mark.django_db

URL = "/api/enrollments/"
VALID = b'{"product": 1, "name": "Ana", "email": "ana@example.com"}'

# (case, body, pt-BR detail must contain, English detail must contain)
CASES = [
    ("nested 5,000 levels", b"[" * 5000 + b"]" * 5000, "aninhado demais", "nested too deeply"),
    ("objects nested 10,000 levels", b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "aninhado demais", "nested too deeply"),
    ("nested 33 levels", b'{"name": ' + b"[" * 33 + b"]" * 33 + b"}", "aninhado demais", "nested too deeply"),
    ("integer of 5,000 digits", b'{"product": ' + b"9" * 5000 + b"}", "dígitos demais", "too many digits"),
    ("integer of 51 digits", b'{"product": ' + b"1" * 51 + b"}", "dígitos demais", "too many digits"),
    ("float of 5,000 digits", b'{"product": 1.' + b"5" * 5000 + b"}", "dígitos demais", "too many digits"),
    ("float that overflows to infinity", b'{"product": 1e999}', "grande demais", "too large"),
    ("NaN", b'{"product": NaN}', "NaN não é um valor JSON", "NaN is not a JSON value"),
    ("Infinity", b'{"product": Infinity}', "Infinity não é", "Infinity is not"),
    ("-Infinity", b'{"product": -Infinity}', "-Infinity não é", "-Infinity is not"),
    ("duplicate keys", b'{"product": 1, "name": "Ana", "name": "Bia"}', 'chave "name"', 'key "name"'),
    ("duplicate keys, nested", b'{"x": {"a": 1, "a": 2}}', 'chave "a"', 'key "a"'),
    ("UTF-8 BOM", b"\xef\xbb\xbf" + VALID, "BOM", "BOM"),
    ("invalid UTF-8", b'{"name": "Ana \xff"}', "não é UTF-8 válido", "not valid UTF-8"),
    ("overlong UTF-8", b'{"name": "\xc0\xaf"}', "não é UTF-8 válido", "not valid UTF-8"),
    ("UTF-8-encoded surrogate", b'{"name": "\xed\xa0\x80"}', "não é UTF-8 válido", "not valid UTF-8"),
    ("lone surrogate escape in a value", b'{"name": "Ana\\udc00"}', "surrogate isolado", "lone surrogate"),
    ("lone surrogate escape in a key", b'{"\\ud800": 1}', "surrogate isolado", "lone surrogate"),
    ("lone surrogate in a list", b'{"x": ["ok", "\\ud83d"]}', "surrogate isolado", "lone surrogate"),
    ("unterminated object", b'{"product": ', "esperava um valor", "Expecting value"),
    ("single quotes", b"{'product': 1}", "nome de uma chave", "property name"),
    ("trailing garbage", VALID + b" x", "dados depois do fim", "Extra data"),
    ("raw control character in a string", b'{"name": "A\x01na"}', "caractere de controle", "control character"),
    ("whitespace only", b" \n\t ", "vazio", "empty"),
]


@pytest.mark.parametrize(("body", "pt_br", "english"), [case[1:] for case in CASES], ids=[c[0] for c in CASES])
@pytest.mark.parametrize("language", ["pt-BR", "en"])
def test_a_body_the_parser_cannot_take_is_a_400_in_the_clients_language(body, pt_br, english, language):
    response = Client().post(URL, data=body, content_type="application/json", HTTP_ACCEPT_LANGUAGE=language)

    assert response.status_code == 400, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    assert (pt_br if language == "pt-BR" else english) in response.json()["detail"]
    assert not Enrollment.objects.exists()


def test_a_charset_other_than_utf8_is_refused_in_portuguese():
    response = Client().post(URL, data=VALID, content_type="application/json; charset=latin-1")

    assert response.status_code == 400
    assert response.json() == {"detail": "JSON é sempre UTF-8: envie charset=utf-8 ou nenhum charset."}


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
def test_form_bodies_are_415_the_api_speaks_json_only(content_type):
    response = Client().post(URL, data=b"product=1&name=Ana", content_type=content_type)

    assert response.status_code == 415
    assert "detail" in response.json()


@pytest.mark.parametrize("body", [b"[]", b'"Ana"', b"1", b"null", b"true"])
def test_json_that_is_not_an_object_is_a_400(body):
    response = Client().post(URL, data=body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()


def test_a_body_32_levels_deep_is_still_read():
    # The limit is a depth no honest client reaches, not a ban on nesting.
    body = b'{"product": 1, "name": "Ana", "email": "ana@example.com", "x": ' + b"[" * 31 + b"]" * 31 + b"}"

    response = Client().post(URL, data=body, content_type="application/json")

    assert response.status_code == 400
    assert "product" in response.json()  # product 1 does not exist: the body was parsed and validated
