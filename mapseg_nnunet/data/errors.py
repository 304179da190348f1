"""The error every input check raises: a dataset that cannot be used as it is, with the offending file named."""


class DatasetError(ValueError):
    """A dataset cannot be used as it is; the message names the file and the problem."""
