"""An upscaler whose pixels are computed by a Triton server running ``metasr-serve``.

:class:`RemoteUpscaler` has the surface of :class:`~metasr.runtime.Upscaler` that
``metasr-run`` and ``metasr-stream`` use (``upscale``, ``check_scale``, ``scale_range``,
``model_id``, ``model_name``, ``describe()``), so ``--server HOST:PORT`` changes where the
pixels are computed and nothing else: the same checks run here before a byte is sent, and the
model id the server reports (the one a local ``Upscaler`` computes from the same export) is what
derived DICOMs record. Requests go over gRPC (``tritonclient``, extra ``[client]`` or
``[serve]``); a server that cannot be reached or is lost raises :class:`ServerError`, one line.

The wire contract is :mod:`metasr.serve.protocol`'s (restated here: runtime does not import serve).
"""

from __future__ import annotations

import re
import threading
from fractions import Fraction
from numbers import Real
from typing import Any

import numpy as np

from metasr.core.cli import one_line
from metasr.core.deps import require
from metasr.core.errors import InputError, MetaSRError, ServerError
from metasr.core.scale import Scale
from metasr.runtime.upscaler import check_image, check_model_scale, output_shape

__all__ = ["RemoteUpscaler", "parse_server_address"]

_MODEL = "metasr"
_HOST_PORT = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9._-]+)):(?P<port>[0-9]{1,5})")
# tritonclient's own channel options (messages up to 2 GiB), and a subchannel of this client's own: gRPC
# otherwise shares connections per address within a process, and a new client would inherit the
# back-off of one whose server went away (a restarted server looked unreachable for seconds).
_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.use_local_subchannel_pool", 1),
]
#: Seconds one request may take before the server counts as lost.
DEFAULT_TIMEOUT_S = 300.0


def parse_server_address(text: str) -> str:
    """``HOST:PORT`` (``[::1]:8001`` for IPv6) of a server's gRPC endpoint, checked; returns it as given."""
    stripped = text.strip()
    m = _HOST_PORT.fullmatch(stripped) if len(stripped) <= 300 else None
    if m is None or not 1 <= int(m["port"]) <= 65535:
        raise InputError(
            f"--server must be HOST:PORT of a metasr-serve gRPC endpoint (e.g. 127.0.0.1:8001), got {text[:60]!r}"
        )
    return stripped


