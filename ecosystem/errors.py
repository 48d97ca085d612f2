"""Errors the ecosystem raises; the service maps them to HTTP status codes."""

from m2n2.errors import M2N2Error


class EcosystemError(M2N2Error):
    """Base class for every error raised by the ecosystem runtime."""


class NotFound(EcosystemError):
    """A model, task or other record does not exist."""


class Conflict(EcosystemError):
    """The request clashes with what is stored (a duplicate name, an occupied slot, ...)."""


class InvalidInput(EcosystemError):
    """A value is malformed or out of range; the message says what to fix."""


class RegistrationRefused(InvalidInput, ValueError):
    """A checkpoint refused before anything is stored: wrong format, layout, dtype or values."""
