"""LoRA adapters for the studio's shared pipeline, from wherever a user has one: an upload (a .zip of an adapter
folder, or adapter_model.safetensors + adapter_config.json), a Hugging Face Hub id, or a folder on the server
(only where the host allows it: `--allow-server-adapters`, never on a Space).

    folder = staged_upload(files, scratch)          # checked and unpacked into `scratch`; AdapterSourceError if not
    folder = hub_adapter("someone/style-lora")      # downloaded (or cached) adapter files
    name = load_adapter(studio, folder, "style", 0.8)
    loaded_adapters(studio)                         # {name: strength}: the one list every tab shows

The adapter's weights are checked by omnigen.lora against the model before anything in the model changes,
so a refused adapter leaves the pipeline as it was. Nothing here imports gradio.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from omnigen.files import escapes_folder
from omnigen.lora import ADAPTER_CONFIG, ADAPTER_WEIGHTS

MAX_ADAPTERS = 8  # loaded at once; each one costs every step a little
MAX_UNPACKED_BYTES = 4 << 30  # an adapter of the real 3.8B model at rank 128 is about 0.5 GB
HUB_PART = r"[A-Za-z0-9](?:[\w.-]*[A-Za-z0-9_])?"
HUB_ID = re.compile(rf"{HUB_PART}/{HUB_PART}(/{HUB_PART})*")


class AdapterSourceError(ValueError):
    """An upload, Hub id or path that does not give an adapter folder; the message says why and what to do."""


# ----------------------------------------------------------------------------- uploads


def staged_upload(files: Sequence[str], scratch: Path) -> Path:
    """The adapter folder inside `scratch` made from uploaded files: one .zip holding an adapter folder, or
    adapter_model.safetensors and adapter_config.json together (any names ending .safetensors and .json)."""
    files = [Path(f) for f in files or [] if f]
    if not files:
        raise AdapterSourceError("choose the adapter to upload: a .zip of its folder, or its "
                                 f"{ADAPTER_WEIGHTS} and {ADAPTER_CONFIG} together")
    zips = [f for f in files if f.suffix.lower() == ".zip"]
    if zips:
        if len(files) > 1:
            raise AdapterSourceError("upload a .zip on its own: it holds the whole adapter folder")
        return unpack_adapter_zip(zips[0], scratch)
    weights = [f for f in files if f.suffix.lower() == ".safetensors"]
    configs = [f for f in files if f.suffix.lower() == ".json"]
    others = [f.name for f in files if f not in weights and f not in configs]
    if others or len(weights) != 1 or len(configs) != 1:
        found = ", ".join(f.name for f in files)
        raise AdapterSourceError(f"an adapter upload is one {ADAPTER_WEIGHTS} and one {ADAPTER_CONFIG} (or a .zip "
                                 f"of their folder); got {found}")
    folder = scratch / "adapter"
    folder.mkdir(parents=True)
    shutil.copyfile(weights[0], folder / ADAPTER_WEIGHTS)
    shutil.copyfile(configs[0], folder / ADAPTER_CONFIG)
    return folder


def unpack_adapter_zip(archive: Path, scratch: Path) -> Path:
    """Unpack the adapter folder of a zip into `scratch`: every member is checked before anything is written
    (no absolute paths, no '..', no links, not too large); only the adapter's two files are extracted."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [m for m in zipped.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX/")]
            check_members(archive.name, members)
            config = adapter_member(archive.name, members)
            prefix = config.filename[:-len(ADAPTER_CONFIG)]
            folder = scratch / (PurePosixPath(prefix).name or "adapter")
            folder.mkdir(parents=True)
            for part in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
                with zipped.open(prefix + part) as source, open(folder / part, "wb") as target:
                    copy_at_most(source, target, MAX_UNPACKED_BYTES, archive.name)
            return folder
    except zipfile.BadZipFile as error:
        raise AdapterSourceError(f"the upload {archive.name} is not a readable zip file ({error})") from None


