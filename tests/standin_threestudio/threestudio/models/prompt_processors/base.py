"""STAND-IN for threestudio.models.prompt_processors.base (threestudio v0.2.3): DirectionConfig,
PromptProcessorOutput (get_text_embeddings returns cond then uncond; perp-neg), PromptProcessor
(Config fields and defaults, the configure() flow, view directions and their conditions, the stock
text-keyed embedding cache). Prompt debiasing (a BERT model) is not provided."""

import hashlib
import json
import os
from dataclasses import dataclass

import torch

import threestudio
from threestudio.utils.base import BaseObject
from threestudio.utils.misc import barrier, cleanup, get_rank
from threestudio.utils.ops import shifted_cosine_decay, shifted_expotional_decay  # noqa: F401
from threestudio.utils.typing import *


def rank_zero_only(fn):  # pytorch_lightning.utilities.rank_zero.rank_zero_only, single process
    def wrapped(*args, **kwargs):
        if get_rank() == 0:
            return fn(*args, **kwargs)

    return wrapped


def hash_prompt(model: str, prompt: str) -> str:
    return hashlib.md5(f"{model}-{prompt}".encode()).hexdigest()


@dataclass
class DirectionConfig:
    name: str
    prompt: Callable[[str], str]
    negative_prompt: Callable[[str], str]
    condition: Callable[[Float[Tensor, "B"], Float[Tensor, "B"], Float[Tensor, "B"]], Float[Tensor, "B"]]


def shift_azimuth_deg(azimuth: Float[Tensor, "..."]) -> Float[Tensor, "..."]:
    return (azimuth + 180) % 360 - 180


@dataclass
class PromptProcessorOutput:
    text_embeddings: Float[Tensor, "N Nf"]
    uncond_text_embeddings: Float[Tensor, "N Nf"]
    text_embeddings_vd: Float[Tensor, "Nv N Nf"]
    uncond_text_embeddings_vd: Float[Tensor, "Nv N Nf"]
    directions: List[DirectionConfig]
    direction2idx: Dict[str, int]
    use_perp_neg: bool
    perp_neg_f_sb: Tuple[float, float, float]
    perp_neg_f_fsb: Tuple[float, float, float]
    perp_neg_f_fs: Tuple[float, float, float]
    perp_neg_f_sf: Tuple[float, float, float]
    prompt: str
    prompts_vd: List[str]

    def _direction_idx(self, elevation, azimuth, camera_distances):
        # later directions override earlier ones, as in threestudio
        direction_idx = torch.zeros_like(elevation, dtype=torch.long)
        for d in self.directions:
            direction_idx[d.condition(elevation, azimuth, camera_distances)] = self.direction2idx[d.name]
        return direction_idx

    def get_text_embeddings(
        self,
        elevation: Float[Tensor, "B"],
        azimuth: Float[Tensor, "B"],
        camera_distances: Float[Tensor, "B"],
        view_dependent_prompting: bool = True,
    ) -> Float[Tensor, "BB N Nf"]:
        batch_size = elevation.shape[0]
        if view_dependent_prompting:
            direction_idx = self._direction_idx(elevation, azimuth, camera_distances)
            text_embeddings = self.text_embeddings_vd[direction_idx]
            uncond_text_embeddings = self.uncond_text_embeddings_vd[direction_idx]
        else:
            text_embeddings = self.text_embeddings.expand(batch_size, -1, -1)
            uncond_text_embeddings = self.uncond_text_embeddings.expand(batch_size, -1, -1)
        # (cond, uncond), as threestudio returns them
        return torch.cat([text_embeddings, uncond_text_embeddings], dim=0)

    def get_text_embeddings_perp_neg(
        self,
        elevation: Float[Tensor, "B"],
        azimuth: Float[Tensor, "B"],
        camera_distances: Float[Tensor, "B"],
        view_dependent_prompting: bool = True,
    ) -> Tuple[Float[Tensor, "BBBB N Nf"], Float[Tensor, "B 2"]]:
        assert view_dependent_prompting, "Perp-Neg only works with view-dependent prompting"
        batch_size = elevation.shape[0]
        direction_idx = self._direction_idx(elevation, azimuth, camera_distances)
        side_emb, front_emb, back_emb, overhead_emb = (self.text_embeddings_vd[i] for i in range(4))
        pos, neg, weights, uncond = [], [], [], []
        for idx, azi in zip(direction_idx, azimuth):
            azi = shift_azimuth_deg(azi)
            uncond.append(self.uncond_text_embeddings_vd[idx])
            if idx.item() == 3:
                pos.append(overhead_emb)
                neg += [self.uncond_text_embeddings_vd[idx]] * 2
                weights += [0.0, 0.0]
            elif torch.abs(azi) < 90:
                r = 1 - torch.abs(azi) / 90
                pos.append(r * front_emb + (1 - r) * side_emb)
                neg += [front_emb, side_emb]
                weights += [
                    -shifted_expotional_decay(*self.perp_neg_f_fs, r),
                    -shifted_expotional_decay(*self.perp_neg_f_sf, 1 - r),
                ]
            else:
                r = 2.0 - torch.abs(azi) / 90
                pos.append(r * side_emb + (1 - r) * back_emb)
                neg += [side_emb, front_emb]
                weights += [
                    -shifted_expotional_decay(*self.perp_neg_f_sb, r),
                    -shifted_expotional_decay(*self.perp_neg_f_fsb, r),
                ]
        text_embeddings = torch.cat([torch.stack(pos), torch.stack(uncond), torch.stack(neg)], dim=0)
        return text_embeddings, torch.as_tensor(weights, device=elevation.device).reshape(batch_size, 2)


