"""Quantization configs: which bits, group size and mode each quantized tensor uses.

Three sources are understood:

* a standalone ``quantization_config.json``:
  ``{"bits": 4, "group_size": 64, "per_tensor": {name: {"bits": 8, "group_size": 32}}}``;
* the ``"quantization"`` section mlx-lm writes into ``config.json`` (mirrored as
  ``"quantization_config"``): defaults plus per-module overrides keyed by module path, whose
  value is an object or ``false`` (that module is not quantized). As in mlx-lm, what an
  override object leaves out is its mode's default (``affine``, 4 bits, group 64), not the
  section's top-level value, and ``{}`` means not quantized; in the standalone file's
  ``per_tensor`` missing values come from the file's defaults;
* a Hugging Face ``"quantization_config"`` (top level or under ``text_config``) with
  ``quant_method`` ``awq``, ``gptq``, ``mxfp4`` or ``compressed-tensors``.

Example:
    >>> cfg = QuantizationConfig.from_model_config(
    ...     {"quantization": {"bits": 4, "group_size": 64, "lm_head": {"bits": 8}}}
    ... )
    >>> cfg.for_tensor("lm_head.weight")
    QuantSpec(bits=8, group_size=64, mode='affine')
    >>> cfg.for_tensor("language_model.model.embed_tokens.scales")
    QuantSpec(bits=4, group_size=64, mode='affine')
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlxload.quant_errors import (
    MissingQuantizationConfigError,
    QuantConfigJSONError,
    QuantConfigNotFoundError,
    QuantConfigTypeError,
    QuantizationConfigError,
    UnsupportedBitsError,
    UnsupportedGroupSizeError,
    UnsupportedQuantMethodError,
)

__all__ = [
    "AFFINE_BITS",
    "AFFINE_GROUP_SIZES",
    "FP_MODES",
    "MODES",
    "QUANT_CONFIG_NAME",
    "QuantSpec",
    "QuantizationConfig",
    "find_quantization_config",
]

QUANT_CONFIG_NAME = "quantization_config.json"
# 1-bit: mlxload dequantizes it anywhere; MLX's own quantized ops take it from MLX 0.32.4 on
# (see mlxload.backend.mlx_quantizes_bits).
AFFINE_BITS = (1, 2, 3, 4, 5, 6, 8)
AFFINE_GROUP_SIZES = (32, 64, 128)
# The floating-point modes each allow exactly one (bits, group_size) pair.
FP_MODES = {"mxfp4": (4, 32), "nvfp4": (4, 16), "mxfp8": (8, 32)}
"""Floating-point modes and the one (bits, group_size) each allows."""
MODES = ("affine", *FP_MODES)
# Defaults per mode when a config names the mode but not bits/group_size (as mlx-lm does).
_MODE_DEFAULTS = {"affine": (4, 64), **FP_MODES}
# Bits whose AWQ/GPTQ packing we can convert (see mlxload.awq_gptq).
_HF_BITS = {"awq": (4,), "gptq": (2, 3, 4, 8)}
_SUFFIXES = (".weight", ".scales", ".biases")
_HF_SUFFIXES = (".qweight", ".qzeros", ".g_idx")
_LM_PREFIX = "language_model."
# Scalar keys of mlx-lm's "quantization" section; every other key is a module path.
_MLX_SCALAR_KEYS = ("bits", "group_size", "mode", "quant_method")
_BITSANDBYTES_KEYS = frozenset(
    {"load_in_4bit", "load_in_8bit", "bnb_4bit_quant_type", "bnb_4bit_compute_dtype",
     "llm_int8_threshold"}
)  # fmt: skip


@dataclass(frozen=True)
class QuantSpec:
    """How one tensor is quantized. ``mode`` is ``affine``, ``mxfp4``, ``nvfp4`` or ``mxfp8``."""

    bits: int
    group_size: int
    mode: str = "affine"


@dataclass
class QuantizationConfig:
    """Default quantization settings plus per-module overrides.

    Attributes:
        bits, group_size, mode: Defaults for tensors no override names.
        per_tensor: name -> :class:`QuantSpec`, or ``None`` for "not quantized".
        quant_method: ``None`` for mlxload/mlx-lm configs; ``"awq"``, ``"gptq"``, ``"mxfp4"``
            or ``"compressed-tensors"`` for Hugging Face ones.
        sym, desc_act, zero_point, checkpoint_format, version: AWQ/GPTQ flags, as found.
            For these, ``group_size`` is the source's (``-1`` means one group per row).
        dynamic: GPTQModel's per-module rules, in order: ``(pattern, spec)``, the spec
            ``None`` for a ``-:`` (not quantized) rule. The first pattern that matches the
            start of a module's path decides, as GPTQModel and vLLM read them.
        source: Where the config came from, for messages.
        keyed_by_module: ``per_tensor`` keys are module paths only, as mlx-lm reads its
            ``"quantization"`` section: a ``"<module>.weight"`` key there names nothing (mlx-lm
            never looks it up), while a standalone file may name a module by its tensor.
    """

    bits: int = 4
    group_size: int = 64
    mode: str = "affine"
    per_tensor: dict[str, QuantSpec | None] = field(default_factory=dict)
    quant_method: str | None = None
    sym: bool | None = None
    desc_act: bool | None = None
    zero_point: bool | None = None
    checkpoint_format: str | None = None
    version: str | None = None
    dynamic: tuple[tuple[re.Pattern[str], QuantSpec | None], ...] = ()
    source: str | None = None
    keyed_by_module: bool = False

    @property
    def default(self) -> QuantSpec:
        """The spec for tensors that no override names."""
        return QuantSpec(self.bits, self.group_size, self.mode)

    # ------------------------------------------------------------------ parsing

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str | None = None) -> QuantizationConfig:
        """Parse a standalone ``quantization_config.json``.

        Args:
            text: The JSON text: ``{"bits", "group_size", "per_tensor": {name: {...} | false}}``;
                ``bits`` and ``group_size`` default to 4 and 64.
            source: File name used in error messages.

        Returns:
            The config.

        Raises:
            QuantConfigJSONError: not JSON or not an object.
            QuantConfigTypeError, UnsupportedBitsError, UnsupportedGroupSizeError,
            UnsupportedQuantMethodError: a value is wrong; the message names file and key.

        Example:
            >>> QuantizationConfig.from_json('{"bits": 8}').default
            QuantSpec(bits=8, group_size=64, mode='affine')
        """
        src = source or "<quantization config>"
        obj = _parse_json_object(text, src)
        default = _spec_from(obj, src, "", base=QuantSpec(4, 64))
        per_tensor_obj = obj.get("per_tensor", {})
        if not isinstance(per_tensor_obj, dict):
            raise QuantConfigTypeError(
                f"{src}: key 'per_tensor' must be an object mapping tensor names to "
                f"{{'bits', 'group_size'}} or false, got {_kind(per_tensor_obj)}"
            )
        per_tensor = {
            name: _override(value, default, src, f"per_tensor[{name!r}]")
            for name, value in per_tensor_obj.items()
        }
        return cls(*_fields(default), per_tensor=per_tensor, source=source)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> QuantizationConfig:
        """Read a standalone ``quantization_config.json`` (see :meth:`from_json`).

        Raises:
            QuantConfigNotFoundError: ``path`` does not exist or is a directory.
            QuantizationConfigError subclasses: malformed values (see :meth:`from_json`).
        """
        path = Path(path)
        return cls.from_json(_read_config(path, "quantization", _FROM_FILE), source=str(path))

    @classmethod
    def from_model_config(
        cls, config: Mapping[str, Any] | str | os.PathLike, *, source: str | None = None
    ) -> QuantizationConfig:
        """Read the quantization section of a model's ``config.json``.

        Looks, in order, at ``quantization`` (mlx-lm), ``quantization_config`` (mlx-lm's copy,
        or Hugging Face's when it has a ``quant_method``) and ``text_config.quantization_config``.

        Args:
            config: The parsed config, a path to ``config.json``, or its directory.
            source: Name used in messages when ``config`` is a dict.

        Returns:
            The config.

        Raises:
            QuantConfigNotFoundError: no ``config.json`` at the path (or in the directory).
            MissingQuantizationConfigError: no quantization section.
            QuantizationConfigError subclasses: malformed values (message names file and key).
        """
        if isinstance(config, Mapping):
            src = source or "config.json"
            root = config
        else:
            path = Path(config)
            if path.is_dir():
                path = path / "config.json"
            src = str(path)
            root = _parse_json_object(_read_config(path, "model", _FROM_MODEL_CONFIG), src)
        found = _quant_section(root)
        if found is None:
            raise MissingQuantizationConfigError(
                f"{src}: no quantization section; expected 'quantization' (mlx-lm), "
                "'quantization_config' or 'text_config.quantization_config'"
            )
        key, section = found
        if not isinstance(section, dict):
            raise QuantConfigTypeError(
                f"{src}: key {key!r} must be an object, got {_kind(section)}"
            )
        if "quant_method" in section and key != "quantization":
            return _from_hf(section, src, key)
        if key != "quantization" and _BITSANDBYTES_KEYS & section.keys():
            # older transformers wrote bitsandbytes configs without a quant_method
            raise UnsupportedQuantMethodError(
                f"{src}: key {key!r} is a bitsandbytes config "
                f"({', '.join(sorted(_BITSANDBYTES_KEYS & section.keys()))}); bitsandbytes "
                "weights have no MLX layout: convert the original model with mlx_lm.convert"
            )
        return _from_mlx_section(cls, section, src, key)

    # ------------------------------------------------------------------ lookup

    def for_tensor(self, name: str) -> QuantSpec | None:
        """The spec for a tensor or module path, or ``None`` if an override says "not quantized".

        Overrides are matched in order: the exact name; the name without a ``.weight`` /
        ``.scales`` / ``.biases`` suffix; both again with a leading ``language_model.`` removed;
        both again with ``language_model.`` added. Then the ``dynamic`` rules, on the module
        path. Without a match, the default spec.
        """
        for candidate in _candidates(name):
            if self.keyed_by_module and candidate.endswith(_SUFFIXES):
                continue  # a tensor name: mlx-lm looks up module paths only
            if candidate in self.per_tensor:
                return self.per_tensor[candidate]
        module = _module_path(name)
        for pattern, spec in self.dynamic:
            if pattern.match(module):
                return spec
        return self.default


def find_quantization_config(directory: str | os.PathLike) -> QuantizationConfig | None:
    """The quantization config of a checkpoint directory, or ``None`` when it has none.

    Looked for in order: ``config.json`` (either format), a standalone
    ``quantization_config.json``, an AutoGPTQ ``quantize_config.json``, an AutoAWQ
    ``quant_config.json``.

    Raises:
        QuantizationConfigError subclasses: a config exists but is malformed.
    """
    directory = Path(directory)
    model_config = directory / "config.json"
    if model_config.is_file():
        root = _parse_json_object(model_config.read_bytes(), str(model_config))
        if _quant_section(root) is not None:
            return QuantizationConfig.from_model_config(root, source=str(model_config))
    standalone = directory / QUANT_CONFIG_NAME
    if standalone.is_file():
        return QuantizationConfig.from_file(standalone)
    autogptq = directory / "quantize_config.json"  # older AutoGPTQ exports keep it apart
    if autogptq.is_file():
        section = _parse_json_object(autogptq.read_bytes(), str(autogptq))
        return _from_hf({"quant_method": "gptq", **section}, str(autogptq), "")
    autoawq = directory / "quant_config.json"  # AutoAWQ's own export
    if autoawq.is_file():
        section = _parse_json_object(autoawq.read_bytes(), str(autoawq))
        return _from_hf(_from_autoawq_names(section), str(autoawq), "")
    return None


def _from_autoawq_names(section: dict) -> dict:
    """AutoAWQ's ``quant_config.json`` (``w_bit``, ``q_group_size``) in Hugging Face's names;
    without those keys it is taken for GPTQ, as GPTQModel reads that file name too."""
    if "quant_method" in section:
        return section
    if not {"w_bit", "q_group_size"} & section.keys():
        return {"quant_method": "gptq", **section}
    renamed = {"w_bit": "bits", "q_group_size": "group_size"}
    return {"quant_method": "awq", **{renamed.get(k, k): v for k, v in section.items()}}


# ---------------------------------------------------------------------- helpers


def _module_path(name: str) -> str:
    """A tensor's module path: ``name`` without its tensor suffix (MLX's or AWQ/GPTQ's)."""
    for suffix in (*_SUFFIXES, *_HF_SUFFIXES):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _candidates(name: str) -> list[str]:
    def with_base(n: str) -> list[str]:
        for suffix in _SUFFIXES:
            if n.endswith(suffix):
                return [n, n[: -len(suffix)]]
        return [n]

    out = with_base(name)
    if name.startswith(_LM_PREFIX):
        out += with_base(name[len(_LM_PREFIX) :])
    else:
        out += with_base(_LM_PREFIX + name)
    return out


def _quant_section(root: Mapping[str, Any]) -> tuple[str, Any] | None:
    for key in ("quantization", "quantization_config"):
        if root.get(key) is not None:
            return key, root[key]
    text_config = root.get("text_config")
    if isinstance(text_config, dict) and text_config.get("quantization_config") is not None:
        return "text_config.quantization_config", text_config["quantization_config"]
    return None


_FROM_FILE = (
    "pass the path of a quantization_config.json, or use find_quantization_config(directory) "
    "to look in a checkpoint directory"
)
_FROM_MODEL_CONFIG = (
    "pass a model's config.json, the directory that holds it, or the parsed config (a dict)"
)


def _read_config(path: Path, what: str, instead: str) -> bytes:
    """A config file's bytes; a missing file or a directory is a
    :class:`QuantConfigNotFoundError` saying what to pass ``instead``."""
    if path.is_dir():
        raise QuantConfigNotFoundError(
            f"{path}: a directory, not a {what} config file; {instead}", path
        )
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):  # ("file.json/x": a file on the way)
        raise QuantConfigNotFoundError(f"{path}: no such file; {instead}", path) from None
    except OSError as e:  # permission, I/O: the OS's words, with the file named
        raise QuantizationConfigError(f"{path}: can't read it: {e.strerror or e}") from None


