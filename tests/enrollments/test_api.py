import threading

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from backend.enrollments.models import Enrollment
from outbox_worker.models import OutboxMessage, OutboxStatus
from tests.factories import make_product
from tests.staff import make_staff

pytestmark = pytest.mark.django_db

URL = "/api/enrollments/"


def enroll(client: APIClient | None = None, **body):
    return (client or APIClient()).post(URL, body, format="json")


def test_post_creates_the_enrollment_and_queues_its_confirmation():
    product = make_product()

    response = enroll(product=product.pk, name="Ana Souza", email="Ana@Example.com", phone="+55 11 91234-5678")

    assert response.status_code == 201
    body = response.json()
    assert body["product"] == product.pk
    assert body["email"] == "ana@example.com"
    assert body["status"] == "confirmed"
    assert body["email_status"] == OutboxStatus.PENDING
    assert set(body) >= {"id", "product", "name", "email", "status", "created_at"}
    assert Enrollment.objects.get().pk == body["id"]
    assert OutboxMessage.objects.get().to == ["ana@example.com"]


def _wait_until(predicate, timeout: float = 10.0) -> bool:
    waiter = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return True
        waiter.wait(0.01)
    return predicate()


def test_post_answers_201_without_touching_a_hung_smtp_server(silent_server, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = silent_server.port
    product = make_product()

    response = enroll(product=product.pk, name="Ana", email="ana@example.com")

    assert response.status_code == 201
    # Prove the server would have seen a connection: open one ourselves and
    # wait until it is accepted; ours must be the only one.
    import socket

    with socket.create_connection(("127.0.0.1", silent_server.port)):
        assert _wait_until(lambda: len(silent_server.connections) >= 1)
    assert len(silent_server.connections) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Ana", "email": "ana@example.com"}, "product"),
        ({"product": "__product__", "email": "ana@example.com"}, "name"),
        ({"product": "__product__", "name": "Ana"}, "email"),
        ({"product": "__product__", "name": "Ana", "email": "não é email"}, "email"),
        ({"product": "__product__", "name": "Ana", "email": "ana@example.com\r\nBcc: x@evil.example"}, "email"),
        ({"product": "__product__", "name": "Ana\r\nBcc: x@evil.example", "email": "a@example.com"}, "name"),
        ({"product": "__product__", "name": "A" * 201, "email": "a@example.com"}, "name"),
        ({"product": "__product__", "name": "   ", "email": "a@example.com"}, "name"),
        ({"product": "__product__", "name": "Ana", "email": "a" * 250 + "@x.com"}, "email"),
        ({"product": "__product__", "name": "Ana", "email": "a@example.com", "phone": "liga pra mim"}, "phone"),
        ({"product": "__inactive__", "name": "Ana", "email": "a@example.com"}, "product"),
        ({"product": 999999, "name": "Ana", "email": "a@example.com"}, "product"),
        ({"product": 2**70, "name": "Ana", "email": "a@example.com"}, "product"),
        ({"product": 1.5, "name": "Ana", "email": "a@example.com"}, "product"),
        ({"product": True, "name": "Ana", "email": "a@example.com"}, "product"),
        ({"product": "um", "name": "Ana", "email": "a@example.com"}, "product"),
        ({"product": "__product__", "name": ["Ana"], "email": "a@example.com"}, "name"),
        ({"product": "__product__", "name": "Ana\x00", "email": "a@example.com"}, "name"),
    ],
)
def test_invalid_input_answers_400_with_field_errors_and_writes_nothing(body, field):
    product = make_product()
    inactive = make_product(active=False)
    placeholders = {"__product__": product.pk, "__inactive__": inactive.pk}
    body = {k: placeholders.get(v, v) if isinstance(v, str) else v for k, v in body.items()}

    response = enroll(**body)

    assert response.status_code == 400
    assert field in response.json()
    assert not Enrollment.objects.exists()
    assert not OutboxMessage.objects.exists()


def test_a_lone_surrogate_in_a_name_is_400_not_a_crash():
    product = make_product()
    raw = b'{"product": %d, "name": "Ana\\ud800", "email": "a@example.com"}' % product.pk

    response = APIClient().post(URL, data=raw, content_type="application/json")

    # Refused by the parser, for any field: no database or email could take it.
    assert response.status_code == 400
    assert response.json() == {"detail": "O texto contém um caractere inválido (surrogate isolado \\ud800)."}
    assert not Enrollment.objects.exists()


