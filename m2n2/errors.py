"""Errors the library raises; callers can catch ``M2N2Error`` or a specific subclass."""


class M2N2Error(Exception):
    """Base class for every error raised by m2n2."""


class IncompatibleModels(M2N2Error):
    """Two models do not share tensor names, shapes or order."""


class ShapeMismatch(M2N2Error):
    """A tensor or score vector has the wrong shape."""


class InvalidScores(M2N2Error):
    """An evaluator returned scores outside [0, 1] or not finite."""


class InvalidCheckpoint(M2N2Error):
    """A file is not a safetensors checkpoint this library can read safely."""


class DuplicateMergeMethod(M2N2Error):
    """A merge method name is registered twice."""


class InvalidMergeParameter(M2N2Error):
    """A merge method got an unknown parameter or a value outside its range."""


class UnknownMergeMethod(M2N2Error):
    """A merge method name is not in the registry."""

    def __init__(self, name: str, available: list[str]) -> None:
        super().__init__(f"unknown merge method {name!r}; available: {', '.join(sorted(available))}")
        self.name = name
        self.available = available
