"""Check, before any notebook starts, that every Hugging Face hub id a run names can be loaded.

Without this check a typo, a machine without network or a gated model surfaces as a transformers
traceback from inside a notebook, after earlier notebooks have run. Here the model's ``config.json``
is fetched (or, offline, looked up in the hub cache) through ``huggingface_hub`` itself, the same
cache and token that ``from_pretrained`` uses, and a failure names the params key, the id and what to
do. Built-in sources (``embedded:``, ``tiny:``) and local paths are not hub ids and are not checked
here (the params schema checks that paths exist).
"""

from __future__ import annotations

import os

from .sections import source_is_path


class HubSourceError(ValueError):
    """A hub id that cannot be loaded here; the message says why and what to do."""


def is_hub_id(source: str) -> bool:
    return not source.startswith(("embedded:", "tiny:")) and not source_is_path(source)


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now (huggingface_hub reads it once, at import)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


_LOCAL_FOLDER = ("download it once where there is network (`hf download {source}`) and pass that folder "
                 "instead, e.g. `{key}: /path/to/folder`")
_OFFLINE_CACHE = ("or copy a hub cache that holds it (HF_HOME) to this machine and set HF_HUB_OFFLINE=1")
_TOKEN = ("a gated or private model needs an access token: accept the model's licence on its hub page, "
          "then set HF_TOKEN (or run `hf auth login`)")


def check_hub_model(source: str, revision: str | None = None, key: str = "model.source") -> None:
    """Raise :class:`HubSourceError` unless ``from_pretrained(source, revision=revision)`` can find
    the model's config: on the hub (token from ``HF_TOKEN`` or the login, as transformers uses) or,
    offline or with the hub unreachable, in the local hub cache."""
    if not is_hub_id(source):
        return
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    named = f"{key} {source!r}" + (f" (revision {revision!r})" if revision else "")
    offline = hub_offline()
    try:
        # Offline, only the cache is read; online, a cached copy is used when the hub cannot be
        # reached (what from_pretrained does too). config.json is small and from_pretrained needs it.
        hf_hub_download(source, "config.json", revision=revision, local_files_only=offline)
    except HFValidationError as error:
        raise HubSourceError(f"{named} is not a valid hub id ({error}). Pass a hub id such as "
                             f"'Qwen/Qwen2.5-7B-Instruct', a local model folder, a .gguf file, 'embedded:smollm2' "
                             f"or 'tiny:llama'.") from None
    except GatedRepoError:
        raise HubSourceError(f"{named} is gated and this machine has no access to it. What to do: {_TOKEN}.") from None
    except RepositoryNotFoundError:
        raise HubSourceError(
            f"{named} was not found on the hub. What to do: check the id for a typo (owner/name, as on its hub "
            f"page); {_TOKEN}; or pass a local model folder.") from None
    except RevisionNotFoundError:
        raise HubSourceError(f"{named}: the hub has no such revision; fix or drop model.revision.") from None
    except LocalEntryNotFoundError:
        why = ("HF_HUB_OFFLINE=1 is set and the local hub cache has no copy of it" if offline
               else "the hub cannot be reached from this machine and the local hub cache has no copy of it")
        raise HubSourceError(
            f"{named} cannot be loaded: {why}. What to do: check the id for a typo; "
            f"{_LOCAL_FOLDER.format(source=source, key=key)}, {_OFFLINE_CACHE}; {_TOKEN}.") from None
    except EntryNotFoundError:
        raise HubSourceError(f"{named} has no config.json: it is not a transformers model repository. Pass "
                             f"the id of one, a local model folder or a .gguf file.") from None


def check_config_hub_models(config) -> None:
    """Every hub id a run's params name: the model and, with a local judge, the judge model."""
    check_hub_model(config.model.source, config.model.revision, "model.source")
    judge = config.behavior.judge
    if judge.kind == "local":
        check_hub_model(judge.model, None, "behavior.judge.model")