def test_malformed_json_answers_400_in_json():
    response = APIClient().post(URL, data=b'{"product": ', content_type="application/json")

    assert response.status_code == 400
    assert "detail" in response.json()


def test_second_enrollment_for_the_same_product_and_email_is_409_and_sends_nothing_more():
    product = make_product()
    assert enroll(product=product.pk, name="Ana", email="ana@example.com").status_code == 201

    response = enroll(product=product.pk, name="Ana", email="  ANA@example.COM")

    assert response.status_code == 409
    assert response.json() == {"detail": "Este email já está matriculado neste produto."}
    assert Enrollment.objects.count() == 1
    assert OutboxMessage.objects.count() == 1


@pytest.mark.parametrize(
    ("language", "message"),
    [("pt-BR", "Este campo é obrigatório."), ("en", "This field is required.")],
)
def test_errors_follow_accept_language(language, message):
    response = APIClient().post(URL, {}, format="json", HTTP_ACCEPT_LANGUAGE=language)

    assert response.status_code == 400
    assert response.json()["name"] == [message]


# --- staff endpoints ----------------------------------------------------------


@pytest.fixture
def enrollment():
    product = make_product()
    response = enroll(product=product.pk, name="Ana", email="ana@example.com")
    return Enrollment.objects.get(pk=response.json()["id"])


@pytest.mark.parametrize("path", [URL, "/api/enrollments/{pk}/"])
def test_staff_endpoints_refuse_anonymous_clients_with_401(enrollment, path):
    response = APIClient().get(path.format(pk=enrollment.pk))

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert "detail" in response.json()


@pytest.mark.parametrize("path", [URL, "/api/enrollments/{pk}/"])
def test_staff_endpoints_refuse_non_staff_users_with_403(enrollment, path):
    client = APIClient()
    client.force_login(User.objects.create_user("aluno", password="x"))

    response = client.get(path.format(pk=enrollment.pk))

    assert response.status_code == 403


@pytest.mark.parametrize("path", [URL, "/api/enrollments/{pk}/"])
def test_staff_without_the_view_permission_get_403_as_in_the_admin(enrollment, path):
    # Staff may enter the admin; only enrollments.view_enrollment lets them see students there.
    client = APIClient()
    client.force_login(make_staff("suporte", "outbox_worker.view_outboxmessage"))

    response = client.get(path.format(pk=enrollment.pk))
    admin_page = client.get("/admin/enrollments/enrollment/")

    assert response.status_code == 403
    assert "detail" in response.json()
    assert admin_page.status_code == 403


@pytest.mark.parametrize("path", [URL, "/api/enrollments/{pk}/"])
def test_staff_without_the_view_permission_get_403_with_token_auth_too(enrollment, path):
    token = Token.objects.create(user=make_staff("suporte"))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")

    assert client.get(path.format(pk=enrollment.pk)).status_code == 403


@pytest.mark.parametrize("path", [URL, "/api/enrollments/{pk}/"])
def test_a_superuser_holds_every_permission_and_may_read(enrollment, path):
    client = APIClient()
    client.force_login(User.objects.create_superuser("dona", password="x"))

    assert client.get(path.format(pk=enrollment.pk)).status_code == 200


def test_an_inactive_staff_token_is_refused(enrollment):
    staff = make_staff("antiga", "enrollments.view_enrollment")
    token = Token.objects.create(user=staff)
    staff.is_active = False
    staff.save()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")

    assert client.get(URL).status_code == 401


def test_staff_list_and_detail_show_the_email_status_with_token_auth(enrollment):
    staff = make_staff("equipe", "enrollments.view_enrollment")
    token = Token.objects.create(user=staff)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    OutboxMessage.objects.update(status=OutboxStatus.SENT)

    listing = client.get(URL)
    detail = client.get(f"/api/enrollments/{enrollment.pk}/")

    assert listing.status_code == 200
    assert listing.json()["count"] == 1
    assert listing.json()["results"][0]["email_status"] == "sent"
    assert detail.status_code == 200
    assert detail.json()["email_status"] == "sent"


