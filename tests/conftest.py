"""Shared fixtures: tiny random chat models built offline in a temp folder.

llama: system role, no default system prompt; qwen2: ChatML with a default system prompt and a
thinking switch; nosystem: a Gemma model whose template raises on a system message.
"""

from __future__ import annotations

import pytest

from traitspace.core.models import load_model
from traitspace.core.tiny_models import TINY_ARCHITECTURES, build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_models")
    return {arch: build_tiny_model(arch, root / arch) for arch in TINY_ARCHITECTURES}


@pytest.fixture(params=TINY_ARCHITECTURES)
def tiny_arch(request):
    return request.param


@pytest.fixture
def tiny_loaded(tiny_model_dirs, tiny_arch):
    return load_model(str(tiny_model_dirs[tiny_arch]))


@pytest.fixture
def tiny_llama(tiny_model_dirs):
    return load_model(str(tiny_model_dirs["llama"]))
