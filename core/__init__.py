"""Immutable types, the config schema, the error table, token estimation.

``core.native`` is imported first, here and in every package with compiled modules: it decides before any
of them is imported whether the mypyc build is used (docs/compiled.md).
"""

import core.native  # noqa: F401
