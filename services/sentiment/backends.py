"""Model backends behind one interface: in-process TensorFlow, or TensorFlow Serving.

Both run the same exported SavedModel signature (``serving_default``: string
``text`` -> float ``probabilities`` [n, 3] and ``class_ids`` [n]); they differ
only in where it runs. The in-process backend loads it with
``tf.saved_model.load`` (default: no extra moving part, lowest latency); the
TF Serving backend sends ``PredictRequest``s over gRPC with the stubs from
``tensorflow-serving-api`` (the model lives in a separately scaled
``tensorflow/serving`` deployment and can be rolled without restarting us).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from recsys.errors import ConfigError, InvalidArgumentError, UnavailableError
from services.sentiment.config import SentimentSettings
from services.sentiment.model import (
    INPUT_KEY,
    OUTPUT_PROBABILITIES,
    SIGNATURE_NAME,
    read_metadata,
)

log = logging.getLogger(__name__)

#: A text the backends score once at start, so the first request does not pay
#: for graph warm-up and a broken model fails the start instead of a request.
WARMUP_TEXTS = ("great product, thank you", "质量很差，不推荐")


@runtime_checkable
class Backend(Protocol):
    """Scores raw texts: one row of (negative, neutral, positive) probabilities per text."""

    @property
    def model_version(self) -> str: ...

    @property
    def name(self) -> str: ...

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray: ...

    def close(self) -> None: ...


def _encode(texts: Sequence[str]) -> list[bytes]:
    # The core has already refused unencodable text; "replace" only guards
    # callers that bypass it (benchmarks, evaluation).
    return [t.encode("utf-8", "replace") for t in texts]


def resolve_version_dir(model_dir: Path, version: int = 0) -> tuple[Path, int]:
    """Find the SavedModel to load, the way TF Serving does with ``--model_base_path``.

    ``model_dir`` is either a version directory itself (holds ``saved_model.pb``)
    or a base directory of integer-named versions, of which the newest (or the
    pinned ``version``) is taken. Raises ConfigError saying how to get a model.
    """
    model_dir = Path(model_dir).expanduser()
    if (model_dir / "saved_model.pb").is_file():
        meta = read_metadata(model_dir)
        found = int(meta.get("version", 0)) or (
            int(model_dir.name) if model_dir.name.isdigit() else 0
        )
        if version and found != version:
            raise ConfigError(
                f"{model_dir} holds version {found}, not SENTIMENT_MODEL_VERSION={version}"
            )
        return model_dir, found
    versions = (
        sorted(
            int(p.name)
            for p in model_dir.iterdir()
            if p.is_dir() and p.name.isdigit() and (p / "saved_model.pb").is_file()
        )
        if model_dir.is_dir()
        else []
    )
    if version:
        if version not in versions:
            raise ConfigError(
                f"SENTIMENT_MODEL_VERSION={version} not found in {model_dir} "
                f"(have: {', '.join(map(str, versions)) or 'none'})"
            )
        return model_dir / str(version), version
    if not versions:
        raise ConfigError(
            f"no sentiment model in {model_dir}; train one with `recsys sentiment train` "
            "or set SENTIMENT_MODEL_DIR to a directory of SavedModel versions"
        )
    return model_dir / str(versions[-1]), versions[-1]


class InProcessBackend:
    """Runs the SavedModel's serving signature in this process."""

    name = "inprocess"

    def __init__(self, model_dir: Path, version: int = 0) -> None:
        import tensorflow as tf

        self._tf = tf
        self.path, version = resolve_version_dir(model_dir, version)
        started = time.perf_counter()
        try:
            self._loaded = tf.saved_model.load(str(self.path))
            self._fn = self._loaded.signatures[SIGNATURE_NAME]
        except (OSError, KeyError, ValueError, tf.errors.OpError) as exc:
            raise ConfigError(f"cannot load the sentiment model from {self.path}: {exc}") from None
        self.load_s = time.perf_counter() - started
        self._version = str(version)
        self.metadata = read_metadata(self.path)
        self.predict_proba(list(WARMUP_TEXTS))
        log.info(
            "sentiment model loaded",
            extra={"path": str(self.path), "version": self._version, "load_s": self.load_s},
        )

    @property
    def model_version(self) -> str:
        return self._version

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 3), dtype=np.float32)
        out = self._fn(**{INPUT_KEY: self._tf.constant(_encode(texts), dtype=self._tf.string)})
        return np.asarray(out[OUTPUT_PROBABILITIES].numpy(), dtype=np.float32)

    def close(self) -> None:
        """Nothing to release explicitly; the graph goes with the object."""


