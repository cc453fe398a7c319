"""Methods: one package per method, each registering itself once in ``spec.py``.

A method package ``flipseg/methods/<name>/`` holds a ``spec.py`` that calls
:func:`flipseg.registry.register_method` with a :class:`~flipseg.registry.MethodSpec`
(standard library only: code is named by ``"module:attribute"`` strings and imported when
used). :func:`load_methods` finds every such package, so adding a method is adding a
package; the box -> mask baselines register themselves in :mod:`flipseg.baselines`.

This module is the methods layer's face: the CLI, the Python API and the recipes look
methods up here (:func:`get_segmenter`, :func:`method_spec`, :func:`method_of_model`,
:func:`default_method`), never in each other's internals.
"""

from __future__ import annotations

import pkgutil
from importlib import import_module
from pathlib import Path
from typing import Any

from flipseg.errors import FlipsegError
from flipseg.registry import METHODS, MethodSpec, resolve

__all__ = [
    "default_method",
    "get_segmenter",
    "load_methods",
    "method_names",
    "method_option_keywords",
    "method_of_model",
    "method_spec",
    "recipes",
    "segmenter_options",
]

_LOADED: set[str] = set()


def load_methods(*, baselines: bool = True) -> None:
    """Register every method: the ``spec`` module of each package under ``flipseg.methods``
    (cheap) and, with ``baselines``, the baselines (imports OpenCV, scikit-image, PyTorch)."""
    if "specs" not in _LOADED:
        for info in pkgutil.iter_modules(__path__):
            if info.ispkg:
                try:
                    import_module(f"{__name__}.{info.name}.spec")
                except ModuleNotFoundError as exc:
                    if exc.name != f"{__name__}.{info.name}.spec":
                        raise
        _LOADED.add("specs")
    if baselines and "baselines" not in _LOADED:
        import_module("flipseg.baselines")
        _LOADED.add("baselines")


def method_spec(name: str) -> MethodSpec:
    """The spec of method ``name``; an unknown name fails with the list of valid ones."""
    load_methods()
    return METHODS.get(name)


def method_names(*, kind: str | None = None, dims: int | None = None) -> list[str]:
    """Registered method names, optionally only those of one kind / dimensionality."""
    load_methods()
    return [n for n in METHODS.names()
            if (kind is None or METHODS.get(n).kind == kind)
            and (dims is None or dims in METHODS.get(n).dims)]


def method_option_keywords() -> set[str]:
    """The factory keywords of every method's own options (``spec.options``, e.g.
    ``vote_model`` of flip-vote's ``--vote-model``)."""
    load_methods(baselines=False)
    return {kw for n in METHODS.names() for _flag, kw, _help in METHODS.get(n).options}


def recipes() -> dict[str, MethodSpec]:
    """``flipseg train`` recipe name -> the spec that trains it (specs only: no baselines)."""
    load_methods(baselines=False)
    return {METHODS.get(n).recipe: METHODS.get(n) for n in METHODS.names()
            if METHODS.get(n).recipe is not None}


def default_method(dims: int = 2) -> str:
    """The method used when none is named: ``flip-vote`` for 2D boxes, ``flip`` for 3D."""
    load_methods(baselines=False)
    for n in METHODS.names():
        if dims in METHODS.get(n).default_for:
            return n
    raise FlipsegError(f"no default method for {dims}D images")


def segmenter_options(spec: MethodSpec, *, model: str | Path | None = None,
                      dims: int | None = None, config: dict[str, Any] | None = None,
                      extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Keyword arguments of ``spec``'s factory, checked against what the method takes.

    Parameters
    ----------
    model
        A trained model (file or run folder); an error for a method that takes none.
    dims
        Dimensionality of the images, for a method whose shipped model depends on it.
    config
        Inference-time options (``--set``), typed already; an error for a method without
        an inference configuration.
    extra
        Values of the spec's own options (``spec.options``), by factory keyword.
    """
    opts: dict[str, Any] = {}
    if model is not None:
        if spec.model == "none":
            raise FlipsegError(f"method {spec.name!r} takes no trained model (--model)")
        opts["model"] = str(model)
    if dims is not None and spec.default_model is not None and model is None:
        if dims not in spec.dims:
            raise FlipsegError(f"method {spec.name!r} segments {'/'.join(map(str, spec.dims))}D "
                               f"images, not {dims}D")
        opts["dims"] = dims
    if config:
        if spec.config is None:
            raise FlipsegError(f"method {spec.name!r} has no options to --set "
                               f"({', '.join(sorted(config))})")
        opts.update(config)
    known = {kw for _flag, kw, _help in spec.options}
    for key, value in (extra or {}).items():
        if value is None:
            continue
        if key not in known:
            raise FlipsegError(f"--{key.replace('_', '-')} does nothing for method {spec.name!r}")
        opts[key] = value
    return opts


def get_segmenter(name: str, **opts: Any) -> Any:
    """Instantiate method ``name`` with its factory's keyword options.

    Raises FlipsegError for an unknown name (listing the valid ones), a method with no
    factory (a training-only recipe) and whatever the factory raises for bad options.
    """
    spec = method_spec(name)
    if spec.factory is None:
        raise FlipsegError(f"method {name!r} is trained with `flipseg train {spec.recipe}`; "
                           "it does not segment")
    return resolve(spec.factory)(**opts)


def method_of_model(path: str | Path) -> str:
    """The method that runs a trained model (a model file or a run folder).

    The model file's ``format`` tag is read without loading its weights and matched
    against the specs' ``model_formats``. Raises FlipsegError for a missing path, a
    folder without a model, a file that is not a flipseg model, or a model that does not
    segment (a classifier or a box refiner: the message says what to use instead).
    """
    from flipseg.bundles import bundle_format, locate

    load_methods()
    files = tuple(dict.fromkeys(f for n in METHODS.names() for f in METHODS.get(n).model_files))
    found = locate(path, files, "trained model")
    fmt = bundle_format(found)
    for n in METHODS.names():
        spec = METHODS.get(n)
        if fmt in spec.model_formats:
            if spec.kind in ("box", "image"):
                return n
            use = ("`flipseg classify --model`" if spec.kind == "classifier"
                   else "--refine-box" if spec.kind == "refiner" else f"method {n}")
            raise FlipsegError(f"{found} is a {spec.help.split(':')[0]} model: use it with {use}")
    raise FlipsegError(f"{found} is not a flipseg model (format {fmt!r})")
