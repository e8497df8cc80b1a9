"""The fleet spec: typed models (model.py) and the loader that validates a file (load.py)."""

from corral.spec.load import LoadedSpec, load_spec
from corral.spec.model import SCHEMA_VERSION, Fleet, Role

__all__ = ["SCHEMA_VERSION", "Fleet", "LoadedSpec", "Role", "load_spec"]
