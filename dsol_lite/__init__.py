"""dsol_lite: learn, teach and reproduce self-supervised audio-visual sound-source localization.

The package backs a sequence of notebooks (``notebooks/``); each library module names the
notebook that teaches it. Data flows one way:
world (``synth``) -> on-disk layout (``data.schema``) -> datasets (``data``) -> models ->
objectives -> training -> dictionary -> stage two -> metrics -> report.
"""

__version__ = "0.1.0"

from dsol_lite.errors import ConfigError, DataError, AnnotationError

__all__ = ["__version__", "ConfigError", "DataError", "AnnotationError"]
