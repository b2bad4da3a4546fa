"""One source-string syntax for the Python API, the CLI and scripts.

========================================================  =====================================
source                                                    yields
========================================================  =====================================
``saelens:RELEASE:SAE_ID``                                one pretrained SAE (``SAE.from_pretrained``)
``saelens:RELEASE:layer_{layer}/width_16k/canonical``     a suite over the ids matching the template
``path/to/saelens_folder``                                one SAE (``cfg.json`` + ``sae_weights.safetensors``)
``path/to/file.safetensors|.npy|.npz|.pt|.pth``           one decoder matrix
``path/to/dir``                                           a suite: per-layer files or sae-lens folders
``path/to/dir/layer_*.safetensors``                       a suite over the files a glob matches
``path/to/L{layer}/sae.pt``                               a suite over the paths a template matches
``default`` / ``default:12``                              the suite shipped in ``featuregeo/data/default_suite``
========================================================  =====================================

Opening a source reads names, configs and directory listings only; weights are read when a layer
is loaded (``suite.load(layer)``), one layer at a time.  Layers of directory entries are parsed from
their names (:func:`layer_from_name`).
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from featuregeo.core.util import parse_layers
from featuregeo.core.data import FeatureCloud, Suite
from featuregeo.core.errors import InputError
from featuregeo.io import saelens
from featuregeo.io.files import FILE_EXTENSIONS, ORIENTATIONS, load_file_cloud

#: where the default suite is installed (per-layer sae-lens folders ``layer_{L}/`` + ``manifest.json``)
DEFAULT_SUITE_DIR = Path(__file__).resolve().parent.parent / "data" / "default_suite"
SAELENS_PREFIX = "saelens:"
LAYER_PLACEHOLDER = "{layer}"
_SOURCE_HELP = ("a sae-lens folder, a .safetensors/.npy/.npz/.pt/.pth file, a directory, glob or {layer} "
                "template of them, saelens:RELEASE:SAE_ID, or default")
_SIDE_FILES = ("sparsity.safetensors",)

# explicit layer markers, tried in order: layer_12 / layer12 / layers.12, blocks.12., L12, resid_12
_LAYER_PATTERNS = (
    re.compile(r"(?:^|[^a-z])layers?[_\-.]?(\d+)", re.IGNORECASE),
    re.compile(r"(?:^|[^a-z])blocks?[_\-.](\d+)(?![0-9])", re.IGNORECASE),
    re.compile(r"(?:^|[^a-z0-9])l(\d+)(?![0-9])", re.IGNORECASE),
    re.compile(r"resid(?:ual)?(?:_pre|_post|_mid)?[_\-.]?(\d+)", re.IGNORECASE),
)
_NOT_LAYER = re.compile(r"average_l0_\d+|\.(safetensors|npy|npz|pth?)$", re.IGNORECASE)


def layer_from_name(name: str, strict: bool = False) -> int | None:
    """The layer named in a file, folder or SAE id.

    Parameters
    ----------
    name : str
        E.g. ``layer_12``, ``layer12.npy``, ``L12``, ``blocks.12.hook_resid_post``, ``resid_12``.
    strict : bool, default=False
        Only explicit markers; otherwise fall back to the last integer in the name
        (``sae_07.npy`` -> 7).

    Returns
    -------
    int or None

    Examples
    --------
    >>> layer_from_name("layer_12/width_16k/average_l0_41"), layer_from_name("blocks.3.hook_resid_pre")
    (12, 3)
    >>> layer_from_name("sae_07.npy"), layer_from_name("sae_07.npy", strict=True)
    (7, None)
    """
    clean = _NOT_LAYER.sub("", name)
    for rx in _LAYER_PATTERNS:
        m = rx.search(clean)
        if m:
            return int(m.group(1))
    if strict:
        return None
    ints = re.findall(r"\d+", clean)
    return int(ints[-1]) if ints else None


# ------------------------------------------------------------------------------------------------
# members: one loadable SAE each
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Member:
    path: Path
    kind: str  # "file" or "saelens"

    def load(self, layer: int | None, exclude_dead: bool, orientation: str, source: str | None = None) -> FeatureCloud:
        if self.kind == "saelens":
            return saelens.load_folder_cloud(self.path, layer=layer, source=source, exclude_dead=exclude_dead,
                                             orientation=orientation)
        return load_file_cloud(self.path, layer=layer, source=source, exclude_dead=exclude_dead,
                               orientation=orientation)


def _is_sae_file(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in FILE_EXTENSIONS and p.name not in _SIDE_FILES \
        and not p.name.startswith(".")


def _as_member(p: Path) -> _Member | None:
    """``p`` as a loadable SAE: a decoder file, a sae-lens folder, or a folder holding one decoder file."""
    if p.is_dir():
        if saelens.is_saelens_folder(p):
            return _Member(p, "saelens")
        inner = [c for c in sorted(p.iterdir()) if _is_sae_file(c)]
        return _Member(inner[0], "file") if len(inner) == 1 else None
    return _Member(p, "file") if _is_sae_file(p) else None


def _member_suite(members: dict[int, _Member], source: str, exclude_dead: bool, orientation: str,
                  label: str | None = None) -> Suite:
    """A suite over per-layer members; ``label`` (e.g. ``"default:{layer}"``) names each cloud's source."""

    def loader(layer: int) -> FeatureCloud:
        src = label.replace(LAYER_PLACEHOLDER, str(layer)) if label else None
        return members[layer].load(layer, exclude_dead, orientation, src)

    return Suite(sorted(members), loader, name=source)


