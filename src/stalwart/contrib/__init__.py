"""Integrations with other libraries, one module per framework.

Each module imports its framework when it is itself imported, never before: ``import
stalwart`` loads none of them. Install a framework with its extra, for example
``pip install "stalwart[redis]"`` for `stalwart.contrib.redis`.

.. versionadded:: 0.1.0
"""