def _parse_json_object(text: str | bytes, src: str) -> dict:
    """A config file's object, read as mlx-lm and transformers read it, with Python's ``json``
    (it takes the ``NaN`` and ``Infinity`` that ``json.dump`` writes; orjson refuses them)."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise QuantConfigJSONError(f"{src}: not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise QuantConfigJSONError(f"{src}: top level must be a JSON object, got {_kind(obj)}")
    return obj


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, dict) else "an object"


def _fields(spec: QuantSpec) -> tuple[int, int, str]:
    return spec.bits, spec.group_size, spec.mode


def _int(obj: Mapping[str, Any], key: str, src: str, where: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is not int:
        raise QuantConfigTypeError(
            f"{src}: key '{where}{key}' must be an integer, got {_kind(value)}"
        )
    return value


def _spec_from(obj: Mapping[str, Any], src: str, where: str, base: QuantSpec) -> QuantSpec:
    """Build and validate a spec from ``obj``; missing values come from ``base``.

    When ``obj`` names a mode other than ``base``'s, missing values come from that mode's
    defaults instead.
    """
    mode = obj.get("mode", base.mode)
    if not isinstance(mode, str):
        raise QuantConfigTypeError(f"{src}: key '{where}mode' must be a string, got {_kind(mode)}")
    if mode not in MODES:
        raise UnsupportedQuantMethodError(
            f"{src}: key '{where}mode' is {mode!r}; supported modes: {', '.join(MODES)}"
        )
    dbits, dgroup = (base.bits, base.group_size) if mode == base.mode else _MODE_DEFAULTS[mode]
    bits = _int(obj, "bits", src, where)
    group_size = _int(obj, "group_size", src, where)
    spec = QuantSpec(
        dbits if bits is None else bits, dgroup if group_size is None else group_size, mode
    )
    _validate(spec, src, where)
    return spec


def _validate(spec: QuantSpec, src: str, where: str, bits_key: str = "bits") -> None:
    if spec.mode == "affine":
        if spec.bits not in AFFINE_BITS:
            raise UnsupportedBitsError(
                f"{src}: key '{where}{bits_key}' is {spec.bits}; affine quantization supports bits "
                f"{', '.join(map(str, AFFINE_BITS))}"
            )
        if spec.group_size not in AFFINE_GROUP_SIZES:
            raise UnsupportedGroupSizeError(
                f"{src}: key '{where}group_size' is {spec.group_size}; affine quantization "
                f"supports group sizes {', '.join(map(str, AFFINE_GROUP_SIZES))}"
            )
        return
    bits, group_size = FP_MODES[spec.mode]
    if spec.bits != bits:
        raise UnsupportedBitsError(
            f"{src}: key '{where}{bits_key}' is {spec.bits}; mode {spec.mode} requires bits {bits}"
        )
    if spec.group_size != group_size:
        raise UnsupportedGroupSizeError(
            f"{src}: key '{where}group_size' is {spec.group_size}; mode {spec.mode} requires "
            f"group size {group_size}"
        )


def _override(value: Any, default: QuantSpec, src: str, key: str) -> QuantSpec | None:
    if value is False:
        return None
    if value is True:
        return default
    if not isinstance(value, dict):
        raise QuantConfigTypeError(
            f'{src}: key \'{key}\' must be an object like {{"bits": 8, "group_size": 64}} '
            f"or false, got {_kind(value)}"
        )
    return _spec_from(value, src, f"{key}.", base=default)


def _from_mlx_section(
    cls: type[QuantizationConfig], section: dict, src: str, key: str
) -> QuantizationConfig:
    mode = section.get("mode", "affine")
    if not isinstance(mode, str):
        raise QuantConfigTypeError(f"{src}: key '{key}.mode' must be a string, got {_kind(mode)}")
    base = QuantSpec(*_MODE_DEFAULTS.get(mode, (4, 64)), mode)
    default = _spec_from(section, src, f"{key}.", base=base)
    per_tensor = {
        name: _mlx_override(value, default, src, f"{key}[{name!r}]")
        for name, value in section.items()
        # A string can't be a module's override (those are objects or booleans): it is a
        # note some tools add (e.g. "desc"), which mlx-lm never looks up either.
        if name not in _MLX_SCALAR_KEYS and not isinstance(value, str)
    }
    return cls(*_fields(default), per_tensor=per_tensor, source=src, keyed_by_module=True)


_AFFINE_DEFAULT = QuantSpec(*_MODE_DEFAULTS["affine"], "affine")


def _mlx_override(value: Any, default: QuantSpec, src: str, key: str) -> QuantSpec | None:
    """A per-module entry of mlx-lm's section, read as mlx-lm reads it.

    mlx-lm hands an object straight to ``to_quantized(**value)``: a missing ``mode`` is
    ``"affine"`` and missing ``bits``/``group_size`` are that mode's defaults, never the
    section's top-level values (qwen3_moe writes ``{"group_size": 64, "bits": 8}`` under an
    mxfp4 section); an empty object or ``null`` is falsy there, so the module stays
    unquantized.
    """
    if value is None or (isinstance(value, dict) and not value):
        return None  # falsy to mlx-lm's predicate as well: the module stays unquantized
    if not isinstance(value, dict):
        return _override(value, default, src, key)
    return _spec_from(value, src, f"{key}.", base=_AFFINE_DEFAULT)


def _bool(section: Mapping[str, Any], key: str, src: str, where: str) -> bool | None:
    value = section.get(key)
    if value is not None and not isinstance(value, bool):
        raise QuantConfigTypeError(
            f"{src}: key '{where}{key}' must be true or false, got {_kind(value)}"
        )
    return value


def _from_hf(section: dict, src: str, key: str) -> QuantizationConfig:
    where = f"{key}." if key else ""
    method = section["quant_method"]
    if not isinstance(method, str):
        raise QuantConfigTypeError(
            f"{src}: key '{where}quant_method' must be a string, got {_kind(method)}"
        )
    method = method.lower()
    if method in ("mxfp4", "mxfp8"):
        return QuantizationConfig(*_MODE_DEFAULTS[method], method, quant_method=method, source=src)
    if method == "compressed-tensors":
        return _from_compressed_tensors(section, src, key)
    if method not in _HF_BITS:
        raise UnsupportedQuantMethodError(
            f"{src}: key '{where}quant_method' is {method!r}; supported: awq, gptq, mxfp4, "
            "mxfp8, compressed-tensors"
        )
    bits, group_size = _hf_bits_and_group(section, method, (4, 128), src, where)
    layout_key, layout = _hf_layout(section, method)
    version = layout if method == "awq" else None
    fmt = layout if method == "gptq" else None
    if isinstance(fmt, str):
        fmt = fmt.lower()
    if method == "awq":
        backend = section.get("backend")
        if isinstance(backend, str) and backend.lower().replace("_", "-") == "llm-awq":
            raise UnsupportedQuantMethodError(
                f"{src}: key '{where}backend' is {backend!r}: llm-awq packs its weights in "
                "another layout; only AutoAWQ's 'gemm' packing is supported"
            )
        if isinstance(layout, str) and layout.lower() not in ("gemm", ""):
            raise UnsupportedQuantMethodError(
                f"{src}: key '{where}{layout_key}' is {layout!r}; only AutoAWQ's 'gemm' "
                "packing is supported"
            )
    else:
        if section.get("is_marlin_format") is True:
            raise UnsupportedQuantMethodError(
                f"{src}: key '{where}is_marlin_format' is true: the weights are in the Marlin "
                "kernel's layout; supported GPTQ formats: gptq, gptq_v2"
            )
        if fmt is not None and fmt not in ("gptq", "gptq_v2"):
            raise UnsupportedQuantMethodError(
                f"{src}: key '{where}{layout_key}' is {fmt!r}; supported: gptq, gptq_v2"
            )
    pack_dtype = section.get("pack_dtype")
    if pack_dtype is not None and str(pack_dtype).removeprefix("torch.") != "int32":
        raise UnsupportedQuantMethodError(
            f"{src}: key '{where}pack_dtype' is {pack_dtype!r}; only int32 packing is supported"
        )
    return QuantizationConfig(
        bits,
        group_size,
        "affine",
        quant_method=method,
        sym=_bool(section, "sym", src, where),
        desc_act=_bool(section, "desc_act", src, where),
        zero_point=_bool(section, "zero_point", src, where),
        checkpoint_format=fmt,
        version=version if isinstance(version, str) else None,
        dynamic=_hf_dynamic(section, method, (bits, group_size), src, where),
        source=src,
    )


def _hf_layout(section: Mapping[str, Any], method: str) -> tuple[str, Any]:
    """The key naming an AWQ/GPTQ checkpoint's packing, and its value (None when absent).

    ``format`` is the current key in GPTQModel and transformers; ``checkpoint_format`` (GPTQ)
    and ``version`` (AWQ) are its older names, read only without it. A ``format`` saying
    ``gptq_v2`` must not be missed: read as ``gptq`` every zero point would be off by one.
    """
    legacy = "version" if method == "awq" else "checkpoint_format"
    for key in ("format", legacy):
        if section.get(key) is not None:
            return key, section[key]
    return legacy, None


def _hf_bits_and_group(
    section: Mapping[str, Any], method: str, defaults: tuple[int, int], src: str, where: str
) -> tuple[int, int]:
    """An AWQ/GPTQ section's ``bits`` and source ``group_size``, checked for a repack."""
    bits = _int(section, "bits", src, where)
    bits = defaults[0] if bits is None else bits
    group_size = _int(section, "group_size", src, where)
    group_size = defaults[1] if group_size is None else group_size
    if bits not in _HF_BITS[method]:
        raise UnsupportedBitsError(
            f"{src}: key '{where}bits' is {bits}; {method} checkpoints can be loaded with bits "
            f"{', '.join(map(str, _HF_BITS[method]))}"
        )
    # Source groups that are whole multiples of 32 inputs can be re-expressed as MLX groups.
    if group_size != -1 and (group_size <= 0 or group_size % 32):
        raise UnsupportedGroupSizeError(
            f"{src}: key '{where}group_size' is {group_size}; {method} checkpoints can be loaded "
            "with group size -1 (per row) or a positive multiple of 32"
        )
    return bits, group_size


