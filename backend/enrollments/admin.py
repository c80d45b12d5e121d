"""Enrollment admin: each enrollment with its emails, and a safe way to send the confirmation again."""

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from rest_framework import serializers

from outbox_worker import admin_actions
from outbox_worker.admin_actions import ConfirmationRow
from outbox_worker.admin_display import error_explanation, status_badge
from outbox_worker.admin_text import local_datetime
from outbox_worker.admin_tracking import delivery_badge
from outbox_worker.models import OutboxStatus
from outbox_worker.selectors import outbox_messages_for_source
from outbox_worker.suppression import suppressions_for

from .models import Enrollment
from .selectors import enrollment_list
from .serializers import EnrollmentInputSerializer
from .services import (
    EnrollmentAlreadyExists,
    enrollment_correct_email_and_resend,
    enrollment_resend_confirmation,
    normalize_email,
)


class FixEmailForm(forms.Form):
    email = forms.EmailField(label="email correto", max_length=254)

    def clean_email(self) -> str:
        # The API's own rules (header-safe text, IDNA domain, length), so the new
        # confirmation can always be built and the address is stored as the API stores it.
        try:
            return EnrollmentInputSerializer().validate_email(self.cleaned_data["email"])
        except serializers.ValidationError as exc:
            raise forms.ValidationError(list(exc.detail)) from None


def enrollment_fix_email_url(source: str) -> str | None:
    """The admin page to correct the address and resend, for an outbox `source` naming an enrollment (else None).

    For the host's source registry: the outbox links a bounced message here without knowing enrollments.
    """
    prefix = f"{Enrollment._meta.label_lower}:"
    if not source.startswith(prefix) or not source[len(prefix) :].isdigit():
        return None
    return reverse("admin:enrollments_enrollment_fix_email", args=[int(source[len(prefix) :])])


class EnrollmentForm(forms.ModelForm):
    class Meta:
        model = Enrollment
        fields = ["name", "email", "phone", "status"]

    def clean_email(self) -> str:
        # The same normalisation as the API, so a corrected address still counts as one enrollment.
        return normalize_email(self.cleaned_data["email"])


