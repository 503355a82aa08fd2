"""STAND-IN for threestudio.utils.base: Configurable / Updateable / BaseObject with the same
constructor contract (parse the dataclass Config, set self.device, call configure())."""

from dataclasses import dataclass

from threestudio.utils.config import parse_structured
from threestudio.utils.misc import get_device
from threestudio.utils.typing import *


class Configurable:
    @dataclass
    class Config:
        pass

    def __init__(self, cfg: Optional[dict] = None) -> None:
        super().__init__()
        self.cfg = parse_structured(self.Config, cfg)


class Updateable:
    def do_update_step(self, epoch: int, global_step: int, on_load_weights: bool = False):
        self.update_step(epoch, global_step, on_load_weights=on_load_weights)

    def update_step(self, epoch: int, global_step: int, on_load_weights: bool = False):
        pass


class BaseObject(Updateable):
    @dataclass
    class Config:
        pass

    cfg: Config

    def __init__(self, cfg: Optional[Union[dict, DictConfig]] = None, *args, **kwargs) -> None:
        super().__init__()
        self.cfg = parse_structured(self.Config, cfg)
        self.device = get_device()
        self.configure(*args, **kwargs)

    def configure(self, *args, **kwargs) -> None:
        pass