def _hf_dynamic(
    section: Mapping[str, Any], method: str, defaults: tuple[int, int], src: str, where: str
) -> tuple[tuple[re.Pattern[str], QuantSpec | None], ...]:
    """GPTQModel's ``dynamic``: ``{"-:regex": {}}`` leaves matching modules unquantized,
    ``{"[+:]regex": {"bits", "group_size", ...}}`` gives them their own bits or group size
    (other keys, such as ``sym`` or ``desc_act``, change nothing in how mlxload repacks)."""
    rules = section.get("dynamic")
    if rules is None:
        return ()
    if type(rules) is not dict:
        raise QuantConfigTypeError(
            f"{src}: key '{where}dynamic' must be an object of regex -> settings, got "
            f"{_kind(rules)}"
        )
    out = []
    for key, value in rules.items():
        at = f"{where}dynamic[{key!r}]"
        if type(value) is not dict:
            raise QuantConfigTypeError(f"{src}: key '{at}' must be an object, got {_kind(value)}")
        negative = key.startswith("-:")
        try:
            pattern = re.compile(key[2:] if negative or key.startswith("+:") else key)
        except re.error as e:
            raise QuantConfigTypeError(f"{src}: key '{at}' is not a valid regex: {e}") from None
        spec = None
        if not negative:
            bits, group_size = _hf_bits_and_group(value, method, defaults, src, f"{at}.")
            spec = QuantSpec(bits, group_size)
        out.append((pattern, spec))
    return tuple(out)


