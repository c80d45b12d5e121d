"""Stored errors explained to an operator: a meaning and a next step, the raw text kept."""

import pytest
from django.utils import translation

from outbox_worker.explain import explain


@pytest.fixture(autouse=True)
def in_portuguese():
    with translation.override("pt-br"):
        yield


@pytest.mark.parametrize(
    ("error", "smtp_code", "meaning", "action"),
    [
        (
            "SMTPRecipientsRefused: {'carla@exemplo.com': (550, b'5.1.1 <carla@exemplo.com>: User unknown')}",
            550,
            "O endereço não existe",
            "Confira o endereço com o aluno",
        ),
        ("SMTPDataError: (554, b'5.7.1 Message rejected: SPF fail')", 554, "O provedor recusou", "domínio remetente"),
        ("SMTPDataError: (554, b'5.7.26 DMARC policy')", 554, "política sobre nós", "SPF, DKIM, DMARC"),
        ("SMTPRecipientsRefused: {'a@b.c': (450, b'4.7.1 Greylisted, try later')}", 450, "mais tarde", "sozinha"),
        ("SMTPRecipientsRefused: {'a@b.c': (452, b'4.2.2 Mailbox full')}", 452, "caixa", "sozinha"),
        ("SMTPDataError: (552, b'5.3.4 Message too big')", 552, "grande demais", "Diminua"),
        ("SMTPAuthenticationError: (535, b'5.7.8 Bad credentials')", 535, "credenciais", "Configuração do provedor"),
        ("SMTPSenderRefused: (553, b'5.7.1 Sender domain not verified', 'x@y.z')", 553, "remetente", "verificado"),
        ("SMTPAuthenticationError: (535, b'Authentication failed')", 535, "credenciais", "Configuração do provedor"),
        ("SSLCertVerificationError: certificate verify failed", None, "TLS", "Configuração do provedor"),
        ("ConnectionRefusedError: [Errno 111] Connection refused", None, "pausa e retoma sozinha", "Nada a fazer"),
        ("AnymailAPIError: API key is invalid. Sending status 401", None, "chave da API", "Configuração do provedor"),
        ("AnymailAPIError: Too many requests. status 429", None, "mais devagar", "sozinha"),
        ("AnymailRecipientsRefused: All message recipients were rejected", None, "recusa este endereço", "aluno"),
        ("abandoned: the send took longer than OUTBOX_SEND_DEADLINE (300 s)", None, "demorou demais", "sozinha"),
        ("interrupted 2 times (the worker died while sending it); not sent again", None, "morreu", "logs"),
        ("SMTPDataError: (554, b'Transaction failed')", 554, "em definitivo (código 554)", "detalhes técnicos"),
        ("RuntimeError: something odd", None, "Erro inesperado", "equipe de desenvolvimento"),
    ],
)
def test_every_stored_error_gets_a_meaning_and_a_next_step_in_portuguese(error, smtp_code, meaning, action):
    explained = explain(error, smtp_code=smtp_code)

    assert meaning in str(explained.meaning)
    assert action in str(explained.action)
    assert explained.raw == error


def test_an_exhausted_budget_says_only_an_operator_can_send_it_again():
    explained = explain("attempts exhausted (5/5): SMTPRecipientsRefused: {'a@b.c': (450, b'4.7.1 try later')}")

    assert explained.exhausted
    assert "mais tarde" in str(explained.meaning)
    assert "Reenviar" in str(explained.action)


def test_no_error_has_no_explanation():
    assert explain("") is None


def test_the_explanation_follows_the_active_language():
    with translation.override("en"):
        assert str(explain("SMTPDataError: (550, b'5.1.1 User unknown')").meaning) == "The address does not exist."
