__version__ = "0.1.0"

import sys as _sys
# jsonschema (imported by Altair) imports rfc3987_syntax when it is installed (jupyter-events brings it), only for an optional "iri"
# format check that Altair never runs; building that package's grammar costs ~1.5 s in every process that imports the library.
# Unless something imported it before us, it stays out (jsonschema imports it under `suppress(ImportError)`).
_sys.modules.setdefault('rfc3987_syntax', None)
