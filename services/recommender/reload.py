"""Hot model reload: watch the model store, load a newer version off the request path, swap.

Requests call :meth:`ModelHolder.get` once and keep that reference for their whole life, so
a swap never changes the model under a request that is already running: in-flight requests
finish on the old model (which stays alive while they hold it; its memory maps are released
when the last reference goes), new ones see the new one. Rebinding one attribute is atomic
in CPython, so readers take no lock.

The watcher polls the store's ``LATEST`` pointer (a tiny file read) every
``interval_s``. A version that fails to load (a corrupt artifact, a model with a different
shape of files) is logged, counted and remembered so it is not retried in a loop; the old
model keeps serving. Loading includes a warm-up request so the first real request after a
swap does not pay for page faults on the freshly mapped factors.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from recsys.errors import RecsysError
from services.recommender import artifact
from services.recommender.model import Model

log = logging.getLogger(__name__)

Loader = Callable[[Path], Model]


def warm_up(model: Model) -> None:
    """Touch every page of the factors and run the request path once."""
    if model.n_items:
        model.recommend(None, {model.item_ids[0]: 1.0}, k=min(10, model.n_items),
                        with_reasons=False)  # fmt: skip
        model.popular(min(10, model.n_items))


def load_model(path: Path, expansion: int = 200) -> Model:
    # The class the artifact's config names: ALS, or an item-item family (item_model.py).
    from services.recommender import item_model

    model = item_model.load(path, expansion=expansion)
    warm_up(model)
    return model


class ModelHolder:
    """The current model, replaced atomically by :meth:`swap`."""

    def __init__(
        self, model: Model, on_swap: Callable[[Model | None, Model], None] | None = None
    ) -> None:
        self._model = model
        self._on_swap = on_swap
        self._lock = threading.Lock()  # serialises writers only
        if on_swap is not None:
            on_swap(None, model)

    def get(self) -> Model:
        return self._model

    @property
    def version(self) -> str:
        return self._model.version

    def swap(self, model: Model) -> Model:
        """Make ``model`` current; returns the previous one."""
        with self._lock:
            old, self._model = self._model, model
        if self._on_swap is not None:
            self._on_swap(old, model)
        log.info("model swapped", extra={"old_version": old.version, "version": model.version})
        return old


class ModelWatcher:
    """Polls ``store`` and swaps in the version its pointer names when that one is new."""

    def __init__(
        self,
        store: str | Path,
        holder: ModelHolder,
        *,
        interval_s: float = 5.0,
        loader: Loader = load_model,
        on_error: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self.store = Path(store)
        self.holder = holder
        self.interval_s = interval_s
        self.loader = loader
        self.on_error = on_error
        self.failed: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check_once(self) -> bool:
        """Load and swap if the store names a version other than the current; True if swapped."""
        version = artifact.current_version(self.store)
        if version is None or version == self.holder.version or version in self.failed:
            return False
        started = time.perf_counter()
        try:
            model = self.loader(self.store / version)
        except (RecsysError, OSError, ValueError, KeyError) as exc:
            self.failed.add(version)
            log.error("model reload failed; keeping the current model",
                      extra={"version": version, "current": self.holder.version,
                             "error": repr(exc)})  # fmt: skip
            if self.on_error is not None:
                self.on_error(version, exc)
            return False
        self.holder.swap(model)
        log.info(
            "model loaded",
            extra={"version": version, "load_s": round(time.perf_counter() - started, 3)},
        )
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check_once()
            except Exception:  # a watcher that dies silently would freeze the model forever
                log.exception("model watcher iteration failed")

    def start(self) -> None:
        if self.interval_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
