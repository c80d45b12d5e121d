"""A JSON parser that answers every body it cannot take with a 400 in the client's language.

DRF's JSONParser hands the body to `json.load` and reports failures in
English ("JSON parse error - Expecting property name…"); a body nested a few
thousand levels deep raises RecursionError (a 500), and `json` accepts what
JSON does not: NaN/Infinity, duplicate keys (the last one silently wins),
lone surrogates that no database or email can store. Each of those is a
ParseError here, with a message in pt-BR or English (`Accept-Language`, set
by LocaleMiddleware).
"""

import json
import math
from collections.abc import Mapping
from typing import Any

from django.utils import translation
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

# Deeper than any body this API takes (an enrollment is one flat object), far
# below Python's recursion limit, so depth is refused before recursion can fail.
MAX_DEPTH = 32
# Digits in one JSON number: ids are at most 19 digits; longer ones are noise
# (and int() of a long digit string costs quadratic time before Python's 4,300 limit).
MAX_NUMBER_DIGITS = 50

MESSAGES: Mapping[str, Mapping[str, str]] = {
    "pt-br": {
        "syntax": "JSON inválido na linha {line}, coluna {column}: {problem}.",
        "encoding": "O corpo não é UTF-8 válido (byte {position}).",
        "bom": "O corpo começa com um BOM (U+FEFF); envie JSON em UTF-8 sem BOM.",
        "depth": f"JSON aninhado demais (máximo de {MAX_DEPTH} níveis).",
        "number": f"Número com dígitos demais ou grande demais (máximo de {MAX_NUMBER_DIGITS} dígitos).",
        "constant": "{constant} não é um valor JSON; use um número ou null.",
        "duplicate": 'A chave "{key}" aparece mais de uma vez no mesmo objeto.',
        "surrogate": "O texto contém um caractere inválido (surrogate isolado \\u{point:04x}).",
        "empty": "O corpo da requisição está vazio; envie um objeto JSON.",
        "charset": "JSON é sempre UTF-8: envie charset=utf-8 ou nenhum charset.",
    },
    "en": {
        "syntax": "Invalid JSON at line {line}, column {column}: {problem}.",
        "encoding": "The body is not valid UTF-8 (byte {position}).",
        "bom": "The body starts with a BOM (U+FEFF); send UTF-8 JSON without one.",
        "depth": f"JSON nested too deeply (at most {MAX_DEPTH} levels).",
        "number": f"A number with too many digits or too large (at most {MAX_NUMBER_DIGITS} digits).",
        "constant": "{constant} is not a JSON value; use a number or null.",
        "duplicate": 'The key "{key}" appears more than once in the same object.',
        "surrogate": "The text contains an invalid character (lone surrogate \\u{point:04x}).",
        "empty": "The request body is empty; send a JSON object.",
        "charset": "JSON is always UTF-8: send charset=utf-8 or no charset.",
    },
}

# json's own messages, which end up inside "syntax" errors.
PROBLEMS_PT_BR = {
    "Expecting value": "esperava um valor",
    "Expecting property name enclosed in double quotes": "esperava o nome de uma chave entre aspas duplas",
    "Expecting ':' delimiter": "esperava ':'",
    "Expecting ',' delimiter": "esperava ','",
    "Extra data": "há dados depois do fim do JSON",
    "Unterminated string starting at": "texto sem aspas de fechamento",
    "Invalid control character at": "caractere de controle sem escape dentro de um texto",
    "Invalid \\escape": "sequência de escape inválida",
    "Invalid \\uXXXX escape": "escape \\uXXXX inválido",
}


class JsonBodyError(ParseError):
    """A body the parser refuses; `code` says which rule it broke."""


def _refuse(code: str, **values: object) -> JsonBodyError:
    language = "en" if (translation.get_language() or "").startswith("en") else "pt-br"
    return JsonBodyError(MESSAGES[language][code].format(**values), code=code)


def _number(text: str) -> Any:
    if len(text) > MAX_NUMBER_DIGITS:
        raise _refuse("number")
    return int(text)


def _float(text: str) -> float:
    # 1e999 is valid JSON that Python reads as infinity: no more a number than "Infinity" is.
    value = float(text) if len(text) <= MAX_NUMBER_DIGITS else math.inf
    if not math.isfinite(value):
        raise _refuse("number")
    return value


def _constant(name: str) -> Any:
    raise _refuse("constant", constant=name)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _refuse("duplicate", key=key[:50])
        result[key] = value
    return result


def _check_depth_and_text(document: Any) -> None:
    # Iterative: the walk must not recurse on the depth it is checking.
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            items: list[Any] = [*value.keys(), *value.values()]
        elif isinstance(value, list):
            items = value
        else:
            if isinstance(value, str):
                _check_text(value)
            continue
        if depth > MAX_DEPTH:
            raise _refuse("depth")
        stack.extend((item, depth + 1) for item in items)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _refuse("surrogate", point=ord(text[exc.start])) from None


def _syntax_problem(message: str) -> str:
    if translation.get_language() and translation.get_language().startswith("en"):
        return message
    for english, portuguese in PROBLEMS_PT_BR.items():
        if message.startswith(english):
            return portuguese
    return message


def parse_json_body(raw: bytes) -> Any:
    """Return the JSON document in `raw`, or raise JsonBodyError saying what is wrong with it."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raise _refuse("bom")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _refuse("encoding", position=exc.start) from None
    if not text.strip():
        raise _refuse("empty")
    try:
        document = json.loads(
            text, parse_int=_number, parse_float=_float, parse_constant=_constant, object_pairs_hook=_object
        )
    except json.JSONDecodeError as exc:
        raise _refuse("syntax", line=exc.lineno, column=exc.colno, problem=_syntax_problem(exc.msg)) from None
    except RecursionError:
        # The decoder recursed past Python's limit before the depth check could run.
        raise _refuse("depth") from None
    except ValueError:  # int() past sys.get_int_max_str_digits(), should the limit above be raised
        raise _refuse("number") from None
    _check_depth_and_text(document)
    return document


class JSONParser(BaseParser):
    """DRF parser for `application/json` that never lets a body become a 500."""

    media_type = "application/json"

    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        charset = dict(part.strip().split("=", 1) for part in (media_type or "").split(";")[1:] if "=" in part).get(
            "charset", "utf-8"
        )
        if charset.lower().strip('"') not in ("utf-8", "utf8"):
            # RFC 8259: JSON exchanged between systems is UTF-8.
            raise _refuse("charset")
        # RequestSizeLimitMiddleware has already refused a body over the size limit.
        return parse_json_body(stream.read() if stream is not None else b"")