def _from_compressed_tensors(section: dict, src: str, key: str) -> QuantizationConfig:
    where = f"{key}." if key else ""
    fmt = section.get("format")
    if fmt in ("nvfp4-pack-quantized", "mxfp4-pack-quantized"):
        mode = fmt.split("-")[0]
        return QuantizationConfig(
            *_MODE_DEFAULTS[mode], mode, quant_method="compressed-tensors", source=src
        )
    if fmt != "pack-quantized":
        raise UnsupportedQuantMethodError(
            f"{src}: key '{where}format' is {fmt!r}; supported compressed-tensors formats: "
            "pack-quantized, nvfp4-pack-quantized, mxfp4-pack-quantized"
        )
    groups = section.get("config_groups") or {}
    if not isinstance(groups, dict):
        raise QuantConfigTypeError(
            f"{src}: key '{where}config_groups' must be an object, got {_kind(groups)}"
        )
    weights: dict = {}
    for name, group in groups.items():
        if isinstance(group, dict) and isinstance(group.get("weights"), dict):
            weights, where = group["weights"], f"{where}config_groups[{name!r}].weights."
            break
    bits = _int(weights, "num_bits", src, where)
    group_size = _int(weights, "group_size", src, where)
    spec = QuantSpec(4 if bits is None else bits, 32 if group_size is None else group_size)
    _validate(spec, src, where, bits_key="num_bits")
    symmetric = weights.get("symmetric")
    return QuantizationConfig(
        *_fields(spec),
        quant_method="compressed-tensors",
        sym=symmetric if isinstance(symmetric, bool) else None,
        source=src,
    )