def check_members(archive: str, members: list[zipfile.ZipInfo]) -> None:
    escaping = [m.filename for m in members if escapes_folder(m.filename)]
    if escaping:
        shown = ", ".join(escaping[:3]) + (", ..." if len(escaping) > 3 else "")
        raise AdapterSourceError(f"the upload {archive} is refused: {shown} would land outside the adapter's folder (absolute "
                                 "paths and '..' are not allowed in an adapter zip); zip the folder itself")
    links = [m.filename for m in members if stat.S_ISLNK(m.external_attr >> 16)]
    if links:
        raise AdapterSourceError(f"the upload {archive} is refused: {', '.join(links[:3])} is a link; zip the files themselves")
    if sum(m.file_size for m in members) > MAX_UNPACKED_BYTES:
        raise AdapterSourceError(f"the upload {archive} unpacks to more than {MAX_UNPACKED_BYTES >> 30} GB: not an adapter")


def adapter_member(archive: str, members: list[zipfile.ZipInfo]) -> zipfile.ZipInfo:
    """The one adapter_config.json of the zip whose folder also holds adapter_model.safetensors."""
    names = {m.filename for m in members}
    configs = [m for m in members if PurePosixPath(m.filename).name == ADAPTER_CONFIG]
    complete = [m for m in configs if m.filename[:-len(ADAPTER_CONFIG)] + ADAPTER_WEIGHTS in names]
    if len(complete) == 1:
        return complete[0]
    if len(complete) > 1:
        folders = ", ".join(m.filename[:-len(ADAPTER_CONFIG)] or "(top)" for m in complete)
        raise AdapterSourceError(f"the upload {archive} holds several adapters ({folders}); zip one adapter folder at a time")
    pickled = [n for n in names if PurePosixPath(n).name in ("adapter_model.bin", "adapter_model.pt")]
    hint = (f"; {PurePosixPath(pickled[0]).name} is a pickle file, which is not read (it can run code): save the "
            "adapter with safetensors") if pickled else ""
    raise AdapterSourceError(f"the upload {archive} is not a LoRA adapter: it holds no folder with both {ADAPTER_CONFIG} and "
                             f"{ADAPTER_WEIGHTS} (as peft's save_pretrained writes them){hint}")


def copy_at_most(source, target, limit: int, archive: str) -> None:
    """Copy a member, refusing it once it gives more bytes than `limit` (a zip may understate its sizes)."""
    written = 0
    while block := source.read(1 << 20):
        written += len(block)
        if written > limit:
            raise AdapterSourceError(f"the upload {archive} unpacks to more than {limit >> 30} GB: not an adapter")
        target.write(block)


# ----------------------------------------------------------------------------- the Hub and the server's folders


def hub_adapter(repo_id: str) -> Path:
    """The adapter folder of a Hub repo id ('owner/name', or 'owner/name/sub/folder' for one inside a repo),
    downloaded into (or read from) the Hugging Face cache: only the adapter's two files."""
    text = (repo_id or "").strip()
    if not HUB_ID.fullmatch(text) or ".." in text:
        raise AdapterSourceError(f"{text!r} is not a Hugging Face Hub id: write it as owner/name, e.g. "
                                 "'someone/omnigen-style-lora' (or owner/name/folder for an adapter inside a repo)")
    owner, name, *sub = text.split("/")
    inside = "/".join(sub)
    patterns = [f"{inside}/{part}" if inside else part for part in (ADAPTER_CONFIG, ADAPTER_WEIGHTS)]
    from huggingface_hub import snapshot_download

    try:
        root = Path(snapshot_download(f"{owner}/{name}", allow_patterns=patterns))
    except Exception as error:  # offline, unknown, gated: a sentence, never the trace
        raise AdapterSourceError(hub_failure(text, error)) from None
    folder = root / inside if inside else root
    if not (folder / ADAPTER_CONFIG).is_file() or not (folder / ADAPTER_WEIGHTS).is_file():
        raise AdapterSourceError(f"{text!r} on the Hugging Face Hub has no {ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}"
                                 f"{' in ' + inside if inside else ''}: it is not a LoRA adapter in peft's layout")
    return folder


