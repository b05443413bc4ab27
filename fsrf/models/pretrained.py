"""Model folders and the Hugging Face Hub, through ``huggingface_hub``'s ``PyTorchModelHubMixin``.

Every built-in model has ``model.save_pretrained(dir)``, ``Kind.from_pretrained(dir_or_repo_id)``
and ``model.push_to_hub("user/repo")``; :func:`from_pretrained` loads whichever kind a folder or
repo holds. A folder holds:

* ``config.json`` — ``format`` (:data:`FORMAT`), ``fsrf_version`` (of the writer, for the record),
  ``model_kind`` (a key of :data:`fsrf.models.MODEL_KINDS`), ``model_class``, ``model_config`` (the
  keyword arguments of :func:`fsrf.models.build_model` for that kind: the :class:`fsrf.FSRFConfig`
  fields for ``"fsrf"``, the constructor arguments for ``"late_fusion"`` and ``"mult"``),
  ``modality_dims``, ``save_id`` and an optional ``metadata`` dict that nothing reads back;
* ``model.safetensors`` — ``model.state_dict()`` in the `safetensors
  <https://huggingface.co/docs/safetensors>`_ format, its header metadata carrying the same
  ``format``, ``model_kind`` and ``save_id``;
* ``README.md`` — the mixin's model card (``library_name: fsrf``, tags, license, how to load),
  written only where the folder has none; loading never reads it.

**Sharing.** ``model.push_to_hub(repo_id, token=..., private=..., commit_message=...)`` is the
mixin's: it creates the repo if needed, writes the folder with ``save_pretrained`` into a temp
folder and uploads it as one commit. ``from_pretrained("user/repo", revision=..., token=...,
cache_dir=..., local_files_only=...)`` downloads ``config.json`` into the Hugging Face cache, checks
it, then downloads ``model.safetensors`` of the same commit. A ``Path``, or a string naming an
existing path or not of the form ``"namespace/name"``, is a local folder. A folder written with
``metadata`` (``fsrf export`` writes the training run's) is shared as it is with
``huggingface_hub.upload_folder(repo_id=..., folder_path=DIR)``.

**Loading runs no code from the folder or repo.** ``config.json`` is parsed as strict JSON (``NaN``
and ``Infinity`` are refused, and so are duplicate keys); the kind is looked up in the built-in
registry, never imported by name; ``model_config`` reaches the kind's builder as plain JSON
values, which the builder validates like any other argument; the weights are a safetensors file,
never a pickle.

**Writes are atomic and ordered.** Each file is written by :func:`fsrf.runtime.io.atomic_write`
(temp file, fsync, rename; mode ``0o666 & ~umask``): the model card, the weights, and
``config.json`` last. A folder being written for the first time therefore has no ``config.json``
until the weights are complete. When a folder is saved over, a reader may for a moment find the
new weights next to the old ``config.json``; both carry a fresh random ``save_id``, and
:func:`from_pretrained` refuses a pair whose ids differ instead of loading weights into the wrong
configuration.

**What the mixin does and fsrf replaces.** The mixin's ``save_pretrained`` deletes ``config.json``
first and writes it in place (not atomically), so an interrupted save over a folder would leave
it without one; its ``from_pretrained`` reads ``config.json`` with ``json.load`` (``NaN`` and
duplicate keys pass) and passes its keys to the constructor, and its ``_from_pretrained`` falls
back to a pickled ``pytorch_model.bin``. :class:`PretrainedMixin` therefore overrides these
(``save_pretrained``/``_save_pretrained`` and ``from_pretrained``/``_from_pretrained``) with the
checked path above, and keeps the mixin's ``push_to_hub``, model card and Hub metadata.

Tensors that share storage (tied weights) or are not contiguous are written as contiguous copies,
since safetensors stores each tensor once by name.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import huggingface_hub
import torch
from huggingface_hub import PyTorchModelHubMixin
from huggingface_hub.utils import HFValidationError, validate_repo_id
from torch import nn

from fsrf._version import __version__
from fsrf.runtime.io import atomic_write_bytes, atomic_write_text, ensure_dir, remove_stale_temps

__all__ = ["PretrainedMixin", "save_pretrained", "from_pretrained", "read_pretrained_config", "FORMAT",
           "CONFIG_NAME", "WEIGHTS_NAME"]

#: Format tag of a model folder, in ``config.json`` and in the safetensors header.
FORMAT = "fsrf-pretrained-v1"
#: The configuration file of a model folder.
CONFIG_NAME = "config.json"
#: The weights file of a model folder.
WEIGHTS_NAME = "model.safetensors"
_CARD_NAME = "README.md"

_INIT_ARGS = "_fsrf_init_args"
_COMMIT = re.compile(r"[0-9a-f]{40}")
_HUB_OPTIONS = ("revision", "token", "cache_dir", "force_download", "local_files_only")

_CARD = """---
{{ card_data }}
---