def string_tensor_proto(values: Sequence[bytes]) -> Any:
    """A 1-D DT_STRING TensorProto, built field by field (no TF ops needed)."""
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
    proto.tensor_shape.CopyFrom(
        tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(values))]
        )
    )
    proto.string_val.extend(values)
    return proto


def float_matrix(proto: Any) -> np.ndarray:
    """Decode a DT_FLOAT TensorProto (``tensor_content`` or ``float_val``) to a 2-D array."""
    from tensorflow.core.framework import types_pb2

    if proto.dtype != types_pb2.DT_FLOAT:
        raise UnavailableError(f"TF Serving returned dtype {proto.dtype}, expected DT_FLOAT")
    shape = tuple(int(d.size) for d in proto.tensor_shape.dim)
    if proto.tensor_content:
        flat = np.frombuffer(proto.tensor_content, dtype="<f4")
    else:
        flat = np.asarray(proto.float_val, dtype=np.float32)
    if len(shape) != 2 or flat.size != shape[0] * shape[1]:
        raise UnavailableError(
            f"TF Serving returned a tensor of shape {shape} ({flat.size} values)"
        )
    return flat.reshape(shape).astype(np.float32)


class TFServingBackend:
    """Calls ``tensorflow.serving.PredictionService/Predict`` on a TF Serving server."""

    name = "tfserving"

    def __init__(
        self,
        address: str,
        model_name: str,
        signature_name: str = SIGNATURE_NAME,
        *,
        version: int = 0,
        timeout_s: float = 2.0,
        warmup: bool = True,
    ) -> None:
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self._grpc = grpc
        self.address = address
        self.model_name = model_name
        self.signature_name = signature_name
        self.version = version
        self.timeout_s = timeout_s
        self._channel = grpc.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ],
        )
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._version = str(version) if version else "unknown"
        if warmup:
            self.predict_proba(list(WARMUP_TEXTS))

    @property
    def model_version(self) -> str:
        return self._version

    def _request(self, texts: Sequence[str]) -> Any:
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model_name
        request.model_spec.signature_name = self.signature_name
        if self.version:
            request.model_spec.version.value = self.version
        request.inputs[INPUT_KEY].CopyFrom(string_tensor_proto(_encode(texts)))
        request.output_filter.append(OUTPUT_PROBABILITIES)
        return request

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 3), dtype=np.float32)
        grpc = self._grpc
        try:
            response = self._stub.Predict(self._request(texts), timeout=self.timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            detail = exc.details() if hasattr(exc, "details") else str(exc)
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidArgumentError(f"TF Serving rejected the input: {detail}") from None
            raise UnavailableError(
                f"TF Serving at {self.address} (model {self.model_name!r}) failed: "
                f"{code.name if code else 'error'}: {detail}"
            ) from None
        if OUTPUT_PROBABILITIES not in response.outputs:
            raise UnavailableError(
                f"TF Serving response lacks output {OUTPUT_PROBABILITIES!r} "
                f"(signature {self.signature_name!r})"
            )
        probs = float_matrix(response.outputs[OUTPUT_PROBABILITIES])
        if probs.shape != (len(texts), 3):
            raise UnavailableError(
                f"TF Serving returned shape {probs.shape} for {len(texts)} texts"
            )
        if response.model_spec.HasField("version"):
            self._version = str(response.model_spec.version.value)
        return probs

    def close(self) -> None:
        self._channel.close()


def make_backend(settings: SentimentSettings) -> Backend:
    """The backend SENTIMENT_BACKEND names, loaded and warmed up."""
    if settings.backend == "tfserving":
        return TFServingBackend(
            settings.tfserving_address,
            settings.tfserving_model_name,
            settings.tfserving_signature,
            version=settings.model_version,
            timeout_s=settings.tfserving_timeout_s,
        )
    return InProcessBackend(settings.model_dir, settings.model_version)
