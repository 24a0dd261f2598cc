"""The project's own errors: each one names the file or field at fault, so a user can act on it."""


class KubedetectError(Exception):
    """An error in the user's input or setup. The CLI prints it without a traceback."""

    exit_code = 1


class UnusableInputError(KubedetectError):
    """The input as a whole cannot be used (no such folder, no annotations, nothing decodable)."""

    exit_code = 2


class AnnotationError(KubedetectError):
    """A Pascal VOC annotation file that cannot be read safely or makes no sense."""

    def __init__(self, file: str, detail: str):
        super().__init__(f"{file}: {detail}")
        self.file = file
        self.detail = detail


class ImageError(KubedetectError):
    """Image bytes that cannot be decoded, are truncated, or are too large to decode safely."""
