"""The error tree every layer raises; the HTTP layer maps each *kind* to a status in one table.

Each error carries a CSBS error code (`CSBS.xxxx`) and a message. The kind (the class it
derives from) says what went wrong from the caller's point of view; the code says which
documented condition it is. Raising one of these never leaks internals: the message is
written for the API caller.
"""

from __future__ import annotations


class CsbsError(Exception):
    """Request failed."""

    code: str = "CSBS.9999"

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        self.message = message or (self.__doc__ or "").strip().splitlines()[0]
        if code is not None:
            self.code = code
        super().__init__(self.message)


class InvalidInput(CsbsError):
    """Invalid request parameters."""

    code = "CSBS.9001"


class InvalidState(CsbsError):
    """The resource's state does not allow this operation."""

    code = "CSBS.2003"


class Conflict(CsbsError):
    """The request conflicts with the current state of the resource."""

    code = "CSBS.2003"


class NotFound(CsbsError):
    """The resource was not found."""

    code = "CSBS.9001"


class Unauthenticated(CsbsError):
    """Authentication required."""

    code = "CSBS.9010"


class Forbidden(CsbsError):
    """You are not allowed to perform this operation."""

    code = "CSBS.9011"


class QuotaExceeded(CsbsError):
    """Quota exceeded."""

    code = "CSBS.9006"


class PayloadTooLarge(CsbsError):
    """The request body is too large."""

    code = "CSBS.9001"


class ServiceUnavailable(CsbsError):
    """The service is temporarily unavailable; retry later."""

    code = "CSBS.9998"

    def __init__(self, message: str | None = None, *, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InternalError(CsbsError):
    """Internal error."""

    code = "CSBS.9999"


class DeploymentMismatch(CsbsError):
    """This process is not configured as the deployment its database records."""

    # Raised at start, before a process touches data; never an answer of the API.
    code = "CSBS.9012"


# Specific documented conditions -------------------------------------------------------


class ProviderInvalid(InvalidInput):
    """provider invalid"""

    code = "CSBS.9001"


class TaskNotFound(NotFound):
    """task not found"""

    code = "CSBS.6040"


class BackupNotFound(NotFound):
    """Checkpoint_item is not found."""

    code = "CSBS.3001"

    def __init__(self, backup_id: str) -> None:
        super().__init__(f"Checkpoint_item ({backup_id}) is not found.")


class PolicyNotFound(NotFound):
    """plan not found"""

    code = "CSBS.3000"
