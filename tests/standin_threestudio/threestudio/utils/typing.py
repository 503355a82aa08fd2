"""STAND-IN for threestudio.utils.typing: the same names; tensor annotations are placeholders
(threestudio uses jaxtyping's Float[Tensor, "B 77 768"] etc.)."""

from typing import (  # noqa: F401
    Any,
    Callable,
    Dict,
    Iterable,
    List,
    Literal,
    NamedTuple,
    NewType,
    Optional,
    Sized,
    Tuple,
    Type,
    TypeVar,
    Union,
)

from omegaconf import DictConfig  # noqa: F401
from torch import Tensor  # noqa: F401


class _Annotation:
    def __class_getitem__(cls, item):
        return Tensor


class Float(_Annotation):
    pass


class Int(_Annotation):
    pass


class Bool(_Annotation):
    pass


class Num(_Annotation):
    pass


class Shaped(_Annotation):
    pass


def typechecker(fn):
    return fn