class PromptProcessor(BaseObject):
    @dataclass
    class Config(BaseObject.Config):
        prompt: str = "a hamburger"
        prompt_front: Optional[str] = None
        prompt_side: Optional[str] = None
        prompt_back: Optional[str] = None
        prompt_overhead: Optional[str] = None
        negative_prompt: str = ""
        pretrained_model_name_or_path: str = "runwayml/stable-diffusion-v1-5"
        overhead_threshold: float = 60.0
        front_threshold: float = 45.0
        back_threshold: float = 45.0
        view_dependent_prompt_front: bool = False
        use_cache: bool = True
        spawn: bool = True
        use_perp_neg: bool = False
        perp_neg_f_sb: Tuple[float, float, float] = (1, 0.5, -0.606)
        perp_neg_f_fsb: Tuple[float, float, float] = (1, 0.5, +0.967)
        perp_neg_f_fs: Tuple[float, float, float] = (4, 0.5, -2.426)
        perp_neg_f_sf: Tuple[float, float, float] = (4, 0.5, -2.426)
        use_prompt_debiasing: bool = False
        pretrained_model_name_or_path_prompt_debiasing: str = "bert-base-uncased"
        prompt_debiasing_mask_ids: Optional[List[int]] = None

    cfg: Config

    def configure_text_encoder(self) -> None:
        raise NotImplementedError

    def destroy_text_encoder(self) -> None:
        raise NotImplementedError

    def _directions(self) -> List[DirectionConfig]:
        cfg = self.cfg

        def front(ele, azi, dis):
            return (shift_azimuth_deg(azi) > -cfg.front_threshold) & (shift_azimuth_deg(azi) < cfg.front_threshold)

        def back(ele, azi, dis):
            return (shift_azimuth_deg(azi) > 180 - cfg.back_threshold) | (
                shift_azimuth_deg(azi) < -180 + cfg.back_threshold
            )

        def side(ele, azi, dis):
            return torch.ones_like(ele, dtype=torch.bool)

        def overhead(ele, azi, dis):
            return ele > cfg.overhead_threshold

        if cfg.view_dependent_prompt_front:
            texts = ("side view of {}", "front view of {}", "backside view of {}", "overhead view of {}")
        else:
            texts = ("{}, side view", "{}, front view", "{}, back view", "{}, overhead view")
        names, conds = ("side", "front", "back", "overhead"), (side, front, back, overhead)
        return [
            DirectionConfig(name, (lambda s, t=text: t.format(s)), (lambda s: s), cond)
            for name, text, cond in zip(names, texts, conds)
        ]

    def configure(self) -> None:
        self._cache_dir = ".threestudio_cache/text_embeddings"
        self.directions = self._directions()
        self.direction2idx = {d.name: i for i, d in enumerate(self.directions)}
        if os.path.exists("load/prompt_library.json"):
            with open("load/prompt_library.json") as f:
                self.prompt_library = json.load(f)
        else:
            self.prompt_library = {}
        self.prompt = self.preprocess_prompt(self.cfg.prompt)
        self.negative_prompt = self.cfg.negative_prompt
        threestudio.info(f"Using prompt [{self.prompt}] and negative prompt [{self.negative_prompt}]")
        if self.cfg.use_prompt_debiasing:
            prompts = self.get_debiased_prompt(self.prompt)
            self.prompts_vd = [d.prompt(p) for d, p in zip(self.directions, prompts)]
        else:
            self.prompts_vd = [self.cfg.get(f"prompt_{d.name}", None) or d.prompt(self.prompt) for d in self.directions]
        self.negative_prompts_vd = [d.negative_prompt(self.negative_prompt) for d in self.directions]
        self.prepare_text_embeddings()
        self.load_text_embeddings()

    @staticmethod
    def spawn_func(pretrained_model_name_or_path, prompts, cache_dir):
        raise NotImplementedError

    @rank_zero_only
    def prepare_text_embeddings(self):
        # the stock path: encode texts (in a spawned process when cfg.spawn) into a cache keyed by
        # md5(model + prompt text)
        os.makedirs(self._cache_dir, exist_ok=True)
        all_prompts = [self.prompt, self.negative_prompt] + self.prompts_vd + self.negative_prompts_vd
        todo = [
            p
            for p in all_prompts
            if not (
                self.cfg.use_cache
                and os.path.exists(
                    os.path.join(self._cache_dir, f"{hash_prompt(self.cfg.pretrained_model_name_or_path, p)}.pt")
                )
            )
        ]
        if todo:
            self.spawn_func(self.cfg.pretrained_model_name_or_path, todo, self._cache_dir)
            cleanup()

    def load_text_embeddings(self):
        barrier()
        self.text_embeddings = self.load_from_cache(self.prompt)[None, ...]
        self.uncond_text_embeddings = self.load_from_cache(self.negative_prompt)[None, ...]
        self.text_embeddings_vd = torch.stack([self.load_from_cache(p) for p in self.prompts_vd], dim=0)
        self.uncond_text_embeddings_vd = torch.stack([self.load_from_cache(p) for p in self.negative_prompts_vd], dim=0)

    def load_from_cache(self, prompt):
        path = os.path.join(self._cache_dir, f"{hash_prompt(self.cfg.pretrained_model_name_or_path, prompt)}.pt")
        if not os.path.exists(path):
            raise FileNotFoundError(f"Text embedding file {path} for prompt [{prompt}] not found.")
        return torch.load(path, map_location=self.device)

    def preprocess_prompt(self, prompt: str) -> str:
        if prompt.startswith("lib:"):
            keywords = prompt[4:].lower().split("_")
            matches = [p for p in self.prompt_library.get("dreamfusion", []) if all(k in p.lower() for k in keywords)]
            if len(matches) != 1:
                raise ValueError(f"Cannot find exactly one prompt with keywords {keywords} in library")
            return matches[0]
        return prompt

    def get_text_embeddings(
        self, prompt: Union[str, List[str]], negative_prompt: Union[str, List[str]]
    ) -> Tuple[Float[Tensor, "B ..."], Float[Tensor, "B ..."]]:
        raise NotImplementedError

    def get_debiased_prompt(self, prompt: str) -> List[str]:
        raise NotImplementedError("stand-in: prompt debiasing needs a BERT model and is not provided")

    def __call__(self) -> PromptProcessorOutput:
        return PromptProcessorOutput(
            text_embeddings=self.text_embeddings,
            uncond_text_embeddings=self.uncond_text_embeddings,
            prompt=self.prompt,
            text_embeddings_vd=self.text_embeddings_vd,
            uncond_text_embeddings_vd=self.uncond_text_embeddings_vd,
            prompts_vd=self.prompts_vd,
            directions=self.directions,
            direction2idx=self.direction2idx,
            use_perp_neg=self.cfg.use_perp_neg,
            perp_neg_f_sb=self.cfg.perp_neg_f_sb,
            perp_neg_f_fsb=self.cfg.perp_neg_f_fsb,
            perp_neg_f_fs=self.cfg.perp_neg_f_fs,
            perp_neg_f_sf=self.cfg.perp_neg_f_sf,
        )