def _layered(entries: Iterable[tuple[str, _Member]], source: str, strict: bool = False) -> dict[int, _Member]:
    """``layer -> member`` from (name, member) pairs; unparseable or duplicate layers are errors."""
    out: dict[int, _Member] = {}
    names: dict[int, str] = {}
    for name, member in entries:
        layer = layer_from_name(name, strict=strict)
        if layer is None:
            raise InputError(
                f"{source}: cannot tell the layer of {name!r}; expected names carrying the layer such as "
                "layer_12, layer12, L12, blocks.12., resid_12 or ending in a number"
            )
        if layer in out:
            raise InputError(
                f"{source}: layer {layer} is given twice ({names[layer]!r} and {name!r}); expected one SAE per layer"
            )
        out[layer], names[layer] = member, name
    return out


# ------------------------------------------------------------------------------------------------
# source kinds
# ------------------------------------------------------------------------------------------------
def _directory_members(d: Path, source: str) -> dict[int, _Member] | _Member:
    """Per-layer members of a directory; a lone member of unknown layer is returned as such.

    When the directory holds sae-lens folders, its other sub-folders are not members (a suite folder may
    carry companions, e.g. the default suite's ``lenses/``); its SAE files still are.
    """
    entries = []
    for child in sorted(d.iterdir()):
        if child.name.startswith("."):
            continue
        m = _as_member(child)
        if m is not None:
            entries.append((child.name, m))
    if any(m.kind == "saelens" for _, m in entries):
        entries = [(n, m) for n, m in entries if m.kind == "saelens" or not (d / n).is_dir()]
    if not entries:
        raise InputError(
            f"{d}: the directory holds no SAE; expected per-layer {'/'.join(FILE_EXTENSIONS)} files or sae-lens "
            f"folders ({saelens.SAE_CFG_FILENAME} + {saelens.SAE_WEIGHTS_FILENAME})"
        )
    if len(entries) == 1 and layer_from_name(entries[0][0]) is None:
        return entries[0][1]
    return _layered(entries, source)


def template_regex(template: str) -> re.Pattern:
    """A regex for ``template`` in which every ``{layer}`` is the same integer (group 1)."""
    parts = [re.escape(p) for p in template.split(LAYER_PLACEHOLDER)]
    return re.compile(parts[0] + r"(\d+)" + "".join((r"\1" if i else "") + p for i, p in enumerate(parts[1:])))


def _template_members(template: str, source: str) -> dict[int, _Member]:
    template = os.path.expanduser(template)
    rx = template_regex(template)
    pattern = "*".join(glob.escape(p) for p in template.split(LAYER_PLACEHOLDER))
    found = []
    for p in sorted(glob.glob(pattern)):
        m = rx.fullmatch(p)
        member = _as_member(Path(p)) if m else None
        if member is not None:
            found.append((int(m.group(1)), p, member))
    if not found:
        raise InputError(
            f"{source}: the {LAYER_PLACEHOLDER} template matches no SAE file or folder; expected paths such as "
            f"{template.replace(LAYER_PLACEHOLDER, '0')!r}"
        )
    out: dict[int, _Member] = {}
    names: dict[int, str] = {}
    for layer, p, member in found:
        if layer in out:
            raise InputError(f"{source}: layer {layer} is given twice ({names[layer]!r} and {p!r}); expected one SAE per layer")
        out[layer], names[layer] = member, p
    return out


def _glob_members(pattern: str, source: str) -> dict[int, _Member]:
    matches = sorted(glob.glob(os.path.expanduser(pattern)))
    entries = [(Path(p).name, m) for p in matches if (m := _as_member(Path(p))) is not None]
    if not entries:
        raise InputError(
            f"{source}: the pattern matches no SAE file or folder; expected it to match per-layer "
            f"{'/'.join(FILE_EXTENSIONS)} files or sae-lens folders (matched {len(matches)} other paths)"
        )
    return _layered(entries, source)


