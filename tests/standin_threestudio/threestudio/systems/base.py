"""STAND-IN for threestudio.systems.base.BaseSystem: only the save-dir API launch.py uses
(`set_save_dir` is called right after the system is built, before fit/test/predict)."""

import os

from threestudio.utils.typing import *


class BaseSystem:
    def __init__(self, cfg=None, resumed=False) -> None:
        self.cfg = cfg
        self._save_dir: Optional[str] = None
        self._resumed: bool = resumed
        self.configure()

    def configure(self) -> None:
        pass

    def set_save_dir(self, path: str):
        self._save_dir = path

    def get_save_dir(self):
        if self._save_dir is None:
            raise ValueError("Save dir is not set")
        os.makedirs(self._save_dir, exist_ok=True)
        return self._save_dir

    @property
    def resumed(self):
        return self._resumed
