"""STAND-IN for threestudio.utils.config: the same OmegaConf resolvers, ExperimentConfig fields,
load_config and parse_structured as threestudio v0.2.3."""

import os
import warnings
from dataclasses import dataclass, field
from datetime import datetime

from omegaconf import OmegaConf

from threestudio.utils.typing import *

RESOLVERS = {
    "calc_exp_lr_decay_rate": lambda factor, n: factor ** (1.0 / n),
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "idiv": lambda a, b: a // b,
    "basename": lambda p: os.path.basename(p),
    "rmspace": lambda s, sub: s.replace(" ", sub),
    "tuple2": lambda s: [float(s), float(s)],
    "gt0": lambda s: s > 0,
    "cmaxgt0": lambda s: C_max(s) > 0,
    "not": lambda s: not s,
    "cmaxgt0orcmaxgt0": lambda a, b: C_max(a) > 0 or C_max(b) > 0,
}
with warnings.catch_warnings():  # omegaconf 2.4 deprecates the name threestudio (omegaconf 2.3) uses
    warnings.simplefilter("ignore")
    for _name, _fn in RESOLVERS.items():
        OmegaConf.register_new_resolver(_name, _fn, replace=True)


def C_max(value: Any) -> float:
    if isinstance(value, (int, float)):
        return value
    value = config_to_primitive(value)
    if not isinstance(value, list):
        raise TypeError("Scalar specification only supports list, got", type(value))
    if len(value) >= 6:
        max_value = value[2]
        for i in range(4, len(value), 2):
            max_value = max(max_value, value[i])
        value = [value[0], value[1], max_value, value[3]]
    if len(value) == 3:
        value = [0] + value
    start_step, start_value, end_value, end_step = value
    return max(start_value, end_value)


@dataclass
class ExperimentConfig:
    name: str = "default"
    description: str = ""
    tag: str = ""
    seed: int = 0
    use_timestamp: bool = True
    timestamp: Optional[str] = None
    exp_root_dir: str = "outputs"
    exp_dir: str = "outputs/default"
    trial_name: str = "exp"
    trial_dir: str = "outputs/default/exp"
    n_gpus: int = 1
    resume: Optional[str] = None
    data_type: str = ""
    data: dict = field(default_factory=dict)
    system_type: str = ""
    system: dict = field(default_factory=dict)
    trainer: dict = field(default_factory=dict)
    checkpoint: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.tag and not self.use_timestamp:
            raise ValueError("Either tag is specified or use_timestamp is True.")
        self.trial_name = self.tag
        if self.timestamp is None:
            self.timestamp = datetime.now().strftime("@%Y%m%d-%H%M%S") if self.use_timestamp else ""
        self.trial_name += self.timestamp
        self.exp_dir = os.path.join(self.exp_root_dir, self.name)
        self.trial_dir = os.path.join(self.exp_dir, self.trial_name)
        os.makedirs(self.trial_dir, exist_ok=True)


def load_config(*yamls: str, cli_args: list = [], from_string=False, **kwargs) -> Any:
    confs = [OmegaConf.create(s) for s in yamls] if from_string else [OmegaConf.load(f) for f in yamls]
    cfg = OmegaConf.merge(*confs, OmegaConf.from_cli(cli_args), kwargs)
    OmegaConf.resolve(cfg)
    assert isinstance(cfg, DictConfig)
    return parse_structured(ExperimentConfig, cfg)


def config_to_primitive(config, resolve: bool = True) -> Any:
    return OmegaConf.to_container(config, resolve=resolve)


def parse_structured(fields: Any, cfg: Optional[Union[dict, DictConfig]] = None) -> Any:
    return OmegaConf.structured(fields(**cfg))