def _single(member: _Member, layer: int | None, layers: list[int] | None, source: str, exclude_dead: bool,
            orientation: str) -> Suite:
    """A one-layer suite.  An SAE of unknown layer is keyed 0 (``cloud.layer`` None) unless one layer is asked for."""
    if layer is None and layers is not None:
        if len(layers) != 1:
            raise InputError(
                f"layers: {source} holds one SAE of unknown layer; expected at most one layer to label it. "
                f"Got {layers} instead."
            )
        layer = layers[0]
    key = 0 if layer is None else layer

    def loader(_: int) -> FeatureCloud:
        return member.load(layer, exclude_dead, orientation)

    return _select(Suite([key], loader, name=source), layers, "layers")


def _select(suite: Suite, layers: list[int] | None, argname: str) -> Suite:
    if layers is None:
        return suite
    missing = [x for x in layers if x not in suite]
    if missing:
        raise InputError(
            f"{argname}: layer(s) {missing} not in {suite.name}; expected some of the available layers {suite.layers}"
        )
    return suite.select(layers)


def _saelens_suite(spec: str, layers: list[int] | None, exclude_dead: bool, orientation: str) -> Suite:
    body = spec[len(SAELENS_PREFIX):]
    release, sep, sae_id = body.partition(":")
    if not sep or not release or not sae_id:
        raise InputError(
            f"{spec}: expected saelens:RELEASE:SAE_ID (e.g. saelens:gemma-scope-2b-pt-res-canonical:"
            f"layer_{{layer}}/width_16k/canonical)"
        )
    lookup = saelens.lookup_release(release, spec)

    def make_loader(ids: dict[int, str]) -> Callable[[int], FeatureCloud]:
        def loader(layer: int) -> FeatureCloud:
            return saelens.load_pretrained_cloud(release, ids[layer], layer=layer, exclude_dead=exclude_dead,
                                                 orientation=orientation)
        return loader

    if LAYER_PLACEHOLDER in sae_id:
        if lookup is None:  # a raw Hugging Face repo: no directory to list
            if not layers:
                raise InputError(
                    f"{spec}: {release!r} is not in sae-lens' pretrained directory, so its layers cannot be listed; "
                    "expected an explicit layers=[...] (or --layers)"
                )
            ids = {L: sae_id.replace(LAYER_PLACEHOLDER, str(L)) for L in layers}
        else:
            rx = template_regex(sae_id)
            ids = {}
            for candidate in lookup.saes_map:
                m = rx.fullmatch(candidate)
                if m:
                    ids.setdefault(int(m.group(1)), candidate)
            if not ids:
                example = list(lookup.saes_map)[:4]
                raise InputError(
                    f"{spec}: no SAE id of release {release!r} matches the template {sae_id!r}; expected a template "
                    f"of ids such as {example}"
                )
        return _select(Suite(sorted(ids), make_loader(ids), name=spec), layers, "layers")
    saelens.check_sae_id(lookup, sae_id, spec)
    layer = layer_from_name(sae_id, strict=True)
    if layer is None and layers is not None and len(layers) == 1:
        layer = layers[0]
    key = 0 if layer is None else layer
    return _select(Suite([key], lambda _: saelens.load_pretrained_cloud(
        release, sae_id, layer=layer, exclude_dead=exclude_dead, orientation=orientation), name=spec), layers, "layers")


def _default_suite(spec: str, layers: list[int] | None, exclude_dead: bool, orientation: str) -> Suite:
    rest = spec[len("default"):].lstrip(":")
    d = DEFAULT_SUITE_DIR
    if not d.is_dir() or not any(saelens.is_saelens_folder(c) for c in d.iterdir() if c.is_dir()):
        raise InputError(
            f"{spec}: the shipped default SAE suite is not installed; expected featuregeo/data/default_suite/ with "
            f"per-layer sae-lens folders layer_{{L}}/ (looked in {d})"
        )
    members = _layered(((c.name, _Member(c, "saelens")) for c in sorted(d.iterdir())
                        if c.is_dir() and saelens.is_saelens_folder(c)), "default")
    suite = _member_suite(members, "default", exclude_dead, orientation, label="default:{layer}")
    if rest in ("", LAYER_PLACEHOLDER):
        return _select(suite, layers, "layers")
    if not rest.isdigit():
        raise InputError(f"source: expected default or default:LAYER (e.g. default:6). Got {spec!r} instead.")
    layer = int(rest)
    if layers is not None and layers != [layer]:
        raise InputError(f"layers: {spec} names layer {layer}; expected no other layers. Got {layers} instead.")
    return _select(suite, [layer], "source")


