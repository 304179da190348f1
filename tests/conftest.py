"""Registers the session fixtures of :mod:`nnunet_fixtures` with pytest."""
from nnunet_fixtures import planned_dataset, source_with_target  # noqa: F401
