"""The shapes of API error responses, for the OpenAPI schema.

Every error body is JSON: either `{"detail": "..."}` or, for invalid input,
`{"<field>": ["..."]}` (DRF's field errors). Views reference these so the
schema at /api/schema/ says what a client must handle.
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, inline_serializer
from rest_framework import serializers


class ErrorDetailSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="Mensagem legível (em pt-BR por padrão; segue o Accept-Language).")


def detail_response(description: str, example: str) -> OpenApiResponse:
    return OpenApiResponse(
        response=ErrorDetailSerializer,
        description=description,
        examples=[OpenApiExample("exemplo", value={"detail": example}, response_only=True)],
    )


def field_errors_response(name: str, fields: list[str], example: dict[str, list[str]]) -> OpenApiResponse:
    """A 400: DRF's field errors (or a `detail` when the body is not parseable at all)."""
    return OpenApiResponse(
        response=inline_serializer(
            name=name,
            fields={
                **{field: serializers.ListField(child=serializers.CharField(), required=False) for field in fields},
                "non_field_errors": serializers.ListField(child=serializers.CharField(), required=False),
                "detail": serializers.CharField(required=False, help_text="Corpo ilegível (JSON malformado)."),
            },
        ),
        description="Dados inválidos: um erro por campo, ou `detail` se o corpo nem pôde ser lido.",
        examples=[OpenApiExample("campo_invalido", value=example, response_only=True)],
    )


RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    OpenApiTypes.INT,
    OpenApiParameter.HEADER,
    description="Segundos até o cliente poder tentar de novo.",
    response=[429],
)
THROTTLED = detail_response(
    "Requisições demais deste cliente; Retry-After diz em quantos segundos tentar de novo.",
    "Pedido foi suprimido. Espera-se que esteja diponível em 42 segundos.",
)

UNAUTHENTICATED = detail_response(
    "Sem credenciais (use Token ou sessão de staff).", "As credenciais não foram fornecidas."
)
FORBIDDEN = detail_response(
    "Usuário sem staff ou sem a permissão de ver matrículas (enrollments.view_enrollment).",
    "Você não tem permissão para executar essa ação.",
)
NOT_FOUND = detail_response("Não encontrado.", "Não encontrado.")
NOT_ACCEPTABLE = detail_response(
    "Accept pede um formato que a API não produz.", "Não foi possível satisfazer a requisição."
)
TOO_LARGE = detail_response("Corpo acima de DATA_UPLOAD_MAX_MEMORY_SIZE.", "Corpo da requisição grande demais.")
UNSUPPORTED_MEDIA = detail_response(
    "Content-Type não suportado (use application/json).", 'Tipo de mídia "text/xml" não suportado.'
)