def _path_suite(spec: str, layers: list[int] | None, exclude_dead: bool, orientation: str) -> Suite:
    if LAYER_PLACEHOLDER in spec:
        return _select(_member_suite(_template_members(spec, spec), spec, exclude_dead, orientation), layers, "layers")
    path = Path(os.path.expanduser(spec))
    if not path.exists() and glob.has_magic(spec):
        return _select(_member_suite(_glob_members(spec, spec), spec, exclude_dead, orientation), layers, "layers")
    if not path.exists():
        hint = ""
        if ":" in spec and not spec.startswith(("/", ".", "~")):
            hint = f" (for a sae-lens release write saelens:{spec})"
        raise InputError(f"{spec}: no such file or directory{hint}; expected {_SOURCE_HELP}")
    if path.is_dir():
        if saelens.is_saelens_folder(path):
            layer = layer_from_name(path.name, strict=True)
            if layer is None:
                layer = saelens.folder_layer_hint(path)
            return _single(_Member(path, "saelens"), layer, layers, spec, exclude_dead, orientation)
        found = _directory_members(path, spec)
        if isinstance(found, _Member):
            return _single(found, None, layers, spec, exclude_dead, orientation)
        return _select(_member_suite(found, spec, exclude_dead, orientation), layers, "layers")
    if path.suffix.lower() not in FILE_EXTENSIONS:
        raise InputError(
            f"{spec}: unknown file type {path.suffix or '(no extension)'!r}; expected one of {list(FILE_EXTENSIONS)} "
            "or a sae-lens folder"
        )
    layer = layer_from_name(path.name, strict=True)
    if layer is None and path.name == saelens.SAE_WEIGHTS_FILENAME:
        layer = layer_from_name(path.parent.name, strict=True)
    return _single(_Member(path, "file"), layer, layers, spec, exclude_dead, orientation)


def open_suite(source: str | os.PathLike, layers: Iterable[int] | str | None = None, *, exclude_dead: bool = True,
               orientation: str = "auto") -> Suite:
    """Open a source string as a :class:`~featuregeo.core.data.Suite` (lazy: no weights are read).

    Parameters
    ----------
    source : str or PathLike
        See the module docstring for the syntax.
    layers : list of int or str, optional
        Layers to keep (``"0-25:2"`` etc. accepted); all available layers when None.
    exclude_dead : bool, default=True
        Exclude zero-norm decoder rows (NaN/inf rows are always excluded; both are counted).
    orientation : {"auto", "rows", "columns"}, default="auto"
        Whether features are the rows or the columns of a bare decoder matrix.

    Returns
    -------
    Suite
        ``suite.load(layer)`` reads one layer's decoder.

    Raises
    ------
    InputError
        Any unusable source, with a one-line message naming it and what was expected.
    """
    if not isinstance(source, (str, os.PathLike)):
        raise InputError(f"source: expected a source string ({_SOURCE_HELP}). Got {type(source).__name__} instead.")
    if orientation not in ORIENTATIONS:
        raise InputError(f"orientation: expected one of {list(ORIENTATIONS)}. Got {orientation!r} instead.")
    if not isinstance(exclude_dead, bool):
        raise InputError(f"exclude_dead: expected True or False. Got {exclude_dead!r} instead.")
    spec = os.fspath(source).strip()
    if not spec:
        raise InputError(f"source: expected {_SOURCE_HELP}. Got an empty string instead.")
    wanted = parse_layers(layers)
    if spec == "default" or spec.startswith("default:"):
        return _default_suite(spec, wanted, exclude_dead, orientation)
    if spec.startswith(SAELENS_PREFIX):
        return _saelens_suite(spec, wanted, exclude_dead, orientation)
    return _path_suite(spec, wanted, exclude_dead, orientation)


def load_cloud(source: str | os.PathLike, layer: int | None = None, *, exclude_dead: bool = True,
               orientation: str = "auto") -> FeatureCloud:
    """Load one :class:`~featuregeo.core.data.FeatureCloud`: a single-layer source, or one layer of a suite.

    Parameters
    ----------
    source : str or PathLike
        As for :func:`open_suite`.
    layer : int, optional
        Required when the source holds several layers.
    exclude_dead, orientation
        As for :func:`open_suite`.
    """
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int) or layer < 0):
        raise InputError(f"layer: expected a non-negative integer. Got {layer!r} instead.")
    suite = open_suite(source, None if layer is None else [layer], exclude_dead=exclude_dead,
                       orientation=orientation)
    if layer is None and len(suite) != 1:
        raise InputError(
            f"layer: {suite.name} holds layers {suite.layers}; expected layer=<one of them> (or a single-layer source)"
        )
    return suite.load(suite.layers[0])


__all__ = ["open_suite", "load_cloud", "layer_from_name", "template_regex", "DEFAULT_SUITE_DIR"]