def test_staff_detail_of_an_unknown_enrollment_is_404_json():
    client = APIClient()
    client.force_login(make_staff("equipe", "enrollments.view_enrollment"))

    response = client.get("/api/enrollments/987654/")

    assert response.status_code == 404
    assert "detail" in response.json()


def test_an_invalid_token_is_401():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token nope")

    assert client.get(URL).status_code == 401


# --- text that could reach an email header ------------------------------------

HEADER_BREAKERS = {
    "VT": "\x0b",
    "FF": "\x0c",
    "SOH": "\x01",
    "FS": "\x1c",
    "RS": "\x1e",
    "NEL": "\x85",
    "DEL": "\x7f",
    "TAB": "\t",
    "LINE SEPARATOR": "\u2028",
    "PARAGRAPH SEPARATOR": "\u2029",
}


@pytest.mark.parametrize("char", HEADER_BREAKERS.values(), ids=HEADER_BREAKERS.keys())
@pytest.mark.parametrize(
    ("field", "template"),
    [
        ("email", '"a{c}b"@example.com'),
        ("email", '"x{c}x-evil\\\\ :pwned"@example.com'),
        ("email", "ana@exa{c}mple.com"),
        ("name", "Ana{c}Bcc: intruso@evil.example"),
    ],
)
def test_control_characters_and_separators_are_a_400_with_a_field_message(field, template, char):
    product = make_product()
    body = {"product": product.pk, "name": "Ana", "email": "ana@example.com", field: template.format(c=char)}

    response = enroll(**body)

    assert response.status_code == 400, response.content
    [message] = response.json()[field]
    assert message.startswith(("Não use", "Insira", "O domínio"))
    assert not Enrollment.objects.exists()
    assert not OutboxMessage.objects.exists()


@pytest.mark.parametrize("domain", ["exa\u202emple.com", "exa\u200emple.com", "exa\ufffdmple.com"])
def test_a_domain_without_an_idna_form_is_a_400_not_a_failure_at_send(domain):
    response = enroll(product=make_product().pk, name="Ana", email=f"ana@{domain}")

    assert response.status_code == 400
    assert response.json() == {"email": ["O domínio deste email não é válido (não tem forma IDNA)."]}


def test_a_unicode_domain_is_stored_in_the_ascii_form_it_is_sent_to():
    response = enroll(product=make_product().pk, name="João", email="Ana@Exámple.com")

    assert response.status_code == 201
    assert response.json()["email"] == "ana@xn--exmple-qta.com"
    assert OutboxMessage.objects.get().to == ["ana@xn--exmple-qta.com"]


@pytest.mark.parametrize("name", ["Ana \u202eLúcia", 'Zoë d\'Ávila & <Co> "2026"'])
def test_names_with_format_characters_and_punctuation_are_kept_as_typed(name):
    response = enroll(product=make_product().pk, name=name, email="ana@example.com")

    assert response.status_code == 201
    assert Enrollment.objects.get().name == name


def test_a_product_named_with_a_control_character_is_a_400_not_a_500():
    # Typed in the admin or a shell: the name would break every confirmation's subject.
    product = make_product(name="Curso\x01 de Python")

    response = enroll(product=product.pk, name="Ana", email="ana@example.com")

    assert response.status_code == 400
    assert response.json() == {
        "product": ["Este produto está com o cadastro incompleto e não aceita matrículas agora; avise a equipe."]
    }
    assert not Enrollment.objects.exists()


def test_a_product_name_with_tabs_or_line_breaks_still_enrolls_as_one_line():
    product = make_product(name="Curso\tde\u2028Python\x0b2026")

    response = enroll(product=product.pk, name="Ana", email="ana@example.com")

    assert response.status_code == 201
    assert OutboxMessage.objects.get().subject == "Matrícula confirmada: Curso de Python 2026"


def test_an_email_whose_ascii_domain_outgrows_254_characters_is_a_400():
    # 195 characters as typed, 285 once the domain is in its IDNA form: the column holds 254.
    domain = ".".join(["ãçéíõúâêô" * 2] * 10) + ".com"

    response = enroll(product=make_product().pk, name="Ana", email=f"a@{domain}")

    assert response.status_code == 400
    assert response.json() == {"email": ["Email longo demais depois de convertido o domínio para ASCII (máximo 254)."]}