class RemoteUpscaler:
    """Super-resolve through a Triton server that serves the ``metasr`` model.

    Args:
        address: ``HOST:PORT`` of the server's gRPC endpoint (``metasr-serve`` prints it).
        timeout_s: Longest wait for one request (a server silent longer counts as lost).

    Raises:
        DependencyError: ``tritonclient`` is not installed.
        ServerError: the server cannot be reached, is not ready, or does not serve ``metasr``.

    Thread-safe (gRPC channels are).
    """

    def __init__(self, address: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.address = parse_server_address(address)
        self.timeout_s = float(timeout_s)
        self._grpc = require("tritonclient.grpc", "--server (a Triton server)", "client")
        self._lock = threading.Lock()
        try:
            self._client = self._grpc.InferenceServerClient(self.address, channel_args=_CHANNEL_ARGS)
            ready = self._client.is_model_ready(_MODEL, client_timeout=min(self.timeout_s, 10.0))
            config = self._client.get_model_config(_MODEL, as_json=True, client_timeout=10.0)["config"]
        except Exception as e:  # noqa: BLE001 - grpc and tritonclient raise many types: one line
            raise self._lost(e, "cannot reach") from None
        if not ready:
            raise ServerError(f"the server at {self.address} has no ready model {_MODEL!r}; is it metasr-serve?")
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        if "model_id" not in params:
            raise ServerError(f"the model {_MODEL!r} at {self.address} is not a metasr model (no model_id parameter)")
        #: Provenance id of the served export (what a local ``Upscaler`` on it reports).
        self.model_id: str = params["model_id"]
        self.model_name: str = params.get("model_name") or _MODEL
        self.arch: str = params.get("arch", "unknown")
        self.fixed_scale: int | None = int(params["fixed_scale"]) if params.get("fixed_scale") else None
        self.scale_range: tuple[float, float] = (float(params["scale_min"]), float(params["scale_max"]))
        self.max_batch = max(1, int(config.get("max_batch_size") or 1))
        self.server_device = params.get("device", "?")
        self.server_precision = params.get("precision", "?")
        groups = config.get("instance_group") or [{}]
        self.instances = sum(int(g.get("count", 1)) for g in groups)

    def _lost(self, e: Exception, verb: str = "lost") -> ServerError:
        text = one_line(getattr(e, "message", lambda: None)() or str(e))
        if "failed to connect" in text or "UNAVAILABLE" in text or "Connection refused" in text:
            return ServerError(
                f"{verb} the metasr server at {self.address}: no connection ({text[:200]}); "
                f"is metasr-serve running there (its gRPC port)?"
            )
        if "DEADLINE_EXCEEDED" in text or "Deadline" in text:
            return ServerError(f"the metasr server at {self.address} did not answer within {self.timeout_s:g} s")
        return ServerError(f"{verb} the metasr server at {self.address}: {text[:300]}")

    def check_scale(self, scale: str | Real | Fraction | Scale, *, allow_extrapolation: bool = False) -> Scale:
        """As :meth:`metasr.runtime.Upscaler.check_scale`, for the served model."""
        return check_model_scale(
            scale,
            scale_range=self.scale_range,
            fixed_scale=self.fixed_scale,
            model=f"{self.model_name} ({self.arch})",
            allow_extrapolation=allow_extrapolation,
        )

    def upscale(self, image: np.ndarray, scale: str | Real | Fraction | Scale) -> np.ndarray:
        """As :meth:`metasr.runtime.Upscaler.upscale`, computed by the server (the same checks first).

        Raises:
            InputError, ScaleError: as a local ``Upscaler``, before anything is sent.
            ServerError: the server is lost, or refused the request.
        """
        s = self.check_scale(scale, allow_extrapolation=True)
        batch = check_image(image)
        n, h, w = batch.shape
        big_h, big_w = output_shape(h, w, s)
        out = np.empty((n, big_h, big_w), dtype=np.float32)
        text = f"{s.p}/{s.q}".encode()
        for i in range(0, n, self.max_batch):
            out[i : i + self.max_batch] = self._infer(batch[i : i + self.max_batch], text, (big_h, big_w))
        return out if image.ndim == 3 else out[0]

    def _infer(self, batch: np.ndarray, scale_text: bytes, size: tuple[int, int]) -> np.ndarray:
        g = self._grpc
        image = g.InferInput("image", list(batch.shape), "FP32")
        image.set_data_from_numpy(batch)
        scale = g.InferInput("scale", [len(batch), 1], "BYTES")
        scale.set_data_from_numpy(np.full((len(batch), 1), scale_text, dtype=object))
        try:
            result = self._client.infer(
                _MODEL, [image, scale], outputs=[g.InferRequestedOutput("sr")], client_timeout=self.timeout_s
            )
            sr = result.as_numpy("sr")
        except MetaSRError:
            raise
        except Exception as e:  # noqa: BLE001 - one line whatever the transport raised
            text = one_line(getattr(e, "message", lambda: None)() or str(e))
            if "metasr:" in text:  # the server refused this request (bad input): its own words
                reason = text[text.index("metasr:") + 8 :]
                raise ServerError(f"the metasr server refused the request: {reason}") from None
            raise self._lost(e) from None
        want = (len(batch), *size)
        if sr is None or sr.shape != want or sr.dtype != np.float32:
            got = None if sr is None else (sr.shape, sr.dtype)
            raise ServerError(f"the metasr server at {self.address} answered {got}, expected float32 {want}")
        return sr

    def describe(self) -> str:
        """One line like a local ``Upscaler``'s: the model, and where it runs."""
        return (
            f"metasr: model {self.model_name} ({self.model_id[:12]}) on Triton server {self.address} "
            f"({self.server_device}, {self.instances} instance{'s' if self.instances != 1 else ''}), "
            f"{self.server_precision}"
        )

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def __repr__(self) -> str:
        return f"RemoteUpscaler({self.address!r}, model_id={self.model_id[:12]!r})"

    # Attributes a local Upscaler has and callers read (video stats): where the work runs.
    @property
    def providers(self) -> list[str]:
        return [f"triton:{self.address}"]

    @property
    def device(self) -> str:
        return f"triton:{self.address}"

    def pixel_settings(self) -> dict[str, str]:
        """As :meth:`metasr.runtime.Upscaler.pixel_settings`, from the served model's configuration.

        The precision and device the server was started with (its ``config.pbtxt`` parameters),
        so a resume journal never keeps an output made at another arithmetic.
        """
        return {"precision": self.server_precision, "device": f"server {self.server_device}"}

    def __getattr__(self, name: str) -> Any:  # pragma: no cover - a clear error for unsupported attributes
        raise AttributeError(f"RemoteUpscaler has no attribute {name!r} (it runs the model on a server)")
