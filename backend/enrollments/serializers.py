import unicodedata

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from backend.products.selectors import product_list_active

from .models import Enrollment
from .services import normalize_email

# The largest id PostgreSQL's bigint holds; larger numbers are "not found", not a crash.
MAX_ID = 2**63 - 1


def reject_control_characters(value: str) -> None:
    """Refuse line breaks, other control characters and lone surrogates.

    A CR/LF in a name could otherwise start a new header in an email (header
    injection), and a lone surrogate cannot be stored or encoded at all.
    """
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        raise DjangoValidationError("Não use quebras de linha nem caracteres de controle.")


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
        max_length=200, trim_whitespace=True, validators=[reject_control_characters], help_text="Nome do aluno."
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

    def validate_email(self, value: str) -> str:
        return normalize_email(value)


class EnrollmentOutputSerializer(serializers.ModelSerializer):
    email_status = serializers.CharField(
        read_only=True,
        allow_null=True,
        default=None,
        help_text="Situação do email de confirmação: pending, sending, sent, failed ou cancelled.",
    )

    class Meta:
        model = Enrollment
        fields = ["id", "product", "name", "email", "phone", "status", "created_at", "email_status"]
