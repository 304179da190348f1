"""Registers the session fixtures of :mod:`nnunet_fixtures` with pytest."""
from nnunet_fixtures import planned_dataset, source_with_target, trained_mapseg_smoke  # noqa: F401
