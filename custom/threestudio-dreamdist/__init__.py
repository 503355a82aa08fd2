"""threestudio-dreamdist: sample 3D assets from a learned prompt distribution (DreamDistribution).

Install into a threestudio checkout with `python scripts/install_threestudio_extension.py PATH`
(from the dreamdist repo); launch.py then imports this folder before parsing the config and
`dreamdist-prompt-processor` is available to `system.prompt_processor_type`.
"""

from packaging.version import Version

import threestudio

if hasattr(threestudio, "__version__") and Version(threestudio.__version__) >= Version("0.2.0"):
    pass
else:
    if hasattr(threestudio, "__version__"):
        print(f"[INFO] threestudio version: {threestudio.__version__}")
    raise ValueError(
        "threestudio version must be >= 0.2.0, please update threestudio by pulling the latest version from github"
    )

try:
    import dreamdist  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the user's environment
    raise ImportError(
        "threestudio-dreamdist needs the dreamdist package in this environment: run "
        "`python scripts/install_threestudio_extension.py /path/to/threestudio` from the dreamdist repo "
        "(or `pip install -e /path/to/dreamdist`)"
    ) from exc

from . import prompt_processor, resolvers

resolvers.register_resolvers()
prompt_processor.install_save_dir_hook()