@admin.register(Enrollment)
class EnrollmentAdmin(admin.ModelAdmin):
    form = EnrollmentForm
    list_display = ["name", "email", "product", "status", "confirmation_status", "created_at"]
    list_filter = ["status", "product"]
    search_fields = ["name", "email"]
    list_select_related = ["product"]
    actions = ["resend_confirmation"]
    fields = ["product", "name", "email", "phone", "status", "created_at", "emails"]
    readonly_fields = ["product", "created_at", "emails"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Enrollment]:
        # Annotated with the latest confirmation's status: one query for the whole page.
        return enrollment_list()

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Enrollments are created by the API, which also queues the confirmation.
        return False

    def has_resend_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("outbox_worker.resend_outboxmessage")

    def has_fix_email_permission(self, request: HttpRequest, enrollment: Enrollment | None = None) -> bool:
        # Changes the enrollment and sends an email: both permissions.
        return self.has_resend_permission(request) and self.has_change_permission(request, enrollment)

    def get_urls(self) -> list:
        view = self.admin_site.admin_view(self.fix_email_view)
        return [
            path("<int:object_id>/corrigir-email/", view, name="enrollments_enrollment_fix_email"),
            *super().get_urls(),
        ]

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        if "delete_selected" in actions:
            # Django's label agrees in the masculine ("Remover matrículas selecionados"); matrícula is feminine.
            function, name, _description = actions["delete_selected"]
            actions["delete_selected"] = (function, name, "Remover matrículas selecionadas")
        return actions

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None
    ) -> HttpResponse:
        detail_actions = []
        if "resend_confirmation" in self.get_actions(request):
            detail_actions.append(("resend_confirmation", "Reenviar confirmação"))
        fix_email_url = None
        if object_id.isdigit() and self.has_fix_email_permission(request):
            fix_email_url = reverse("admin:enrollments_enrollment_fix_email", args=[int(object_id)])
        extra_context = {**(extra_context or {}), "detail_actions": detail_actions, "fix_email_url": fix_email_url}
        return super().change_view(request, object_id, form_url, extra_context)

    def fix_email_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """Correct the student's address and queue a new confirmation to it, in one step."""
        enrollment = get_object_or_404(Enrollment.objects.select_related("product"), pk=object_id)
        if not self.has_fix_email_permission(request, enrollment):
            raise PermissionDenied
        form = FixEmailForm(request.POST or None, initial={"email": enrollment.email})
        if request.method == "POST" and form.is_valid():
            try:
                result = enrollment_correct_email_and_resend(
                    enrollment_id=enrollment.pk, email=form.cleaned_data["email"]
                )
            except EnrollmentAlreadyExists:
                form.add_error("email", "Este aluno já tem outra matrícula neste curso com esse email.")
            else:
                message = result.message
                change = f"Email corrigido de {result.previous_email} para {form.cleaned_data['email']}; "
                admin_actions.log_grouped(request, {f"{change}confirmação nova: mensagem #{message.pk}": [enrollment]})
                admin_actions.log_additions(
                    request, [(message, f"Confirmação da matrícula #{enrollment.pk} (email corrigido)")]
                )
                self.message_user(
                    request,
                    f"Email corrigido; confirmação nova na fila para {form.cleaned_data['email']} "
                    f"(mensagem #{message.pk}). "
                    "A mensagem anterior e os eventos dela ficam no histórico.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(admin_actions.change_url(enrollment))
        latest = outbox_messages_for_source(source=enrollment.outbox_source)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": enrollment,
            "title": f"Corrigir o email e reenviar a confirmação: {enrollment.name}",
            "form": form,
            "messages_sent": latest[:5],
            "suppression": suppressions_for([enrollment.email]).get(enrollment.email.lower()),
        }
        return TemplateResponse(request, "admin/enrollments/enrollment/fix_email.html", context)

    @admin.display(description="email de confirmação", ordering="email_status")
    def confirmation_status(self, enrollment: Enrollment) -> str:
        status = getattr(enrollment, "email_status", None)
        return OutboxStatus(status).label if status else "—"

    @admin.display(description="emails")
    def emails(self, enrollment: Enrollment) -> SafeString | str:
        if enrollment.pk is None:
            return "—"
        outbox = outbox_messages_for_source(source=enrollment.outbox_source)
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">#{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>'
            "<td>{}</td></tr>",
            (
                (
                    admin_actions.change_url(message),
                    message.pk,
                    message.subject,
                    status_badge(message),
                    delivery_badge(message),
                    f"{message.attempts}/{message.max_attempts}",
                    local_datetime(message.created_at),
                    local_datetime(message.sent_at),
                    error_explanation(message.last_error) if message.last_error else "",
                )
                for message in outbox
            ),
        )
        changelist = reverse("admin:outbox_worker_outboxmessage_changelist")
        search_url = f"{changelist}?{urlencode({'q': enrollment.outbox_source})}"
        return format_html(
            '<table class="enrollment-emails"><thead><tr><th>mensagem</th><th>assunto</th><th>situação</th>'
            "<th>entrega</th><th>tentativas</th><th>criada</th><th>enviada</th><th>último erro</th></tr></thead>"
            "<tbody>{}</tbody>"
            '</table><p><a href="{}">ver na outbox</a></p>',
            rows or format_html('<tr><td colspan="8">nenhum email</td></tr>'),
            search_url,
        )

    @admin.action(description="Reenviar confirmação (modelos atuais; a anterior é mantida)", permissions=["resend"])
    def resend_confirmation(self, request: HttpRequest, queryset: QuerySet[Enrollment]) -> HttpResponse | None:
        ids = admin_actions.selected_ids(self, request, queryset)
        if ids is None:
            return None
        enrollments = list(Enrollment.objects.select_related("product").filter(pk__in=ids).order_by("pk"))
        if not admin_actions.is_confirmed(request):
            rows = [
                ConfirmationRow(
                    pk=enrollment.pk,
                    label=str(enrollment),
                    url=admin_actions.change_url(enrollment),
                    status=enrollment.get_status_display(),
                    allowed=True,
                    description=f"uma confirmação nova para {enrollment.email} entra na fila; as anteriores ficam",
                )
                for enrollment in enrollments
            ]
            count = len(rows)
            title = f"Confirmar: reenviar a confirmação de {count} matrícula{'s' if count != 1 else ''}"
            return admin_actions.render_confirmation(
                self, request, action="resend_confirmation", title=title, verb="reenviar", rows=rows
            )
        queued = [(enrollment, enrollment_resend_confirmation(enrollment=enrollment)) for enrollment in enrollments]
        for enrollment, message in queued:
            admin_actions.log_grouped(request, {f"Confirmação reenviada: mensagem #{message.pk}": [enrollment]})
        admin_actions.log_additions(
            request, ((message, f"Confirmação da matrícula #{enrollment.pk}") for enrollment, message in queued)
        )
        listed = ", ".join(f"mensagem #{message.pk}" for _, message in queued)
        if len(queued) == 1:
            done = f"Confirmação na fila para 1 matrícula: {listed}"
        else:
            done = f"Confirmação na fila para {len(queued)} matrículas: {listed}"
        self.message_user(request, done, messages.SUCCESS)
        if len(queued) == 1:
            return HttpResponseRedirect(admin_actions.change_url(queued[0][0]))
        return None
