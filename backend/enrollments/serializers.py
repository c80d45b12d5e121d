from rest_framework import serializers

from backend.products.selectors import product_list_active

from .models import Enrollment


class EnrollmentInputSerializer(serializers.Serializer):
    product = serializers.PrimaryKeyRelatedField(
        queryset=product_list_active(),
        error_messages={
            "does_not_exist": "Produto inexistente ou indisponível (id {pk_value}).",
            "incorrect_type": "Informe o id numérico do produto.",
        },
    )
    name = serializers.CharField(max_length=200, trim_whitespace=True)
    email = serializers.EmailField(max_length=254)
    phone = serializers.RegexField(
        r"^\+?[0-9 ()\-]{8,20}$",
        max_length=32,
        required=False,
        allow_blank=True,
        default="",
        error_messages={"invalid": "Telefone inválido: use só dígitos, espaços, parênteses, + e -."},
    )


class EnrollmentOutputSerializer(serializers.ModelSerializer):
    email_status = serializers.CharField(read_only=True, allow_null=True, default=None)

    class Meta:
        model = Enrollment
        fields = ["id", "product", "name", "email", "phone", "status", "created_at", "email_status"]
