"""Sphinx configuration for stalwart's documentation.

``make docs`` builds it twice with warnings as errors: as HTML, and with the doctest
builder, which runs every example on these pages and in the docstrings.
"""

from __future__ import annotations

from importlib.metadata import version as _version

project = "stalwart"
author = "The stalwart developers"
copyright = "the stalwart developers"
release = _version("stalwart")
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build"]

# Unresolved references are not errors. There is no intersphinx mapping: the docs
# build offline, so there is no inventory of Python's own names to resolve against.
nitpicky = False
# `name` in a docstring is a cross-reference when it resolves, and code otherwise.
default_role = "py:obj"

# MyST
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# autodoc and napoleon (Google-style docstrings)
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# "Attributes:" sections become fields of their class rather than entries of their
# own, so an attribute that autodoc also finds is not described twice.
napoleon_use_ivar = True

# doctest: every ``{doctest}`` block and every ``>>>`` example runs. stalwart logs
# retries (INFO) and give-ups (WARNING) to the "stalwart" logger; on these pages its
# records from INFO up are printed to stdout as "LEVEL logger: message" so that the
# examples show them.
doctest_global_setup = """
import logging as _logging

class _PrintToStdout(_logging.Handler):
    def emit(self, record):
        print(f"{record.levelname} {record.name}: {record.getMessage()}")

_docs_logger = _logging.getLogger("stalwart")
for _handler in list(_docs_logger.handlers):
    if type(_handler).__name__ == "_PrintToStdout":
        _docs_logger.removeHandler(_handler)
_docs_logger.addHandler(_PrintToStdout())
_docs_logger.propagate = False
_docs_logger.setLevel(_logging.INFO)  # retries are INFO records: show them too
"""

# HTML
html_theme = "furo"
html_title = f"stalwart {release}"
