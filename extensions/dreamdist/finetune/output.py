"""The fine-tuned model as a diffusers pipeline folder every consumer loads with plain ``from_pretrained``.

Layout of ``OUT/``::

    model_index.json          the base model's, unchanged (same pipeline class and components)
    unet/                     the fine-tuned UNet: config.json + diffusion_pytorch_model.safetensors
                              (LoRA: the adapters fused into the weights, so no consumer needs peft)
    lora/                     LoRA only: the adapters alone (adapter_model.safetensors, adapter_config.json)
    text_encoder -> BASE/text_encoder   every other component: a symbolic link to the base model's
    tokenizer    -> BASE/tokenizer      folder (a local folder, or the hub id's snapshot in the
    vae, scheduler, ...                 Hugging Face cache), never a copy
    dreamdist_finetune.json   how it was made: base model, distribution file and its sha256, settings
    README.md                 how to use it

The text encoder is the base model's own (a link), so a distribution's fingerprint check passes
with ``--model OUT``. The folder is built under a hidden temporary name beside ``OUT`` and renamed
into place only when complete: a crash leaves no half folder at ``OUT``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch

from dreamdist.utils.atomic import follow_umask
from dreamdist.utils.errors import InputError

INFO_NAME = "dreamdist_finetune.json"
UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"
STAGING_PREFIX = ".dreamdist-finetune-"


def base_folder(model: str | os.PathLike) -> Path | None:
    """The local folder that holds ``model``'s components: the folder itself, or the hub id's
    snapshot in the Hugging Face cache (present once ``from_pretrained`` has loaded it); None when
    neither can be found."""
    path = Path(model)
    if path.is_dir():
        return path.resolve()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(model), local_files_only=True)).resolve()
    except Exception:  # noqa: BLE001 - not cached, offline, not a hub id: the caller copies instead
        return None


def _components(model_index: Mapping[str, Any]) -> list[str]:
    """The component folders a ``model_index.json`` names (entries with a library and a class)."""
    return [
        name
        for name, value in model_index.items()
        if not name.startswith("_")
        and isinstance(value, list)
        and len(value) == 2
        and value[0] is not None
        and value[1] is not None
    ]


def unet_state_for_saving(unet: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The UNet's weights under diffusers' own names, on the CPU: LoRA adapters (peft layers) fused
    into their base weights, the adapters' own tensors left out."""
    fused = fused_lora(unet)
    with fused:
        state = {}
        for name, tensor in unet.state_dict().items():
            if ".lora_" in name or "lora_magnitude" in name:
                continue
            state[name.replace(".base_layer.", ".")] = tensor.detach().to("cpu", torch.float32).contiguous().clone()
    return state


@contextlib.contextmanager
def fused_lora(unet: torch.nn.Module) -> Iterator[None]:
    """peft LoRA layers merged into their base weights for the block, unmerged after."""
    layers = [m for m in unet.modules() if hasattr(m, "merge") and hasattr(m, "unmerge") and hasattr(m, "lora_A")]
    for layer in layers:
        layer.merge()
    try:
        yield
    finally:
        for layer in reversed(layers):
            layer.unmerge()


def write_unet(unet: torch.nn.Module, folder: Path) -> None:
    """``folder/config.json`` + ``folder/diffusion_pytorch_model.safetensors``, as ``save_pretrained``
    writes them, without ever holding a second UNet."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    unet.save_config(str(folder))
    save_file(unet_state_for_saving(unet), str(folder / UNET_WEIGHTS), metadata={"format": "pt"})
    follow_umask(folder / UNET_WEIGHTS)


def write_lora(unet: torch.nn.Module, folder: Path, config: Any) -> None:
    """The LoRA adapters alone, as peft writes them (``adapter_model.safetensors`` + ``adapter_config.json``)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in get_peft_model_state_dict(unet).items()}
    save_file(state, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    follow_umask(folder / "adapter_model.safetensors")
    data = config.to_dict()
    data = {k: sorted(v) if isinstance(v, set) else v for k, v in data.items()}
    (folder / "adapter_config.json").write_text(json.dumps(data, indent=2, default=str) + "\n")


def _readme(info: Mapping[str, Any], out_name: str) -> str:
    return f"""# {out_name}: a dreamdist stage-2 fine-tuned model

Base model: `{info["base_model"]}`; fine-tuned UNet ({info["settings"]["method"]}, {info["steps_done"]} steps)
on the images of `{info["references"]}`, conditioned on samples of `{info["distribution"]}`.
Every part but `unet/` is a link to the base model's own folder.

- 2D: `dreamdist sample {info["distribution"]} --model {out_name}`
- Python: `StableDiffusionPipeline.from_pretrained("{out_name}")`
- threestudio SDS: `system.guidance.pretrained_model_name_or_path=/abs/path/{out_name}`
  (`stable-diffusion-guidance`; MVDream's guidance has its own multi-view UNet and cannot take this one)
"""


def write_pipeline_folder(
    out: Path,
    base: str,
    unet: torch.nn.Module,
    info: Mapping[str, Any],
    lora_config: Any = None,
    pipe: Any = None,
    overwrite: bool = False,
) -> Path:
    """Write the pipeline folder ``out`` atomically (see the module doc). ``pipe``: the loaded base
    pipeline, to save its parts from when ``base`` has no local folder to link to (a copy, said in
    ``dreamdist_finetune.json``)."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(f"{out} exists; pass --force to replace it, or choose another --out")
    source = base_folder(base)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp makes 0700; the folder should follow the user's umask
    try:
        write_unet(unet, staging / "unet")
        if lora_config is not None:
            write_lora(unet, staging / "lora", lora_config)
        linked: dict[str, str] = {}
        if source is not None and (source / "model_index.json").is_file():
            model_index = json.loads((source / "model_index.json").read_text())
            for name in _components(model_index):
                if name == "unet":
                    continue
                target = (source / name).resolve()
                if target.is_dir():
                    os.symlink(target, staging / name, target_is_directory=True)
                    linked[name] = str(target)
            shutil.copyfile(source / "model_index.json", staging / "model_index.json")
        elif pipe is not None:  # no folder to link to: save the parts (the only copy this writer makes)
            for name, component in pipe.components.items():
                if name != "unet" and component is not None and hasattr(component, "save_pretrained"):
                    component.save_pretrained(str(staging / name))
            pipe.save_config(str(staging))
        else:
            raise InputError(f"cannot find the files of base model {base!r} to link to; give a local model folder")
        record = dict(info, linked=linked, copied=not linked)
        (staging / INFO_NAME).write_text(json.dumps(record, indent=2, default=str) + "\n")
        (staging / "README.md").write_text(_readme(record, out.name))
        if out.exists():  # --force: the old folder goes only once the new one is complete
            old = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}old.", dir=out.parent))
            os.replace(out, old / "x")
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out


def read_info(folder: str | os.PathLike) -> dict[str, Any] | None:
    """``dreamdist_finetune.json`` of a fine-tuned folder, or None for any other model."""
    path = Path(folder) / INFO_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
