"""STAND-IN for threestudio (tests only; see ../README.md). Mirrors threestudio v0.2.3's registry."""

import logging

__modules__ = {}
__version__ = "0.2.3"
__standin__ = True


def register(name):
    def decorator(cls):
        if name in __modules__:
            raise ValueError(f"Module {name} already exists! Names of extensions conflict!")
        __modules__[name] = cls
        return cls

    return decorator


def find(name):
    if ":" in name:
        main_name, sub_name = name.split(":")
        names = sub_name.split(",") + [main_name]
        return type(f"{main_name}.{sub_name}", tuple(__modules__[n] for n in names), {})
    return __modules__[name]


logger = logging.getLogger("pytorch_lightning")
debug = logger.debug
info = logger.info


def warn(*args, **kwargs):
    logger.warning(*args, **kwargs)


from . import models, systems  # noqa: E402,F401
