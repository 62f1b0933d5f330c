"""Exceptions that name the record, key or file at fault."""


class RobustEditError(Exception):
    """Base class for errors the pipeline reports to the user."""


class DataIntegrityError(RobustEditError):
    """A vendored data file is missing or its sha256 does not match the manifest."""


class RecordError(RobustEditError):
    """A data record is malformed; the message names the file, the record and the field."""


class ConfigError(RobustEditError):
    """An unknown model, layer, backend or otherwise invalid configuration key."""


class ModelNotAvailableError(RobustEditError):
    """Model weights are not installed or not reachable; the message says how to get them."""