# {{ model_class }}

A `{{ model_kind }}` model of the `fsrf` library (incomplete multimodal sentiment analysis) for
the modalities {{ modalities }}, written by `save_pretrained`.

```python
from fsrf.models import from_pretrained
model = from_pretrained("<this repo id or folder>")  # {{ model_class }}, in eval mode
```

Loading runs no code from the repository: `config.json` is plain JSON and the weights are safetensors.
"""


@dataclass(frozen=True)
class _Kind:
    name: str
    cls: type
    build: Callable[..., nn.Module]
    kwargs_of: Callable[[nn.Module], dict[str, Any]] | None


# Filled by fsrf.models for its built-in kinds; a kind is a name here, never an import path.
_KINDS: dict[str, _Kind] = {}


def _register_kind(name: str, cls: type, build: Callable[..., nn.Module],
                   kwargs_of: Callable[[nn.Module], dict[str, Any]] | None = None) -> None:
    """Make ``cls`` savable as ``name``; ``build(dims, **kwargs)`` rebuilds it and ``kwargs_of(model)``
    gives those kwargs (default: the constructor arguments the model was built with)."""
    _KINDS[name] = _Kind(name, cls, build, kwargs_of)


def _kind_of_class(cls: type) -> _Kind | None:
    return next((k for k in _KINDS.values() if k.cls is cls), None)


def _kind_names() -> str:
    return ", ".join(k.cls.__name__ for k in _KINDS.values())


class PretrainedMixin(PyTorchModelHubMixin, library_name="fsrf", license="mit", model_card_template=_CARD,
                      tags=["fsrf", "multimodal-sentiment-analysis", "missing-modalities"]):
    """``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` for the built-in models.

    This class records the arguments each instance is constructed with, so that a model whose
    constructor takes plain values (:class:`fsrf.models.LateFusion`, :class:`fsrf.models.MulT`)
    can be rebuilt from them; :class:`fsrf.FSRFModel` is rebuilt from its :class:`fsrf.FSRFConfig`.
    Only the registered classes themselves can be saved: a subclass may change what the
    constructor or ``forward`` does, which a folder of the base kind could not reproduce.
    """

    def __new__(cls, *args: Any, **kwargs: Any):
        # the Hub mixin's __new__ keeps the JSON-able arguments only, dropping the rest silently: fsrf
        # records all of them, and save_pretrained refuses what JSON would not bring back unchanged
        self = super().__new__(cls, *args, **kwargs)
        if args or kwargs:  # copy / unpickle call __new__ without arguments and restore __dict__
            try:
                bound = inspect.signature(cls.__init__).bind(None, *args, **kwargs)
            except TypeError:
                pass  # __init__ raises the real error for these arguments
            else:
                bound.apply_defaults()
                names = list(bound.arguments)
                object.__setattr__(self, _INIT_ARGS, {n: bound.arguments[n] for n in names[1:]})
        return self

    def save_pretrained(self, directory: str | os.PathLike, *, metadata: Mapping[str, Any] | None = None,
                        model_card_kwargs: Mapping[str, Any] | None = None, config: Any = None) -> Path:
        """Write the model card (if absent), ``model.safetensors`` and ``config.json`` to ``directory``
        (see :func:`save_pretrained`). ``config`` is the Hub mixin's argument (``push_to_hub`` passes
        it on): fsrf derives ``config.json`` from the model, so only ``None`` is accepted."""
        if config is not None:
            raise TypeError("fsrf writes config.json from the model itself; config= is not accepted "
                            "(pass metadata= to save_pretrained for what people and tools should read)")
        return save_pretrained(self, directory, metadata=metadata,  # type: ignore[arg-type]
                               model_card_kwargs=model_card_kwargs)

    def _save_pretrained(self, save_directory: Path) -> None:
        save_pretrained(self, save_directory)  # type: ignore[arg-type]  # the mixin's hook: fsrf's checked writer

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, device: str | torch.device = "cpu",
                        **hub: Any) -> nn.Module:
        """A model of this class from a folder written by :meth:`save_pretrained` or a Hub repo id
        (``"user/repo"``; ``hub`` as in :func:`from_pretrained`), in eval mode.

        Raises ``ValueError`` when the folder holds another kind of model; use
        :func:`fsrf.models.from_pretrained` to load whatever kind a folder holds.
        """
        return cls._from_pretrained(model_id=directory, device=device, **hub)

    @classmethod
    def _from_pretrained(cls, *, model_id: str | os.PathLike, device: str | torch.device = "cpu",
                         **hub: Any) -> nn.Module:
        kind = _kind_of_class(cls)
        if kind is None:
            raise ValueError(f"{cls.__name__}.from_pretrained: {cls.__name__} is not a built-in model kind "
                             f"({_kind_names()}); use fsrf.models.from_pretrained({os.fspath(model_id)!r})")
        return from_pretrained(model_id, device=device, expect=kind.name, **hub)


# ------------------------------------------------------------------------------------------ saving
def _json_ok(value: Any, what: str) -> str:
    try:
        text = json.dumps(value, indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must hold JSON values only (str, int, finite float, bool, None, lists, "
                         f"dicts with str keys); {exc}") from None
    if json.loads(text) != value:  # tuples would come back as lists, int keys as str keys
        raise ValueError(f"{what} does not survive a JSON round trip unchanged (tuples or non-str keys?); "
                         f"got {value!r}")
    return text


def _model_kwargs(model: nn.Module, kind: _Kind) -> dict[str, Any]:
    if kind.kwargs_of is not None:
        return dict(kind.kwargs_of(model))
    init = getattr(model, _INIT_ARGS, None)
    if init is None:
        raise ValueError(f"cannot save this {type(model).__name__}: the arguments it was built with are unknown "
                         f"(it was not constructed by {type(model).__name__}(...) in this fsrf)")
    return {k: v for k, v in init.items() if k != "modality_dims"}


def _modality_dims(model: nn.Module) -> dict[str, int]:
    dims = getattr(model, "modality_dims", None)
    if dims is None:
        dims = getattr(getattr(model, "layer", None), "modality_dims", None)
    if not isinstance(dims, Mapping):
        raise ValueError(f"cannot save this {type(model).__name__}: it has no modality_dims")
    return {str(m): int(d) for m, d in dims.items()}


def _tensors_for_file(model: nn.Module) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        storage = t.untyped_storage()
        whole = (t.is_contiguous() and t.storage_offset() == 0
                 and storage.nbytes() == t.numel() * t.element_size())
        # safetensors refuses two names over one storage and views into a larger one
        if t.numel() and (not whole or storage.data_ptr() in seen):
            t = t.clone(memory_format=torch.contiguous_format)
        if t.numel():
            seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


def save_pretrained(model: nn.Module, directory: str | os.PathLike, *, metadata: Mapping[str, Any] | None = None,
                    model_card_kwargs: Mapping[str, Any] | None = None) -> Path:
    """Write ``model`` (a built-in kind) to the folder ``directory``: a model card ``README.md``
    where there is none (``model_card_kwargs`` fill its template), ``model.safetensors``, then
    ``config.json``, each atomically. The folder is created if needed; other files in it are kept.

    ``metadata`` (JSON values only) is stored under ``"metadata"`` in ``config.json`` for people
    and tools; loading never reads it. Returns the folder.

    Raises ``ValueError`` for a model that is not exactly one of the registered classes, or whose
    configuration is not plain JSON; ``OSError`` (naming the file) when the disk refuses a write.
    """
    from safetensors.torch import save as safetensors_bytes

    kind = _kind_of_class(type(model))
    if kind is None:
        raise ValueError(f"save_pretrained needs a built-in model ({_kind_names()}); got {type(model).__name__}")
    save_id = uuid.uuid4().hex
    dims = _modality_dims(model)
    config = {"format": FORMAT, "fsrf_version": __version__, "model_kind": kind.name,
              "model_class": kind.cls.__name__, "model_config": _model_kwargs(model, kind),
              "modality_dims": dims, "save_id": save_id}
    if metadata is not None:
        if not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping of JSON values; got {type(metadata).__name__}")
        config["metadata"] = dict(metadata)
    text = _json_ok(config, f"the configuration of this {kind.cls.__name__}") + "\n"
    blob = safetensors_bytes(_tensors_for_file(model),
                             metadata={"format": FORMAT, "model_kind": kind.name, "save_id": save_id})
    folder = ensure_dir(directory)
    remove_stale_temps(folder)
    if not (folder / _CARD_NAME).exists():  # like the mixin: a card the user edited is kept
        card = model.generate_model_card(**{"model_kind": kind.name, "model_class": kind.cls.__name__,  # type: ignore[operator]
                                            "modalities": ", ".join(dims), **(model_card_kwargs or {})})
        atomic_write_text(folder / _CARD_NAME, str(card))
    atomic_write_bytes(folder / WEIGHTS_NAME, blob)
    atomic_write_text(folder / CONFIG_NAME, text)
    return folder


# ----------------------------------------------------------------------------------------- loading
def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON value")


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _is_repo_id(name: str | os.PathLike) -> bool:
    # a Path is always a folder; so is a string naming something that exists here, or not "namespace/name"
    if not isinstance(name, str) or name.count("/") != 1 or os.path.exists(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _hub_file(repo_id: str, filename: str, hub: Mapping[str, Any]) -> Path:
    try:
        return Path(huggingface_hub.hf_hub_download(repo_id, filename, **hub))
    except OSError as exc:  # the Hub's errors (not found, offline, HTTP) are all OSErrors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise FileNotFoundError(f"{repo_id!r} is no folder here, and {filename} of the Hub model repo {repo_id!r} "
                                f"cannot be had: {type(exc).__name__}: {first}") from exc


def _locate(name: str | os.PathLike, hub: Mapping[str, Any]) -> tuple[Path, Callable[[], Path]]:
    """The ``config.json`` of a folder or a Hub repo, and how to get the weights next to it."""
    unknown = sorted(set(hub) - set(_HUB_OPTIONS))
    if unknown:
        raise TypeError(f"unexpected keyword argument(s) {', '.join(unknown)}; the Hub options are "
                        f"{', '.join(_HUB_OPTIONS)}")
    if _is_repo_id(name):
        config = _hub_file(str(name), CONFIG_NAME, hub)
        # the cache keeps each file at snapshots/<commit>/<file>: take the weights of that same commit
        pinned = {**hub, "revision": config.parent.name} if _COMMIT.fullmatch(config.parent.name) else hub
        return config, lambda: _hub_file(str(name), WEIGHTS_NAME, pinned)
    folder = Path(os.fspath(name))
    if not folder.exists():
        raise FileNotFoundError(f"pretrained folder {folder} does not exist")
    if not folder.is_dir():
        raise ValueError(f"pretrained folder {folder} is a file, not a folder; give the folder save_pretrained "
                         f"wrote (a training checkpoint becomes one with `fsrf export --checkpoint FILE --out DIR`)")
    if not (folder / CONFIG_NAME).is_file():
        raise FileNotFoundError(f"no {CONFIG_NAME} in {folder}: not a model folder, or save_pretrained has not "
                                f"finished writing it")
    return folder / CONFIG_NAME, lambda: folder / WEIGHTS_NAME


def _read_config(path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant,
                         object_pairs_hook=_no_duplicates)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path} must hold a JSON object; got {type(cfg).__name__}")
    fmt = cfg.get("format")
    if fmt != FORMAT:
        found = f"format {fmt!r}" if fmt is not None else "no 'format' field (not written by fsrf)"
        raise ValueError(f"{path} has {found}; this fsrf {__version__} reads {FORMAT!r}")
    kind = cfg.get("model_kind")
    if kind not in _KINDS:
        raise ValueError(f"{path}: model_kind must be one of {sorted(_KINDS)}; got {kind!r}")
    for key, typ in (("model_config", dict), ("modality_dims", dict), ("save_id", str)):
        if not isinstance(cfg.get(key), typ):
            raise ValueError(f"{path}: {key} must be a JSON {'object' if typ is dict else 'string'}; "
                             f"got {type(cfg.get(key)).__name__}")
    for m, d in cfg["modality_dims"].items():
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"{path}: modality_dims[{m!r}] must be a positive int; got {d!r}")
    return cfg


def read_pretrained_config(directory: str | os.PathLike, **hub: Any) -> dict[str, Any]:
    """The checked ``config.json`` of a model folder or Hub repo (``hub`` as in
    :func:`from_pretrained`), without loading the weights.

    Raises ``FileNotFoundError`` for a missing folder or file and a one-line ``ValueError`` naming
    the file when it is not strict JSON, has another ``format`` (another tool, or another version
    of this one), names a kind outside the registry, or has fields of the wrong type.
    """
    return _read_config(_locate(directory, hub)[0])


def _read_weights(path: Path, save_id: str, config_path: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"no {WEIGHTS_NAME} in {path.parent} (next to {config_path.name})")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for every damaged file
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{path} is truncated, corrupted or not a safetensors file ({first})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is a safetensors file but not an fsrf model (format {meta.get('format')!r}, "
                         f"expected {FORMAT!r})")
    if meta.get("save_id") != save_id:
        raise ValueError(f"{path} and {config_path} come from different saves (a save_pretrained into "
                         f"{path.parent} is in progress or was interrupted); save the model there again")
    return tensors


def _check_state(model: nn.Module, tensors: Mapping[str, torch.Tensor], path: Path, kind: str) -> None:
    want = model.state_dict()
    missing = [k for k in want if k not in tensors]
    extra = [k for k in tensors if k not in want]
    shapes = [f"{k} is {tuple(tensors[k].shape)} in the file, {tuple(want[k].shape)} in the model" for k in want
              if k in tensors and tensors[k].shape != want[k].shape]
    problems = []
    for label, items in (("missing", missing), ("unexpected", extra), ("shape mismatch", shapes)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            problems.append(f"{label}: {', '.join(items[:3])}{more}")
    if problems:
        raise ValueError(f"{path} does not match the {kind!r} model its config.json describes: "
                         + "; ".join(problems))


def from_pretrained(directory: str | os.PathLike, *, device: str | torch.device = "cpu", expect: str | None = None,
                    **hub: Any) -> nn.Module:
    """Rebuild the model saved in a folder by :func:`save_pretrained`, or in a Hub repo
    (``"user/repo"``; ``hub`` takes ``revision``, ``token``, ``cache_dir``, ``force_download`` and
    ``local_files_only``, as ``huggingface_hub.hf_hub_download`` does), whatever its kind; returned
    on ``device`` in eval mode.

    ``expect`` (a kind name) refuses a folder of any other kind. Raises ``FileNotFoundError`` for
    a missing folder, file or repo and a one-line ``ValueError`` naming the file for everything
    else: a ``config.json`` of another format, an unknown kind, a ``model_config`` the builder
    refuses, a truncated or foreign ``model.safetensors``, weights from another save, or tensors
    whose names or shapes do not fit the model.
    """
    config_path, weights_path = _locate(directory, hub)
    cfg = _read_config(config_path)
    kind = _KINDS[cfg["model_kind"]]
    if expect is not None and kind.name != expect:
        want = _KINDS[expect].cls.__name__ if expect in _KINDS else expect
        raise ValueError(f"{os.fspath(directory)} holds a {kind.name!r} model ({kind.cls.__name__}); "
                         f"{want}.from_pretrained loads {expect!r} models only: use {kind.cls.__name__}.from_pretrained "
                         f"or fsrf.models.from_pretrained")
    weights = weights_path()
    tensors = _read_weights(weights, cfg["save_id"], config_path)
    try:
        model = kind.build(dict(cfg["modality_dims"]), **cfg["model_config"])
    except (TypeError, ValueError, KeyError) as exc:
        msg = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        raise ValueError(f"{config_path}: cannot build a {kind.name!r} model from its model_config: "
                         f"{' '.join(msg.split())}") from None
    _check_state(model, tensors, weights, kind.name)
    model.load_state_dict(tensors, strict=True)
    return model.to(device).eval()
