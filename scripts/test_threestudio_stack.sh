#!/usr/bin/env bash
# The second test lane: dreamdist inside a threestudio user's environment.
#
# Builds ./.venv-threestudio afresh with threestudio's pinned stack (tests/threestudio_stack.txt; pip's
# cache makes later runs fast), installs dreamdist the way a threestudio user does
# (scripts/install_threestudio_extension.py into a stand-in threestudio checkout), checks that no
# installed package was upgraded, downgraded or removed, runs the core, train, sample and extension
# tests there, then uninstalls and checks that the environment is exactly as before.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-threestudio
PY="$VENV/bin/python"
rm -rf "$VENV"
python3 -m venv "$VENV"
echo "threestudio stack: installing the pinned packages (tests/threestudio_stack.txt)"
"$PY" -m pip install --disable-pip-version-check -q -r tests/threestudio_stack.txt

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ts="$work/threestudio"  # a stand-in checkout: what the installer needs (launch.py, threestudio/, custom/, configs/)
mkdir -p "$ts/custom" "$ts/configs"
cp -r tests/standin_threestudio/threestudio "$ts/threestudio"
cp tests/standin_threestudio_launch/launch.py tests/standin_threestudio_launch/mesh_exporter.py "$ts/"

"$PY" -m pip freeze --all --exclude-editable | sort > "$work/before.txt"
"$PY" scripts/install_threestudio_extension.py "$ts" --dry-run
"$PY" scripts/install_threestudio_extension.py "$ts"
"$PY" -m pip freeze --all --exclude-editable | sort > "$work/after.txt"
changed=$(comm -23 "$work/before.txt" "$work/after.txt")
if [[ -n "$changed" ]]; then
  echo "threestudio stack: FAILED: the installer changed installed packages:"; echo "$changed"; exit 1
fi
echo "threestudio stack: installed packages unchanged; added: $(comm -13 "$work/before.txt" "$work/after.txt" | tr '\n' ' ')"

"$PY" -m pytest -q -p no:cacheprovider tests/test_encoder.py tests/test_distfile.py tests/test_gaussian.py \
  tests/test_distribution.py tests/test_cli_core.py tests/test_images.py tests/test_train.py tests/test_losses.py \
  tests/test_memory.py tests/test_losscurve.py tests/test_sample.py tests/test_views.py tests/test_api.py \
  tests/test_finetune.py tests/test_evaluate.py tests/test_threestudio_extension.py tests/test_configs.py \
  tests/test_installer.py

"$PY" scripts/install_threestudio_extension.py "$ts" --uninstall
"$PY" -m pip freeze --all --exclude-editable | sort > "$work/undone.txt"
if ! diff -u "$work/before.txt" "$work/undone.txt"; then
  echo "threestudio stack: FAILED: --uninstall left the environment different"; exit 1
fi
echo "threestudio stack: passed (install kept every package, tests passed, uninstall restored the environment)"
