"""Domain errors. Services raise these; one API handler maps them to problem+json.

Each error has a stable ``code`` (part of the API contract; clients switch on it) and the HTTP
status it maps to. Services never raise HTTP exceptions themselves.
"""

from __future__ import annotations

from typing import Any, ClassVar


class QuarryError(Exception):
    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidInput(QuarryError):
    code = "invalid_input"
    status = 422
    title = "Invalid input"


class Unauthenticated(QuarryError):
    code = "unauthenticated"
    status = 401
    title = "Authentication required"


class MissingApiKey(Unauthenticated):
    code = "missing_api_key"


class InvalidApiKey(Unauthenticated):
    code = "invalid_api_key"
    title = "Invalid API key"


class ExpiredApiKey(Unauthenticated):
    code = "api_key_expired"
    title = "API key expired"


class RevokedApiKey(Unauthenticated):
    code = "api_key_revoked"
    title = "API key revoked"


class Forbidden(QuarryError):
    code = "forbidden"
    status = 403
    title = "Forbidden"


class NotFound(QuarryError):
    code = "not_found"
    status = 404
    title = "Not found"


class ProjectNotFound(NotFound):
    """Also raised when the project exists but the caller has no access: ids do not leak."""

    code = "project_not_found"
    title = "Project not found"


class UserNotFound(NotFound):
    code = "user_not_found"
    title = "User not found"


class ApiKeyNotFound(NotFound):
    code = "api_key_not_found"
    title = "API key not found"


class JobNotFound(NotFound):
    code = "job_not_found"
    title = "Job not found"


class Conflict(QuarryError):
    code = "conflict"
    status = 409
    title = "Conflict"


class ProjectNameTaken(Conflict):
    code = "project_name_taken"
    title = "Project name taken"


class LastOwner(Conflict):
    code = "last_owner"
    title = "A project needs an owner"


class ServiceUnavailable(QuarryError):
    code = "service_unavailable"
    status = 503
    title = "Service unavailable"


class UserNameTaken(Conflict):
    code = "user_name_taken"
    title = "User name taken"


class AdminRequired(Forbidden):
    code = "admin_required"
    title = "Admin required"


class DocumentNotFound(NotFound):
    code = "document_not_found"
    title = "Document not found"


class DocumentError(QuarryError):
    """A document quarry cannot index as it is. Permanent: retrying gives the same answer."""

    code = "invalid_document"
    status = 422
    title = "Document cannot be indexed"


class UnsupportedFormat(DocumentError):
    code = "unsupported_format"
    status = 415
    title = "Unsupported document format"


class DocumentTooLarge(DocumentError):
    code = "document_too_large"
    status = 413
    title = "Document too large"


class EmptyDocument(DocumentError):
    code = "empty_document"
    title = "Document has no text"


class CorruptDocument(DocumentError):
    code = "corrupt_document"
    title = "Document is corrupt"


class EncryptedDocument(DocumentError):
    code = "encrypted_document"
    title = "Document is password-protected"


class BinaryContent(DocumentError):
    code = "binary_content"
    title = "Not text"


class UrlFetchFailed(DocumentError):
    code = "url_fetch_failed"
    title = "Could not fetch the URL"


class UrlNotAllowed(UrlFetchFailed):
    """The URL leads to an address fetches may not reach (not public, and not allowed by
    QUARRY_FETCH_ALLOWED_NETWORKS)."""

    code = "url_not_allowed"
    title = "The URL's address is not allowed"


class UrlTimeout(UrlFetchFailed):
    code = "url_timeout"
    title = "Fetching the URL timed out"


class TransientError(Exception):
    """A failure that may pass on its own (a provider's 5xx, a dropped connection): retry."""


class InvitationNotFound(NotFound):
    code = "invitation_not_found"
    title = "Invitation not found"


class ConversationNotFound(NotFound):
    code = "conversation_not_found"
    title = "Conversation not found"


class ConversationBusy(Conflict):
    code = "conversation_busy"
    title = "The conversation is answering another message"


class QuestionOverBudget(QuarryError):
    """The question (with the instructions) leaves no room for evidence in the budget."""

    code = "question_over_budget"
    status = 422
    title = "The question does not fit the token budget"


class BudgetTooSmall(QuarryError):
    """Relevant passages were found, but not one fits the evidence budget."""

    code = "budget_too_small"
    status = 422
    title = "The budget is smaller than one passage"


class ClientDisconnected(QuarryError):
    """Recorded on an answer the client stopped reading; never sent (nobody is listening)."""

    code = "client_disconnected"
    status = 499
    title = "The client disconnected"


class BudgetOverLimit(InvalidInput):
    """A request's budget above the configured one, or a reserve that leaves no prompt."""

    code = "budget_over_limit"
    title = "The budget exceeds what is configured"