def hub_failure(repo_id: str, error: BaseException) -> str:
    from huggingface_hub.errors import (GatedRepoError, LocalEntryNotFoundError, OfflineModeIsEnabled,
                                        RepositoryNotFoundError)

    if isinstance(error, GatedRepoError):
        return f"{repo_id!r} on the Hugging Face Hub is gated: this server has no access to it"
    if isinstance(error, RepositoryNotFoundError):
        return f"{repo_id!r} is not on the Hugging Face Hub (or is private): check the id"
    if isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError, TimeoutError)):
        return (f"cannot reach the Hugging Face Hub to get {repo_id!r} (this server is offline, or the Hub is down) "
                "and it is not in the server's cache; upload the adapter's files instead")
    return f"could not get {repo_id!r} from the Hugging Face Hub: {first_line(error)}"


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def server_adapter(path: str, allowed: bool) -> Path:
    """An adapter folder (or its adapter_model.safetensors) on the server, where the host allows reading them."""
    if not allowed:
        raise AdapterSourceError("this studio does not load adapters from the server's folders (start it with "
                                 "--allow-server-adapters); upload the adapter or give a Hub id")
    text = (path or "").strip()
    if not text:
        raise AdapterSourceError("write the path of an adapter folder on the server")
    folder = Path(os.path.expanduser(text))
    if folder.is_file() and folder.name == ADAPTER_WEIGHTS:
        folder = folder.parent
    if not folder.is_dir():
        raise AdapterSourceError(f"{text} is not a folder on this server")
    return folder


def server_adapters_allowed(flag: bool) -> bool:
    """The host's choice, except on a Hugging Face Space, where visitors must never read the server's files."""
    return bool(flag) and not os.environ.get("SPACE_ID")


# ----------------------------------------------------------------------------- the shared pipeline


def loaded_adapters(studio) -> dict[str, float]:
    """Every adapter attached to the studio's pipeline and its strength (0 included): the one list."""
    from omnigen.lora import lora_scales

    return lora_scales(studio.pipe.transformer)


def adapter_source(studio, name: str) -> str:
    return studio.adapter_sources.get(name, "")


def load_adapter(studio, folder: Path, name: str | None, strength: float, source: str = "",
                 replace: bool = False) -> str:
    """Attach the adapter in `folder` to the shared pipeline (held alone meanwhile) and return its name.
    `replace`: an adapter of the same name is unloaded first (a newer training of it)."""
    from omnigen.lora import check_new_name, default_adapter_name, free_name

    loaded = loaded_adapters(studio)
    name = (name or "").strip() or None
    if name is not None and not replace:
        check_new_name(studio.pipe.transformer, name)
    if len(loaded) >= MAX_ADAPTERS and name not in loaded:
        raise AdapterSourceError(f"{MAX_ADAPTERS} adapters are loaded already, the most at once: unload one first")
    with studio.live.use.exclusively(f"loading the LoRA {name or folder.name!r}"):
        if replace and name in loaded_adapters(studio):
            studio.pipe.unload_lora(name)
        chosen = name or free_name(studio.pipe.transformer, default_adapter_name(folder))
        chosen = studio.pipe.load_lora(folder, name=chosen, scale=float(strength))
    studio.adapter_sources[chosen] = source
    return chosen


def set_strength(studio, name: str, strength: float) -> None:
    if name not in loaded_adapters(studio):
        raise AdapterSourceError(f"the adapter {name!r} is not loaded any more (another page unloaded it)")
    with studio.live.use.exclusively(f"changing the LoRA {name!r}"):
        studio.pipe.set_lora_scales({name: float(strength)})


def unload_adapter(studio, name: str | None = None) -> None:
    """Unload one adapter, or all of them (name None)."""
    loaded = loaded_adapters(studio)
    if not loaded or (name is not None and name not in loaded):
        return
    with studio.live.use.exclusively("unloading the LoRA adapters" if name is None else f"unloading the LoRA {name!r}"):
        studio.pipe.unload_lora(name)
    sources = studio.adapter_sources
    for gone in [n for n in sources if n not in loaded_adapters(studio)]:
        sources.pop(gone)
