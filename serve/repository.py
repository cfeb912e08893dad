"""A Triton model repository for metasr: ``config.pbtxt``, ``model.py`` and the export.

Layout written by :func:`write_repository`::

    DIR/metasr/config.pbtxt        Python backend, dynamic batching, instances, parameters
    DIR/metasr/1/model.py          metasr.serve.triton_model (needs metasr in Triton's Python)
    DIR/metasr/1/export/...        the export (manifest.json + graphs), hashes verified on load

Any Triton with the Python backend loads it as it is (``tritonserver --model-repository DIR``),
the NGC container included once ``pip install metasr`` ran in its Python. The whole model (the
feature extractor, the per-scale kernels and the Meta-Upscale stage) runs inside the Python
backend through :class:`~metasr.runtime.Upscaler`, which keeps the scale's kernels cached and
feeds features straight from one ONNX Runtime session to the next. See the README ("Serving")
for why Triton's own onnxruntime backend is not used for the feature extractor.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from metasr.core.choices import Device, Precision
from metasr.core.devicespec import DeviceSpec, parse_device_spec
from metasr.core.errors import InputError, OutputError
from metasr.core.manifest import read_manifest
from metasr.serve.protocol import INPUT_IMAGE, INPUT_SCALE, MAX_BATCH, MODEL_NAME, OUTPUT_SR

__all__ = ["RepositoryOptions", "describe_repository", "model_config_text", "write_repository"]

#: How long the dynamic batcher waits for more requests of the same shape (microseconds).
DEFAULT_QUEUE_DELAY_US = 2000
_MODEL_PY = Path(__file__).with_name("triton_model.py")


@dataclass(frozen=True)
class RepositoryOptions:
    """How the served model runs (the ``metasr-serve`` options that end up in ``config.pbtxt``).

    Args:
        device: ``auto``, ``cpu``, ``cuda[:N]`` or ``tensorrt[:N]`` (as ``metasr-run --device``).
        precision: ``fp32``, ``tf32`` or ``fp16`` (as ``metasr-run --precision``).
        instances: Model instances (each one ``Upscaler``; Triton spreads requests over them).
        threads: CPU threads per instance; None: the CPUs divided among the instances.
        queue_delay_us: Dynamic batching window.
    """

    device: str = "cpu"
    precision: str = "fp32"
    instances: int = 1
    threads: int | None = None
    queue_delay_us: int = DEFAULT_QUEUE_DELAY_US

    def checked(self) -> RepositoryOptions:
        """The same options, validated (raises :class:`InputError`)."""
        parse_device_spec(self.device)
        Precision.parse(self.precision)
        if isinstance(self.instances, bool) or not isinstance(self.instances, int) or not 1 <= self.instances <= 64:
            raise InputError(f"instances must be a whole number from 1 to 64, got {self.instances!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or not 1 <= self.threads <= 1024):
            raise InputError(f"threads must be a whole number from 1 to 1024, got {self.threads!r}")
        if not 0 <= self.queue_delay_us <= 1_000_000:
            raise InputError(f"queue delay must be 0 to 1000000 microseconds, got {self.queue_delay_us!r}")
        return self


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _instance_group(spec: DeviceSpec, count: int) -> str:
    if spec.device is Device.AUTO:  # Triton places the instances: on the GPUs where there are any
        return f"instance_group [ {{ count: {count} kind: KIND_AUTO }} ]"
    if spec.device in (Device.CUDA, Device.TENSORRT):
        return f"instance_group [ {{ count: {count} kind: KIND_GPU gpus: [ {spec.index or 0} ] }} ]"
    return f"instance_group [ {{ count: {count} kind: KIND_CPU }} ]"


def model_config_text(manifest: dict, model_id: str, model_name: str, options: RepositoryOptions) -> str:
    """The ``config.pbtxt`` of the ``metasr`` model (protobuf text of Triton's ``ModelConfig``)."""
    options = options.checked()
    spec = parse_device_spec(options.device)
    threads = options.threads or max(1, (os.cpu_count() or 1) // options.instances)
    fixed = manifest.get("fixed_scale") if manifest.get("kind") == "fixed" else None
    scale_range = manifest.get("scale_range") or ([fixed, fixed] if fixed else [1.1, 4.0])
    parameters = {
        "device": spec.device.value,
        "precision": Precision.parse(options.precision).value,
        "threads": str(threads),
        "model_id": model_id,
        "model_name": model_name,
        "arch": str(manifest.get("arch", "unknown")),
        "scale_min": repr(float(scale_range[0])),
        "scale_max": repr(float(scale_range[1])),
        "fixed_scale": str(fixed or ""),
    }
    params = "\n".join(
        f"parameters {{ key: {_quote(k)} value: {{ string_value: {_quote(v)} }} }}" for k, v in parameters.items()
    )
    return f"""name: "{MODEL_NAME}"
backend: "python"
max_batch_size: {MAX_BATCH}
input [
  {{ name: "{INPUT_IMAGE}" data_type: TYPE_FP32 dims: [ -1, -1 ] }},
  {{ name: "{INPUT_SCALE}" data_type: TYPE_STRING dims: [ 1 ] }}
]
output [
  {{ name: "{OUTPUT_SR}" data_type: TYPE_FP32 dims: [ -1, -1 ] }}
]
dynamic_batching {{ max_queue_delay_microseconds: {options.queue_delay_us} }}
{_instance_group(spec, options.instances)}
{params}
"""


def write_repository(
    dest: str | os.PathLike, model_dir: str | os.PathLike | None = None, options: RepositoryOptions | None = None
) -> Path:
    """Write a Triton model repository serving ``model_dir`` (default: the shipped model) to ``dest``.

    ``dest`` must not exist or be an empty folder. The export is verified (file hashes) before
    anything is written, and copied whole, so the repository does not depend on where metasr
    is installed.

    Returns:
        The path of the written ``config.pbtxt``.

    Raises:
        ModelError: the export is missing or damaged.
        OutputError: ``dest`` exists and is not an empty folder, or cannot be written.
    """
    from metasr.runtime.upscaler import Upscaler

    if model_dir is None:
        from metasr.models import default_model_dir

        model_dir = default_model_dir()
    model_dir = Path(model_dir)
    manifest = read_manifest(model_dir, verify=True)
    model_id = Upscaler.id_of(manifest)
    text = model_config_text(manifest, model_id, model_dir.name, options or RepositoryOptions())
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise OutputError(f"{dest} exists and is not an empty folder; choose a new folder for the model repository")
    version = dest / MODEL_NAME / "1"
    try:
        version.mkdir(parents=True, exist_ok=True)
        export = version / "export"
        export.mkdir()
        for name in ["manifest.json", *manifest["files"]]:
            target = export / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(model_dir / name, target)
        shutil.copyfile(_MODEL_PY, version / "model.py")
        config = dest / MODEL_NAME / "config.pbtxt"
        config.write_text(text, encoding="utf-8")
    except OSError as e:
        raise OutputError(f"cannot write the model repository {dest}: {e.strerror or e}") from None
    return config


_PARAMETER = re.compile(r'parameters \{ key: "(\w+)" value: \{ string_value: "([^"\\]*)" \} \}')
_COUNT = re.compile(r"instance_group \[ \{ count: (\d+)")


def describe_repository(repository: str | os.PathLike) -> str:
    """One line about the metasr model of a repository written by :func:`write_repository`.

    Raises:
        InputError: the repository has no readable ``metasr/config.pbtxt``.
    """
    config = Path(repository) / MODEL_NAME / "config.pbtxt"
    try:
        text = config.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise InputError(
            f"{repository} has no readable {MODEL_NAME}/config.pbtxt; write one with --write-repository"
        ) from None
    params = dict(_PARAMETER.findall(text))
    count = _COUNT.search(text)
    n = int(count.group(1)) if count else 1
    return (
        f"model {params.get('model_name', '?')} ({params.get('model_id', '?')[:12]}) from repository {repository}, "
        f"{params.get('device', '?')}, {params.get('precision', '?')}; {n} instance{'s' if n != 1 else ''}"
    )
