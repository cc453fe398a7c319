"""Name -> factory tables (one per kind: baselines, networks, methods, ...) and the method
specification every method registers once (:class:`MethodSpec`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, Callable, Generic, Iterator, TypeVar

from flipseg.errors import FlipsegError

__all__ = ["METHODS", "METHOD_KINDS", "MODEL_USES", "MethodSpec", "Registry", "register_method", "resolve"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A small name -> object table filled by a ``register`` decorator.

    Unknown names fail with the list of valid ones.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise KeyError(f"{self.kind} {name!r} registered twice")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items))
            raise FlipsegError(f"unknown {self.kind} {name!r}; choose one of: {valid}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)


# ------------------------------------------------------------------- methods
#: What a method does with its input.
#: ``box``: box -> mask (2D/3D); ``image``: whole-image segmenter (a trained model, no box
#: needed); ``classifier``: image -> class probabilities; ``refiner``: rough box -> tight box.
METHOD_KINDS = ("box", "image", "classifier", "refiner", "backbone")
#: Whether a method takes a trained model (``--model``).
MODEL_USES = ("none", "optional", "required")


@dataclass(frozen=True)
class MethodSpec:
    """Everything flipseg needs to know about one method, registered once.

    References to code are ``"module:attribute"`` strings, imported only when used, so
    registering a method (and ``flipseg --help``) never imports PyTorch. The CLI (parsers,
    dispatch, help lists), model loading, :func:`flipseg.methods.get_segmenter`, ``demo``
    and the Python API derive everything from these fields.
    """

    name: str
    """``--method`` name (lower case, dashes)."""
    kind: str
    """One of :data:`METHOD_KINDS`."""
    dims: tuple[int, ...]
    """Image dimensionalities it segments: ``(2,)``, ``(3,)`` or ``(2, 3)``."""
    help: str
    """One line for ``--help`` lists."""
    factory: str | Callable[..., Any] | None = None
    """``factory(**options) -> Segmenter`` (or the refiner / classifier object)."""
    config: str | None = None
    """Dataclass of its inference-time options: every field can be set with ``--set`` on
    ``segment`` and ``evaluate`` and passed as keywords to the factory."""
    model: str = "none"
    """One of :data:`MODEL_USES`: does ``--model`` apply."""
    model_formats: tuple[str, ...] = ()
    """Model-file ``format`` tags this method runs (``flipseg segment --model F`` picks the
    method from them)."""
    model_files: tuple[str, ...] = ()
    """File names of its model inside a run folder, first found wins."""
    default_model: str | None = None
    """``fn(dims) -> Path``: the model shipped with flipseg (None: none shipped)."""
    recipe: str | None = None
    """``flipseg train RECIPE`` name, when it can be trained."""
    recipe_help: str = ""
    add_train_args: str | None = None
    """``fn(parser)``: the recipe's own command-line options."""
    train: str | None = None
    """``fn(args) -> exit code``: the recipe."""
    distributed: bool = False
    """The recipe trains under ``torchrun --nproc_per_node N`` (DistributedDataParallel)."""
    options: tuple[tuple[str, str, str], ...] = ()
    """Extra ``segment``/``evaluate`` options: ``(flag, factory keyword, help)``."""
    default_for: tuple[int, ...] = ()
    """Dimensionalities for which this is the default method."""
    source: str = field(default="", compare=False)
    """Module that registered it (filled in by :func:`register_method`)."""

    def __post_init__(self) -> None:
        if self.kind not in METHOD_KINDS:
            raise ValueError(f"method {self.name!r}: kind {self.kind!r} not in {METHOD_KINDS}")
        if self.model not in MODEL_USES:
            raise ValueError(f"method {self.name!r}: model {self.model!r} not in {MODEL_USES}")
        if not self.dims or any(d not in (2, 3) for d in self.dims):
            raise ValueError(f"method {self.name!r}: dims {self.dims!r} must be 2 and/or 3")
        if (self.train is None) != (self.recipe is None):
            raise ValueError(f"method {self.name!r}: give recipe and train together")


#: Every method, by name.
METHODS: Registry[MethodSpec] = Registry("method")


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to :data:`METHODS` (twice with an equal spec is a no-op)."""
    if spec.name in METHODS and METHODS.get(spec.name) != spec:
        raise KeyError(f"method {spec.name!r} registered twice with different specs")
    METHODS._items[spec.name] = spec
    return spec


def resolve(ref: str | Callable[..., Any]) -> Any:
    """The object a ``"module:attribute"`` reference names (a callable is returned as is)."""
    if not isinstance(ref, str):
        return ref
    module, _, attr = ref.partition(":")
    obj: Any = import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
