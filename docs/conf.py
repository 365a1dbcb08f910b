"""Sphinx configuration: ``make docs`` builds the site into docs/_build/html, warnings as errors.

The tutorial, how-to and topic pages stay Markdown (MyST); the reference pages (docs/reference/) are
Markdown too, holding autodoc directives (in ``{eval-rst}`` blocks) that read the Google-style
docstrings through napoleon. Cross-references to Python, trio, attrs, cattrs, Hypothesis and
trio-websocket resolve offline, through inventories on disk: Debian's documentation packages (``make
docs`` installs them when missing) and, for trio, attrs and cattrs, docs/_inventories/ (see its
README).
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

from sphinx.errors import NoUri, PycodeError
from sphinx.ext.napoleon import Config as NapoleonConfig
from sphinx.ext.napoleon.docstring import GoogleDocstring
from sphinx.pycode import ModuleAnalyzer

import trionos

HERE = Path(__file__).parent

project = "trionos"
author = "the trionos authors"
copyright = "the trionos authors"
version = release = trionos.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_inventories", "README.md"]
templates_path: list[str] = []

# -- MyST: the existing pages stay Markdown --------------------------------------------------------
# Links such as [bounds](bounds.md#room-history) need anchors on headings down to ###.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist"]

# -- autodoc -----------------------------------------------------------------------------
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    "member-order": "bysource",
}
# Signatures stay short; the types show up in the descriptions of the parameters and return values
# the docstring documents (an async context manager's annotation, AsyncIterator[...], would say the
# wrong thing as a return type: its Yields: section says what ``async with`` gives).
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_preserve_defaults = True

# -- intersphinx: offline inventories -----------------------------------------------------------------
# Each entry names the site the links point to and where its inventory is read from. Local files come
# first; ``None`` (the site's own objects.inv) is only tried when no local file exists, so a build on
# a machine without the Debian packages still works where it has a network. `make docs` installs the
# Debian packages (python3-doc, python-hypothesis-doc, python-trio-websocket-doc). trio has no such
# package, and Debian's attrs and cattrs documentation is four years old (no ``attrs.frozen``, no
# ``cattrs.strategies``), so their inventories are checked in (docs/_inventories/README.md).
DEBIAN_DOCS = Path(os.environ.get("TRIONOS_DEBIAN_DOCS", "/usr/share/doc"))


def _inventory(*candidates: Path) -> tuple[str | None, ...]:
    found = tuple(str(path) for path in candidates if path.exists())
    return found or (None,)


def _debian(package: str) -> tuple[str | None, ...]:
    return _inventory(DEBIAN_DOCS / package / "html" / "objects.inv")


intersphinx_mapping = {
    "python": ("https://docs.python.org/3", _debian("python3")),
    "trio": ("https://trio.readthedocs.io/en/stable", _inventory(HERE / "_inventories" / "trio.inv")),
    "attrs": ("https://www.attrs.org/en/stable", _inventory(HERE / "_inventories" / "attrs.inv")),
    "cattrs": ("https://catt.rs/en/stable", _inventory(HERE / "_inventories" / "cattrs.inv")),
    # For the test kit (strategies, state machines) and the trio-websocket bridge.
    "hypothesis": ("https://hypothesis.readthedocs.io/en/latest", _debian("python-hypothesis-doc")),
    "trio-websocket": (
        "https://trio-websocket.readthedocs.io/en/stable",
        _debian("python-trio-websocket-doc"),
    ),
}

# -- nitpicky: every reference must resolve ----------------------------------------------------------
nitpicky = True
# What cannot resolve, and why. Anything else that does not resolve fails the build.
nitpick_ignore = [
    # No inventory offline: prometheus_client's docs are not Sphinx docs; websockets and wsproto have
    # no Debian documentation package with an object inventory (python-wsproto-doc lists pages only).
    ("py:class", "prometheus_client.registry.Collector"),
    ("py:class", "prometheus_client.metrics_core.Metric"),
    ("py:class", "websockets.protocol.Protocol"),
    ("py:class", "wsproto.WSConnection"),
    ("py:class", "wsproto.events.Event"),
    # Private by design: a Client is made by Hub.client (its registry is the hub's); a transport is
    # seen through trionos.HubTransport, whose write_listener is whatever the hub registers.
    ("py:class", "ClientRegistry"),
    ("py:class", "trionos._transport.Transport"),
    ("py:class", "trionos._transport.WriteListener"),
]
nitpick_ignore_regex = [
    # Type variables (``T``) of generic methods: a signature shows them, there is nothing to link to.
    (r"py:(class|obj)", r"trionos\.(testing\.)?_\w+\.T"),
    # Channels[S, I, O]: its state, inbound and outbound type variables, and a handler's message M.
    (r"py:(class|obj)", r"(trionos\._(channels|session)\.)?[SIOM]"),
    # ... and of generic classes (Client's connection type T) and methods (Hub.client's C).
    (r"py:(class|obj)", r"(trionos\._\w+\.)?[TC]"),
]

#: Names in annotations that autodoc sees as bare strings (imported under ``TYPE_CHECKING`` in the
#: module that uses them) -> what they are.
BARE_NAMES = {
    "AbstractAsyncContextManager": "contextlib.AbstractAsyncContextManager",
    "SearchStrategy": "hypothesis.strategies.SearchStrategy",
    "st.SearchStrategy": "hypothesis.strategies.SearchStrategy",
    # The hub's alias for a client of any connection type (Client[HubConnection]).
    "AnyClient": "trionos.Client",
}

# -- HTML ------------------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"trionos {release}"
html_static_path: list[str] = []
html_show_sourcelink = False


# -- Public names for private paths ---------------------------------------------------------------------
# The code lives in private modules (trionos._hub) and is re-exported (trionos.Hub); annotations name
# the private path. Point such a reference at the public name: the package's own export, or for
# another library the path without its private modules (trio_websocket._impl.X -> trio_websocket.X).
PUBLIC_PACKAGES = ("trionos.testing", "trionos")


def _public_target(target: str) -> str | None:
    if target in BARE_NAMES:
        return BARE_NAMES[target]
    if "." not in target:
        # A bare name from a string annotation (``from __future__ import annotations``).
        for package in PUBLIC_PACKAGES:
            if target in getattr(importlib.import_module(package), "__all__", ()):
                return f"{package}.{target}"
        return None
    module, _, name = target.rpartition(".")
    parts = module.split(".")
    if not any(part.startswith("_") for part in parts):
        return None
    for package in PUBLIC_PACKAGES:
        if module.startswith(package + "._") and name in getattr(
            importlib.import_module(package), "__all__", ()
        ):
            return f"{package}.{name}"
    public = [part for part in parts if not part.startswith("_")]
    return ".".join([*public, name]) if public and not public[0] == "trionos" else None


def _resolve_private(app: Any, env: Any, node: Any, contnode: Any) -> Any:
    if node.get("refdomain") != "py":
        return None
    target = _public_target(node.get("reftarget", ""))
    if target is None:
        return None
    retargeted = node.deepcopy()
    retargeted["reftarget"] = target
    domain = env.get_domain("py")
    found = domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], target, retargeted, contnode
    )
    if found is not None:
        return found
    # Another library's name: let intersphinx (a missing-reference handler too) look it up.
    return app.emit_firstresult("missing-reference", env, retargeted, contnode, allowed_exceptions=(NoUri,))


# -- Documentation comments of re-exported data ------------------------------------------------------
# ``#:`` comments document a module-level value where it is defined (trionos._reconnect); autodoc looks
# for them in the module it documents (trionos), and otherwise shows the docstring of the value's type
# (frozenset's). Use the defining module's comment, or nothing.


def _defining_comment(package: str, name: str) -> list[str] | None:
    for module_name, module in sorted(sys.modules.items()):
        if not module_name.startswith(package + "._") or getattr(module, name, _MISSING) is _MISSING:
            continue
        try:
            comments = ModuleAnalyzer.for_module(module_name).find_attr_docs()
        except PycodeError:
            continue
        if ("", name) in comments:
            return list(comments[("", name)])
    return None


_MISSING = object()


def _data_docstring(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    package, _, attr = name.rpartition(".")
    if what == "data" and package in PUBLIC_PACKAGES:
        lines[:] = _defining_comment(package, attr) or []


# -- Google-style docstrings (napoleon) ---------------------------------------------------------------
# napoleon's own extension reads the first line of an attribute's docstring as ``type: description``
# when it has a colon ("Envelopes dropped: queue full, ..." would show the type "Envelopes dropped").
# Here every type comes from the annotations, and such a line is prose, so the docstrings go through
# napoleon's public GoogleDocstring directly, with attributes, properties and data read like any
# other docstring (their Args:/Returns:/Raises: sections work the same).
NAPOLEON = NapoleonConfig(
    napoleon_google_docstring=True,
    napoleon_numpy_docstring=False,
    napoleon_use_rtype=False,
    napoleon_attr_annotations=True,
)


def _google_docstring(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    kind = "" if what in ("attribute", "property", "data") else what
    lines[:] = GoogleDocstring(lines, NAPOLEON, app, kind, name, obj, options).lines()


def setup(app: Any) -> None:
    app.connect("missing-reference", _resolve_private)
    # The data's own comment first, then napoleon.
    app.connect("autodoc-process-docstring", _data_docstring, priority=400)
    app.connect("autodoc-process-docstring", _google_docstring, priority=500)
