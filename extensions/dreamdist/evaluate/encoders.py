"""Image -> feature vector encoders for ``dreamdist evaluate``: one per feature space.

- ``inception``: Inception-v3 pool3 features (2048-d), the FID network, as ``torch-fidelity``
  implements it (TensorFlow's 2015-12-05 FID graph converted to PyTorch, TF1-exact bilinear resize to
  299 px; torchmetrics' FID uses the same). Optional dependency: ``pip install "dreamdist[evaluate]"``.
  Weights: torch-fidelity downloads them on first use, or ``--inception-weights FILE``.
- ``clip``: a CLIP image tower, ``CLIPVisionModelWithProjection`` -> ``image_embeds`` (the projected
  embedding CLIP compares with text), preprocessed by the checkpoint's own image processor.
- ``dino``: a DINO ViT, ``ViTModel`` -> the [CLS] token of the last layer (after the final layer
  norm), as the DINO authors' feature extractor returns it; preprocessed by the checkpoint's processor.

CLIP and DINO come from the Hugging Face hub by id (downloaded once into the hub cache) or from a
local folder: the same ``from_pretrained`` path the tests use with tiny random-weight models.
Every encoder returns float64 numpy arrays, one row per image, in the order of the paths given.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from dreamdist.utils.errors import InputError
from dreamdist.utils.images import open_image

SPACES = ("inception", "clip", "dino")
DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
DEFAULT_DINO_MODEL = "facebook/dino-vits16"
INCEPTION_NAME = "inception-v3-compat"  # torch-fidelity's name for the FID Inception
EVALUATE_EXTRA = 'pip install "dreamdist[evaluate]"'


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


class Encoder:
    """Base: ``embed(paths)`` -> (len(paths), dim) float64. Subclasses implement ``_embed_batch``."""

    space: str = ""
    description: str = ""

    def __init__(self, device: torch.device | None = None, batch_size: int = 32):
        self.device = device or torch.device("cpu")
        self.batch_size = max(1, int(batch_size))

    def _batches(self, paths: Sequence[Path]) -> Iterable[list[Path]]:
        for start in range(0, len(paths), self.batch_size):
            yield list(paths[start : start + self.batch_size])

    def _embed_batch(self, paths: list[Path]) -> np.ndarray:
        raise NotImplementedError

    @torch.no_grad()
    def embed(self, paths: Sequence[str | os.PathLike], progress: bool = True, desc: str = "") -> np.ndarray:
        from tqdm.auto import tqdm

        paths = [Path(p) for p in paths]
        bar = tqdm(
            total=len(paths),
            unit="img",
            desc=f"{self.space}: {desc}" if desc else self.space,
            disable=None if progress else True,
            leave=False,
            dynamic_ncols=True,
        )
        rows = []
        try:
            for batch in self._batches(paths):
                rows.append(np.asarray(self._embed_batch(batch), dtype=np.float64))
                bar.update(len(batch))
        finally:
            bar.close()
        return np.concatenate(rows) if rows else np.zeros((0, 0))


class HubImageEncoder(Encoder):
    """CLIP (``image_embeds``) or DINO ViT ([CLS]) from a hub id or a local folder."""

    def __init__(self, space: str, model: str | os.PathLike, device: torch.device | None = None, batch_size: int = 32):
        super().__init__(device, batch_size)
        if space not in ("clip", "dino"):
            raise ValueError(f"unknown hub encoder space {space!r}")
        from transformers import AutoImageProcessor

        self.space = space
        self.model_id = str(model)
        flag = "--clip-model" if space == "clip" else "--dino-model"
        try:
            if space == "clip":
                from transformers import CLIPVisionModelWithProjection

                self.model = CLIPVisionModelWithProjection.from_pretrained(self.model_id)
            else:
                from transformers import ViTModel

                self.model = ViTModel.from_pretrained(self.model_id, add_pooling_layer=False)
            self.processor = AutoImageProcessor.from_pretrained(self.model_id)
        except (OSError, ValueError, EnvironmentError) as exc:
            raise InputError(
                f"{flag} {self.model_id}: could not load it ({_first_line(exc)}); give a hub id "
                f"or a local folder with the model and its preprocessor_config.json"
            ) from None
        self.model.to(self.device).eval()
        self.description = f"{self.model_id} ({'image_embeds' if space == 'clip' else '[CLS] token'})"

    def _embed_batch(self, paths: list[Path]) -> np.ndarray:
        images = [open_image(p) for p in paths]
        pixels = self.processor(images=images, return_tensors="pt")["pixel_values"].to(self.device)
        for image in images:
            image.close()
        out = self.model(pixel_values=pixels)
        feats = out.image_embeds if self.space == "clip" else out.last_hidden_state[:, 0]
        return feats.double().cpu().numpy()


class InceptionEncoder(Encoder):
    """FID's Inception-v3 pool3 (2048-d) through torch-fidelity. Images go in as 8-bit RGB at their
    own size; the network resizes them to 299 px itself (TF1-exact bilinear), as torch-fidelity and
    torchmetrics do."""

    space = "inception"

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        device: torch.device | None = None,
        batch_size: int = 32,
        extractor_class: Callable | None = None,
    ):
        super().__init__(device, batch_size)
        if extractor_class is None:
            try:
                from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
            except ImportError:
                raise InputError(
                    f"FID (and density/coverage on Inception features) need torch-fidelity's Inception-v3: "
                    f"{EVALUATE_EXTRA}; or pick other metrics/features, e.g. --metrics clip-i dino density "
                    "coverage --dc-features clip"
                ) from None
            except Exception as exc:  # noqa: BLE001 - e.g. a torchvision built for another torch
                raise InputError(
                    f"torch-fidelity is installed but does not import ({_first_line(exc)}); its "
                    "torchvision must be the build that matches your torch"
                ) from None
            extractor_class = FeatureExtractorInceptionV3
        if weights is not None and not Path(weights).is_file():
            raise InputError(f"--inception-weights {weights}: no such file")
        try:
            self.model = extractor_class(
                INCEPTION_NAME, ["2048"], feature_extractor_weights_path=None if weights is None else str(weights)
            )
        except (OSError, RuntimeError) as exc:  # no network / corrupt file
            source = f"--inception-weights {weights}" if weights else "torch-fidelity's Inception weights"
            raise InputError(
                f"could not load {source} ({_first_line(exc)}); on an offline machine download "
                "them once elsewhere and pass the file with --inception-weights"
            ) from None
        self.model.to(self.device).eval()
        self.description = (
            f"Inception-v3 pool3, 2048-d (torch-fidelity {'weights ' + str(weights) if weights else 'FID weights'})"
        )

    def _batches(self, paths: Sequence[Path]) -> Iterable[list[Path]]:
        # the network batches tensors, so one batch holds images of one size (usually all of them)
        batch: list[Path] = []
        size = None
        for path in paths:
            with open_image(path) as image:
                this = image.size
            if batch and (this != size or len(batch) == self.batch_size):
                yield batch
                batch = []
            batch.append(path)
            size = this
        if batch:
            yield batch

    def _embed_batch(self, paths: list[Path]) -> np.ndarray:
        arrays = []
        for p in paths:
            with open_image(p) as image:
                arrays.append(np.asarray(image, dtype=np.uint8))
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous().to(self.device)
        (feats,) = self.model(x)
        return feats.double().cpu().numpy()


def load_encoder(
    space: str,
    *,
    clip_model: str | os.PathLike = DEFAULT_CLIP_MODEL,
    dino_model: str | os.PathLike = DEFAULT_DINO_MODEL,
    inception_weights: str | os.PathLike | None = None,
    device: torch.device | None = None,
    batch_size: int = 32,
) -> Encoder:
    """The encoder of one feature space (see the module doc)."""
    if space == "inception":
        return InceptionEncoder(inception_weights, device, batch_size)
    if space == "clip":
        return HubImageEncoder("clip", clip_model, device, batch_size)
    if space == "dino":
        return HubImageEncoder("dino", dino_model, device, batch_size)
    raise InputError(f"unknown feature space {space!r}; choose from {', '.join(SPACES)}")
