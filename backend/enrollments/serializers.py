import logging
import unicodedata

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from backend.products.models import Product
from backend.products.selectors import product_list_active
from outbox_worker.logevents import log_event
from outbox_worker.mime import (
    CONTROL_CHARACTER,
    DOMAIN_NOT_IDNA,
    LINE_SEPARATOR,
    HeaderTextError,
    header_text_problem,
    normalize_address,
)

from .models import Enrollment
from .services import normalize_email

# The largest id PostgreSQL's bigint holds; larger numbers are "not found", not a crash.
MAX_ID = 2**63 - 1


HEADER_TEXT_MESSAGES = {
    CONTROL_CHARACTER: "Não use quebras de linha, tabulações nem outros caracteres de controle.",
    LINE_SEPARATOR: "Não use separadores de linha ou de parágrafo (U+2028, U+2029).",
}
SURROGATE_MESSAGE = "O texto contém um caractere inválido (surrogate isolado)."
DOMAIN_MESSAGE = "O domínio deste email não é válido (não tem forma IDNA)."
# RFC 5321's limit for a path, and the model's column: checked after IDNA encoding.
MAX_EMAIL_LENGTH = 254
LONG_DOMAIN_MESSAGE = f"Email longo demais depois de convertido o domínio para ASCII (máximo {MAX_EMAIL_LENGTH})."
PRODUCT_NAME_MESSAGE = "Este produto está com o cadastro incompleto e não aceita matrículas agora; avise a equipe."

logger = logging.getLogger("backend.enrollments")


def reject_header_breaking_text(value: str) -> None:
    """Refuse what the outbox refuses in any header, and lone surrogates.

    The rule is the outbox's own (outbox_worker.mime): a control character or a
    line separator could end an email's header block or start a new header; a
    lone surrogate cannot be stored or encoded at all.
    """
    problem = header_text_problem(value)
    if problem is not None:
        raise DjangoValidationError(HEADER_TEXT_MESSAGES[problem])
    if any(unicodedata.category(char) == "Cs" for char in value):
        raise DjangoValidationError(SURROGATE_MESSAGE)


class EnrollmentInputSerializer(serializers.Serializer):
    product = serializers.PrimaryKeyRelatedField(
        queryset=product_list_active(),
        # Only whole numbers are ids: DRF would otherwise read 1.5 as product 1.
        pk_field=serializers.IntegerField(min_value=1, max_value=MAX_ID),
        help_text="Id de um produto ativo (GET /api/products/).",
        error_messages={
            "does_not_exist": "Produto inexistente ou indisponível (id {pk_value}).",
            "incorrect_type": "Informe o id numérico do produto.",
        },
    )
    name = serializers.CharField(
        max_length=200, trim_whitespace=True, validators=[reject_header_breaking_text], help_text="Nome do aluno."
    )
    email = serializers.EmailField(
        max_length=254, help_text="Email do aluno; maiúsculas e espaços nas pontas são ignorados."
    )
    phone = serializers.RegexField(
        r"^\+?[0-9 ()\-]{8,20}$",
        max_length=32,
        required=False,
        allow_blank=True,
        default="",
        help_text="Telefone opcional: dígitos, espaços, parênteses, + e -.",
        error_messages={"invalid": "Telefone inválido: use só dígitos, espaços, parênteses, + e -."},
    )

    def validate_product(self, value: Product) -> Product:
        # The product's name goes into the confirmation's subject. One typed with
        # a control character (admin, shell, import) would make the outbox refuse
        # every confirmation: say so here, as a 400, instead of failing with a 500.
        # (Whitespace of any kind is folded to single spaces on the way, as the service does.)
        if header_text_problem(" ".join(value.name.split())) is not None:
            log_event(logger, logging.ERROR, "enrollments.product_name_unusable", product=value.pk)
            raise serializers.ValidationError(PRODUCT_NAME_MESSAGE)
        return value

    def validate_email(self, value: str) -> str:
        """Return the address as it will be stored and sent: lower case, its domain in ASCII (IDNA)."""
        reject_header_breaking_text(value)
        try:
            address = normalize_address(normalize_email(value))
        except HeaderTextError as exc:
            if exc.reason == DOMAIN_NOT_IDNA:
                raise serializers.ValidationError(DOMAIN_MESSAGE) from None
            raise serializers.ValidationError("Insira um endereço de email válido.") from None
        if len(address) > MAX_EMAIL_LENGTH:
            # The ASCII form of a Unicode domain is longer than what was typed.
            raise serializers.ValidationError(LONG_DOMAIN_MESSAGE)
        return address


class EnrollmentOutputSerializer(serializers.ModelSerializer):
    email_status = serializers.CharField(
        read_only=True,
        allow_null=True,
        default=None,
        help_text=(
            "Situação do email de confirmação na outbox: pending, sending, sent (aceito pelo provedor), failed, "
            "cancelled ou suppressed (não enviado: o endereço está na lista de supressão por devolução ou spam; "
            "decidido quando o worker pega o email, até lá pending)."
        ),
    )
    email_delivery_status = serializers.CharField(
        read_only=True,
        allow_null=True,
        default=None,
        help_text=(
            "O que o provedor informou depois de aceitar: delivered, deferred, soft_bounced, bounced, rejected "
            "ou complained (marcado como spam); vazio enquanto não informou nada."
        ),
    )

    class Meta:
        model = Enrollment
        fields = [
            "id", "product", "name", "email", "phone", "status", "created_at",
            "email_status", "email_delivery_status",
        ]  # fmt: skip
