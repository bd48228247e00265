"""Extract trait vectors and the Assistant Axis from a model, and store them as a cached run stage.

For every trait, each of its positive and negative system prompts is paired with the same
extraction questions; the model reads each conversation and one activation per layer is kept:

- ``mode="prompt"`` (default, cheap): no generation; the residual stream at the last prompt token
  (the position where the answer is about to start, after the model has read both the persona and
  the question) or the mean over the prompt tokens. The last token is the default: a mean over the
  prompt mostly averages the system prompt's own words, which differ between the two sides by
  construction, so it separates trivially and says little about the model's state.
- ``mode="response"`` (the persona-vector / Assistant-Axis method): the model answers under the
  system prompt (:func:`traitspace.core.sampling.generate_replies`) and activations are averaged over
  the answer tokens. An optional judge can keep only answers that express the trait (positive
  prompts) or do not (negative prompts).

Directions are fitted on part of the questions (:mod:`traitspace.core.traits`) and checked on the
held-out rest, which also picks the layer. Outputs go to ``<run>/traits/``; a rerun with the same
model and ``extract`` parameters loads them instead of touching the model
(:class:`traitspace.core.artifacts.Stage`). :class:`TraitVectors` reads them back.

Speed (prompt mode): conversations that share a system prompt share every token before the
question. :func:`capture_shared_prefixes` runs that prefix once, keeps its key/value cache, and
runs only the question tokens of each conversation on top of it, which is exact (causal
attention) and cuts the tokens processed by more than half for the trait library.
"""

from __future__ import annotations

import copy
import difflib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .core import traits as trait_math
from .core.artifacts import Stage, atomic_path, atomic_write_text
from .core.chat import TokenizedChat
from .core.config import ExtractSection, RunConfig
from .core.padding import pad_rows
from .core.hooks import capture_conversations, decoder_backbone, resolve_layers, residual_stream, run_until_stop
from .trait_library import Trait, TraitLibrary, load_builtin_library

AXIS_NAME = "assistant_axis"
VECTORS_FILE = "vectors.safetensors"
FORMAT_VERSION = "traitspace.trait_vectors/1"
LAYER_CONVENTION = (
    "layer i = output of decoder block i, counting from 0 (transformers hidden_states[i + 1]; "
    "the last layer is the raw block output, before the final norm)"
)
MODEL_DEFAULT_PROMPT = "<model default>"  # how the plan shows "no system prompt: the model's own default"
_CHUNK_ROWS = 2048  # conversations whose activations are held in memory at once (~140 MB for SmolLM2)

# A judge scores how strongly each answer expresses the trait, 0-100:
# judge(trait, questions, answers) -> scores (one per answer).
ResponseJudge = Callable[[Trait, Sequence[str], Sequence[str]], Sequence[float]]


# -- the plan: which conversations are read -----------------------------------------------------------
@dataclass(frozen=True)
class TraitEntry:
    """A trait selected for extraction, under the name it is stored as."""

    name: str
    kind: str  # "persona" | "alignment"
    trait: Trait


def selected_traits(library: TraitLibrary, settings: ExtractSection) -> list[TraitEntry]:
    """The traits named by ``settings`` (persona traits, then alignment traits as ``align_<name>``)."""
    persona_names = set(library.persona_trait_names)
    names = list(library.persona_trait_names) if settings.traits == "all" else list(settings.traits)
    if settings.include_alignment:
        names += [trait.name for trait in library.all_traits if trait.name not in persona_names and trait.name not in names]
    entries = []
    for name in names:
        try:
            trait = library.trait(name)
        except KeyError as error:
            raise KeyError(f"extract.traits: {error.args[0]}") from None
        entries.append(TraitEntry(name, "persona" if name in persona_names else "alignment", trait))
    return entries


def extraction_questions(library: TraitLibrary, settings: ExtractSection) -> tuple[list[str], set[int]]:
    """The questions asked (a seeded sample of the library's extraction questions) and the indices
    of those held out."""
    questions = list(library.extraction_questions)
    order = np.random.default_rng(settings.seed).permutation(len(questions))[: settings.n_questions]
    chosen = [questions[index] for index in order]
    _, heldout = trait_math.split_heldout(len(chosen), settings.heldout_fraction, settings.seed)
    return chosen, {int(index) for index in heldout}


def build_plan(library: TraitLibrary, settings: ExtractSection) -> pd.DataFrame:
    """One row per conversation to read.

    Columns: ``owner`` (vector name), ``kind`` (persona | alignment | axis), ``side`` (positive |
    negative for traits; default | role for the axis), ``group`` (the role's name, else the side),
    ``prompt_index``, ``system`` (None: the model's own default system prompt), ``question_index``,
    ``question``, ``heldout`` (bool).
    """
    questions, heldout = extraction_questions(library, settings)
    rows: list[dict[str, Any]] = []

    def add(owner: str, kind: str, side: str, group: str, prompt_index: int, system: str | None) -> None:
        for question_index, question in enumerate(questions):
            rows.append({
                "owner": owner, "kind": kind, "side": side, "group": group, "prompt_index": prompt_index,
                "system": system, "question_index": question_index, "question": question,
                "heldout": question_index in heldout,
            })

    for entry in selected_traits(library, settings):
        for side in ("positive", "negative"):
            prompts = getattr(entry.trait, side)[: settings.n_instruction_pairs]
            for prompt_index, prompt in enumerate(prompts):
                add(entry.name, entry.kind, side, side, prompt_index, prompt)

    # Assistant Axis: the library's plain assistant prompts plus the model's own default, against roles.
    defaults: list[str | None] = [*library.default_prompts[: settings.n_default_prompts], None]
    for prompt_index, prompt in enumerate(defaults):
        add(AXIS_NAME, "axis", "default", "default", prompt_index, prompt)
    roles = list(library.roles)
    if settings.n_roles is not None and settings.n_roles < len(roles):
        picked = np.random.default_rng(settings.seed).choice(len(roles), settings.n_roles, replace=False)
        roles = [roles[index] for index in sorted(picked)]
    for role in roles:
        for prompt_index, prompt in enumerate(role.prompts[: settings.n_role_prompts]):
            add(AXIS_NAME, "axis", "role", role.name, prompt_index, prompt)
    return pd.DataFrame(rows)


def plan_conversations(loaded, plan: pd.DataFrame) -> list[list[dict]]:
    """The chat messages of each plan row (no system message = the model's own default)."""
    return [loaded.chat.conversation(question, system=_system_or_none(system))
            for system, question in zip(plan["system"], plan["question"])]


def _system_or_none(system: Any) -> str | None:
    # pandas stores a missing system prompt as nan in a string column
    return None if system is None or (isinstance(system, float) and np.isnan(system)) else str(system)


# -- capture with shared prefixes ---------------------------------------------------------------------
def _common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    first = sequences[0]
    length = min(len(sequence) for sequence in sequences)
    for sequence in sequences[1:]:
        position = 0
        while position < length and sequence[position] == first[position]:
            position += 1
        length = position
    return length


@dataclass
class CaptureCounts:
    """Tokens run through the model, against what plain batched capture would have run."""

    tokens_run: int = 0
    tokens_plain: int = 0
    forward_passes: int = 0


_PrefixGroup = tuple[list[int], int]  # (conversation indices, length of their shared token prefix)


def _prefix_groups(conversations: Sequence[Sequence[dict]], chats: Sequence[TokenizedChat],
                   batch_size: int) -> list[_PrefixGroup]:
    """Group conversations that share all but their last message, with the length of their common
    token prefix; every member keeps at least its last prompt token out of the prefix.

    Members are ordered by the length of what remains after the prefix, so that the k-th members of
    different groups (run together, see :func:`_capture_batch`) need little padding. Members that
    share no token at all become groups of one with no prefix.
    """
    by_context: dict[str, list[int]] = {}
    for index, messages in enumerate(conversations):
        by_context.setdefault(json.dumps(list(messages)[:-1], sort_keys=True), []).append(index)
    groups: list[_PrefixGroup] = []
    for members in by_context.values():
        for start in range(0, len(members), batch_size):
            part = members[start: start + batch_size]
            prefix = max(min(_common_prefix_length([chats[index].input_ids for index in part]),
                             min(chats[index].prompt_span[1] for index in part) - 1), 0)
            if prefix == 0:
                groups.extend(([index], 0) for index in part)
                continue
            part.sort(key=lambda index: (chats[index].prompt_span[1] - prefix, index))
            groups.append((part, prefix))
    return sorted(groups, key=lambda group: group[1])  # similar prefix lengths batch together: less padding


def _batch_groups(groups: Sequence[_PrefixGroup], batch_size: int) -> list[list[_PrefixGroup]]:
    """Pack groups into batches of at most ``batch_size`` groups.

    A group with no shared prefix never shares a batch with prefixed ones: its all-padding prefix
    row would get nan keys/values (softmax over nothing), and 0 x nan is still nan.
    """
    batches: list[list[_PrefixGroup]] = []
    for group in groups:
        if not batches or len(batches[-1]) >= batch_size or (group[1] > 0) != (batches[-1][0][1] > 0):
            batches.append([])
        batches[-1].append(group)
    return batches


def _padded(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask ``[len(rows), max length]`` (at least one column)."""
    ids, mask, _ = pad_rows(rows, pad_id, "right", min_width=1)
    return ids, mask


def _capture_batch(loaded, chats: Sequence[TokenizedChat], batch: Sequence[_PrefixGroup], layers: list[int],
                   pooling: str, counts: CaptureCounts) -> tuple[list[int], dict[int, torch.Tensor]]:
    """Run one batch of prefix groups: all their prefixes in one forward pass, then, for k = 0, 1, ...,
    the k-th member of every group on a copy of its group's key/value cache (one pass per k, so the
    rows of a pass have similar lengths). Returns (conversation indices, pooled rows in that order)."""
    from transformers import DynamicCache

    model, device, pad_id = loaded.model, loaded.device, loaded.tokenizer.pad_token_id
    backbone = decoder_backbone(model)
    has_prefix = batch[0][1] > 0
    prefix_ids, prefix_mask = _padded([chats[members[0]].input_ids[:prefix] for members, prefix in batch], pad_id)
    prefix_cache = DynamicCache(config=backbone.config) if has_prefix else None
    prefix_sums: dict[int, torch.Tensor] = {}
    if has_prefix:
        def sum_prefix(_layer: int, hidden: torch.Tensor) -> torch.Tensor | None:
            if pooling != "prompt":
                return None  # last-token pooling needs only the prefix's keys and values
            return torch.einsum("bs,bsh->bh", prefix_mask.float().to(hidden.device), hidden.float()).cpu()

        # Stopping after the deepest requested layer is safe: the member passes stop there too, so
        # deeper layers' keys and values are never read.
        width = prefix_ids.shape[1]
        with residual_stream(model, layers, on_output=sum_prefix, stop_after_deepest=True) as seen:
            run_until_stop(lambda: backbone(
                input_ids=prefix_ids.to(device), attention_mask=prefix_mask.to(device),
                position_ids=torch.arange(width).expand(len(batch), width).to(device),
                past_key_values=prefix_cache, use_cache=True,
            ))
        prefix_sums = dict(seen) if pooling == "prompt" else {}
        counts.tokens_run += int(prefix_mask.sum())
        counts.forward_passes += 1

    order: list[int] = []
    results: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    for k in range(max(len(members) for members, _ in batch)):
        rows = [row for row, (members, _) in enumerate(batch) if len(members) > k]
        indices = [batch[row][0][k] for row in rows]
        prefix_lengths = [batch[row][1] for row in rows]
        suffixes = [chats[index].input_ids[prefix: chats[index].prompt_span[1]] for index, prefix in zip(indices, prefix_lengths)]
        suffix_ids, suffix_mask = _padded(suffixes, pad_id)
        position_ids = torch.tensor(prefix_lengths)[:, None] + torch.arange(suffix_ids.shape[1])[None, :]
        last = torch.tensor([len(suffix) - 1 for suffix in suffixes])
        cache, attention_mask = None, suffix_mask
        if has_prefix:
            # The pass appends to the cache, so each pass gets its own copy holding its groups' rows.
            cache = copy.deepcopy(prefix_cache)
            if len(rows) < len(batch):
                cache.batch_select_indices(torch.tensor(rows, device=device))
            attention_mask = torch.cat([prefix_mask[rows], suffix_mask], dim=1)

        def pool_members(_layer: int, hidden: torch.Tensor) -> torch.Tensor:
            if pooling == "last_prompt":
                return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.to(hidden.device)].float().cpu()
            return torch.einsum("bs,bsh->bh", suffix_mask.float().to(hidden.device), hidden.float()).cpu()

        with residual_stream(model, layers, on_output=pool_members, stop_after_deepest=True) as pooled:
            run_until_stop(lambda: backbone(
                input_ids=suffix_ids.to(device), attention_mask=attention_mask.to(device),
                position_ids=position_ids.to(device), past_key_values=cache, use_cache=has_prefix,
            ))
        counts.tokens_run += int(suffix_mask.sum())
        counts.tokens_plain += sum(chats[index].prompt_span[1] for index in indices)
        counts.forward_passes += 1
        prompt_lengths = torch.tensor([chats[index].prompt_span[1] for index in indices], dtype=torch.float32)
        for layer in layers:
            values = pooled[layer]
            if pooling == "prompt":  # mean over the whole prompt = (prefix sum + member sum) / prompt length
                if prefix_sums:
                    values = values + prefix_sums[layer][rows]
                values = values / prompt_lengths[:, None]
            results[layer].append(values)
        order.extend(indices)
    return order, {layer: torch.cat(parts) for layer, parts in results.items()}


@torch.inference_mode()
def capture_shared_prefixes(
    loaded,
    conversations: Sequence[Sequence[dict]],
    layers: Sequence[int] | str = "all",
    pooling: str = "last_prompt",
    batch_size: int = 64,
    counts: CaptureCounts | None = None,
) -> dict[int, torch.Tensor]:
    """Prompt-pooled activations ``{layer: Tensor[n, H]}``, equal to
    :func:`traitspace.core.hooks.capture_conversations` with ``pooling="last_prompt"`` or ``"prompt"``,
    but each run of shared leading tokens is computed once.

    Conversations are grouped by everything before their last message (the system prompt, in
    practice); a group's common token prefix is run once, its key/value cache is copied to every
    member, and only each member's remaining tokens are run on top. Prefixes are right-padded and
    positions given explicitly, so every member sees exactly the positions and keys it would see
    alone. Several groups share one pair of forward passes (at most ``batch_size`` members).
    ``counts`` (optional) accumulates the tokens run, against those plain capture would run.
    """
    if pooling not in ("last_prompt", "prompt"):
        raise ValueError(f"capture_shared_prefixes pools over the prompt; got pooling={pooling!r}")
    if not conversations:
        raise ValueError("no conversations to capture")
    chats: list[TokenizedChat] = [loaded.chat.tokenize(messages) for messages in conversations]
    for index, chat in enumerate(chats):
        if chat.response_span is not None:
            raise ValueError(f"conversation {index} ends with an answer; prompt pooling reads prompts only")
    layers = resolve_layers(layers, loaded.num_layers)
    counts = counts if counts is not None else CaptureCounts()
    outputs = {layer: torch.zeros(len(chats), loaded.hidden_size) for layer in layers}
    for batch in _batch_groups(_prefix_groups(conversations, chats, batch_size), batch_size):
        indices, pooled = _capture_batch(loaded, chats, batch, layers, pooling, counts)
        for layer in layers:
            outputs[layer][torch.tensor(indices)] = pooled[layer]
    return outputs


# -- extraction ---------------------------------------------------------------------------------------
@dataclass
class Extraction:
    """Everything :func:`extract_vectors` computes (held in memory; :func:`save_extraction` writes it).

    ``vectors``: name -> ``[L, H]`` float32 raw mean differences (traits, then ``assistant_axis``);
    ``metadata``: one row per vector (see :data:`METADATA_COLUMNS`);
    ``separation``: held-out ``auroc``, ``cohens_d``, ``mean_gap`` per (``trait``, ``layer``);
    ``heldout_projections``: each held-out conversation's projection at its vector's layer;
    ``responses``: the generated answers (response mode) with the judge's verdicts, else None.
    """

    vectors: dict[str, np.ndarray]
    metadata: pd.DataFrame
    separation: pd.DataFrame
    heldout_projections: pd.DataFrame
    plan: pd.DataFrame
    responses: pd.DataFrame | None = None
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


# One row per vector in metadata.csv / the safetensors header:
#   trait, kind (persona | alignment | axis), category (persona family), polarity (alignment traits:
#   "positive" = expressing the trait is aligned), layer (chosen), auroc / cohens_d (held-out, at that
#   layer), separates (auroc >= extract.separation_threshold), norm (|raw vector| at that layer),
#   activation_norm (mean |activation| there, for scale), cos_assistant_axis, n_prompts (conversations
#   the vector was fitted on, both sides), n_heldout (held-out conversations, both sides),
#   n_dropped_by_judge (response mode).
METADATA_COLUMNS = (
    "trait", "kind", "category", "polarity", "layer", "auroc", "cohens_d", "separates", "norm",
    "activation_norm", "cos_assistant_axis", "n_prompts", "n_heldout", "n_dropped_by_judge",
)


def _generate_and_capture(loaded, plan: pd.DataFrame, settings: ExtractSection, layers: list[int],
                          timings: dict[str, float]) -> tuple[np.ndarray, list[str]]:
    conversations = plan_conversations(loaded, plan)
    started = time.perf_counter()
    from .core.sampling import generate_replies

    answers = generate_replies(loaded, conversations, max_new_tokens=settings.max_new_tokens,
                               temperature=settings.temperature, batch_size=settings.batch_size, seed=settings.seed)
    timings["generate_s"] = timings.get("generate_s", 0.0) + time.perf_counter() - started
    activations = np.full((len(plan), len(layers), loaded.hidden_size), np.nan, dtype=np.float32)
    answered = [index for index, answer in enumerate(answers) if answer.strip()]
    if answered:
        started = time.perf_counter()
        with_answers = [loaded.chat.conversation(plan["question"].iloc[index], system=_system_or_none(plan["system"].iloc[index]),
                                                 assistant=answers[index]) for index in answered]
        captured = capture_conversations(loaded, with_answers, layers=layers, pooling="response",
                                         batch_size=settings.batch_size)
        activations[answered] = np.stack([captured[layer].numpy() for layer in layers], axis=1)
        timings["capture_s"] = timings.get("capture_s", 0.0) + time.perf_counter() - started
    return activations, answers


def _capture_prompts(loaded, plan: pd.DataFrame, settings: ExtractSection, layers: list[int],
                     timings: dict[str, float], counts: CaptureCounts) -> np.ndarray:
    conversations = plan_conversations(loaded, plan)
    started = time.perf_counter()
    if settings.share_prefixes:
        captured = capture_shared_prefixes(loaded, conversations, layers, settings.pooling, settings.batch_size, counts)
    else:
        captured = capture_conversations(loaded, conversations, layers=layers, pooling=settings.pooling,
                                         batch_size=settings.batch_size)
        lengths = sum(len(loaded.chat.tokenize(messages).input_ids) for messages in conversations)
        counts.tokens_run += lengths
        counts.tokens_plain += lengths
    timings["capture_s"] = timings.get("capture_s", 0.0) + time.perf_counter() - started
    return np.stack([captured[layer].numpy() for layer in layers], axis=1)


def _chunks_by_owner(plan: pd.DataFrame, max_rows: int) -> list[list[str]]:
    chunks: list[list[str]] = [[]]
    rows = 0
    for owner, size in plan.groupby("owner", sort=False).size().items():
        if chunks[-1] and rows + size > max_rows:
            chunks.append([])
            rows = 0
        chunks[-1].append(owner)
        rows += size
    return chunks


@dataclass
class _Fitted:
    name: str
    kind: str
    direction: np.ndarray  # [L, H]
    separation: pd.DataFrame
    heldout_rows: pd.DataFrame  # plan rows held out, in order
    heldout_projections: np.ndarray  # [n_heldout, L]
    activation_norms: np.ndarray  # [L] mean activation norm over the owner's conversations
    n_prompts: int
    n_dropped: int = 0


def _fit_owner(name: str, rows: pd.DataFrame, activations: np.ndarray, keep: np.ndarray) -> _Fitted:
    """Direction and held-out separation for one trait (or the axis) from its rows' activations."""
    kind = rows["kind"].iloc[0]
    usable = keep & ~np.isnan(activations).any(axis=(1, 2))
    heldout = rows["heldout"].to_numpy()
    positive_side = (rows["side"] == ("default" if kind == "axis" else "positive")).to_numpy()
    fit = usable & ~heldout
    held = usable & heldout
    for label, mask in (("fitting", fit), ("held-out", held)):
        if not (mask & positive_side).any() or not (mask & ~positive_side).any():
            raise ValueError(f"{name}: no {label} conversations left on one side (all answers empty or rejected)")
    if kind == "axis":
        groups = rows["group"].to_numpy()
        roles = [activations[fit & (groups == role)] for role in pd.unique(groups[fit & ~positive_side])]
        direction = trait_math.assistant_axis(activations[fit & positive_side], roles)
    else:
        direction = trait_math.mean_difference(activations[fit & positive_side], activations[fit & ~positive_side])
    projections = trait_math.project(activations[held], direction)  # [n_held, L]
    separation = trait_math.layer_separation(projections[positive_side[held]], projections[~positive_side[held]])
    return _Fitted(
        name=name, kind=kind, direction=direction.astype(np.float32), separation=separation,
        heldout_rows=rows[held], heldout_projections=projections,
        activation_norms=np.linalg.norm(activations[usable], axis=-1).mean(axis=0),
        n_prompts=int(fit.sum()), n_dropped=int((~keep).sum()),
    )


def _judge_keep(entry: TraitEntry, rows: pd.DataFrame, answers: Sequence[str], judge: ResponseJudge,
                threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Keep positive-side answers the judge scores >= threshold and negative-side ones below it."""
    scores = np.asarray(judge(entry.trait, list(rows["question"]), list(answers)), dtype=float)
    if scores.shape != (len(rows),):
        raise ValueError(f"judge returned {scores.shape[0] if scores.ndim else 0} scores for {len(rows)} answers")
    expresses = scores >= threshold
    keep = np.where((rows["side"] == "positive").to_numpy(), expresses, ~expresses)
    return keep, scores


def extract_vectors(
    loaded,
    settings: ExtractSection,
    library: TraitLibrary | None = None,
    judge: ResponseJudge | None = None,
    progress: bool = True,
) -> Extraction:
    """Read every planned conversation, fit each direction and pick layers (see the module doc)."""
    library = library or load_builtin_library()
    plan = build_plan(library, settings)
    entries = {entry.name: entry for entry in selected_traits(library, settings)}
    layers = list(range(loaded.num_layers))
    timings: dict[str, float] = {}
    counts = CaptureCounts()
    fitted: dict[str, _Fitted] = {}
    response_tables: list[pd.DataFrame] = []
    started, cpu_started = time.perf_counter(), time.process_time()
    chunks = _chunks_by_owner(plan, _CHUNK_ROWS)
    iterator: Any = chunks
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(chunks, desc=f"extract ({settings.mode} mode)", unit="chunk")
    for owners in iterator:
        chunk = plan[plan["owner"].isin(owners)]
        if settings.mode == "prompt":
            activations = _capture_prompts(loaded, chunk, settings, layers, timings, counts)
            answers = None
        else:
            activations, answers = _generate_and_capture(loaded, chunk, settings, layers, timings)
        positions = np.arange(len(chunk))
        for owner in owners:
            mask = (chunk["owner"] == owner).to_numpy()
            rows = chunk[mask]
            keep = np.ones(len(rows), dtype=bool)
            if answers is not None:
                owner_answers = [answers[index] for index in positions[mask]]
                scores = np.full(len(rows), np.nan)
                if judge is not None and owner in entries:
                    keep, scores = _judge_keep(entries[owner], rows, owner_answers, judge, settings.judge_threshold)
                response_tables.append(rows.assign(answer=owner_answers, judge_score=scores, kept=keep))
            fitted[owner] = _fit_owner(owner, rows, activations[mask], keep)
        del activations
    timings["total_s"] = time.perf_counter() - started
    timings["cpu_s"] = time.process_time() - cpu_started  # CPU seconds of this process (all threads)

    separation = pd.concat(
        [item.separation.assign(trait=name, kind=item.kind) for name, item in fitted.items()], ignore_index=True
    )[["trait", "kind", "layer", "auroc", "cohens_d", "mean_gap"]]
    trait_rows = separation[separation["kind"] != "axis"]
    shared_layer = trait_math.select_layer(trait_rows if len(trait_rows) else separation, settings.layer_selection,
                                           loaded.num_layers)
    chosen = {
        name: shared_layer if settings.layer_scope == "shared"
        else trait_math.select_layer(item.separation, settings.layer_selection, loaded.num_layers)
        for name, item in fitted.items()
    }
    axis = fitted[AXIS_NAME].direction
    records, projection_tables = [], []
    for name, item in fitted.items():
        layer = chosen[name]
        at_layer = item.separation.set_index("layer").loc[layer]
        trait = entries[name].trait if name in entries else None
        records.append({
            "trait": name, "kind": item.kind,
            "category": trait.category if trait else None, "polarity": trait.polarity if trait else None,
            "layer": layer, "auroc": float(at_layer["auroc"]), "cohens_d": float(at_layer["cohens_d"]),
            "separates": trait_math.separates(float(at_layer["auroc"]), settings.separation_threshold),
            "norm": float(np.linalg.norm(item.direction[layer])),
            "activation_norm": float(item.activation_norms[layer]),
            "cos_assistant_axis": float(trait_math.cosine_with(item.direction[layer][None], axis[layer])[0]),
            "n_prompts": item.n_prompts, "n_heldout": len(item.heldout_rows), "n_dropped_by_judge": item.n_dropped,
        })
        projection_tables.append(item.heldout_rows[["owner", "side", "group", "prompt_index", "question_index"]]
                                 .rename(columns={"owner": "trait"})
                                 .assign(layer=layer, value=item.heldout_projections[:, layer]))
    metadata = pd.DataFrame(records, columns=list(METADATA_COLUMNS))
    questions, heldout = extraction_questions(library, settings)
    info = {
        "mode": settings.mode,
        "pooling": "response" if settings.mode == "response" else settings.pooling,
        "shared_layer": shared_layer,
        "layer_scope": settings.layer_scope,
        "layer_selection": settings.layer_selection,
        "questions": questions,
        "heldout_question_indices": sorted(heldout),
        "n_conversations": len(plan),
        "tokens_run": counts.tokens_run,
        "tokens_without_prefix_sharing": counts.tokens_plain,
        "judge": getattr(judge, "__name__", type(judge).__name__) if judge is not None else None,
    }
    return Extraction(
        vectors={name: item.direction for name, item in fitted.items()},
        metadata=metadata,
        separation=separation,
        heldout_projections=pd.concat(projection_tables, ignore_index=True),
        plan=plan,
        responses=pd.concat(response_tables, ignore_index=True) if response_tables else None,
        timings={key: round(value, 3) for key, value in timings.items()},
        info=info,
    )


# -- storage ------------------------------------------------------------------------------------------
def _write_table(table: pd.DataFrame, folder: Path, stem: str, parquet: bool = True) -> None:
    with atomic_path(folder / f"{stem}.csv") as temporary:
        table.to_csv(temporary, index=False)
    if parquet:
        with atomic_path(folder / f"{stem}.parquet") as temporary:
            table.to_parquet(temporary, index=False)


def save_extraction(extraction: Extraction, folder: str | Path, model_info: Mapping[str, Any], params_hash: str) -> Path:
    """Write ``vectors.safetensors`` (one ``[L, H]`` tensor per vector, metadata in its header),
    ``metadata.csv/.parquet``, ``separation_by_layer.csv``, ``heldout_projections.csv``, ``plan.csv``
    and (response mode) ``responses.parquet`` into ``folder``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    header = {
        "format": FORMAT_VERSION,
        "layer_convention": LAYER_CONVENTION,
        "model_source": str(model_info.get("source")),
        "model": json.dumps(dict(model_info), default=str),
        "params_hash": params_hash,
        "vectors": json.dumps(extraction.metadata.replace({np.nan: None}).to_dict(orient="records")),
        **{key: json.dumps(value, default=str) for key, value in extraction.info.items()},
    }
    tensors = {name: torch.from_numpy(np.ascontiguousarray(vector)) for name, vector in extraction.vectors.items()}
    with atomic_path(folder / VECTORS_FILE) as temporary:
        save_file(tensors, str(temporary), metadata=header)
    _write_table(extraction.metadata, folder, "metadata")
    _write_table(extraction.separation, folder, "separation_by_layer", parquet=False)
    _write_table(extraction.heldout_projections, folder, "heldout_projections", parquet=False)
    _write_table(extraction.plan, folder, "plan", parquet=False)
    if extraction.responses is not None:
        _write_table(extraction.responses, folder, "responses")
    return folder / VECTORS_FILE


def stage_hash(config: RunConfig, judge: ResponseJudge | None = None) -> str:
    """Cache key of the extraction stage: the model and extract sections (and the judge, if any)."""
    base = config.params_hash("model", "extract")
    return base if judge is None else f"{base}+judge={getattr(judge, '__name__', type(judge).__name__)}"


def run_extraction(
    config: RunConfig,
    loaded=None,
    judge: ResponseJudge | None = None,
    library: TraitLibrary | None = None,
    progress: bool = True,
) -> TraitVectors:
    """Extract (or load, when ``<run>/traits/`` already holds this configuration) the trait vectors.

    ``loaded`` is the model (a :class:`traitspace.core.models.LoadedModel`) or None to load
    ``config.model`` only if work is needed: a cache hit never touches a model.
    """
    stage = Stage(config.run_dir / "traits", params_hash=stage_hash(config, judge))
    if stage.is_done():
        return load_trait_vectors(stage.path)
    if judge is not None and config.extract.mode != "response":
        raise ValueError("a judge filters generated answers; it needs extract.mode: response")
    if loaded is None:
        from .core.models import load_model

        loaded = load_model(config.model)
    extraction = extract_vectors(loaded, config.extract, library=library, judge=judge, progress=progress)
    save_extraction(extraction, stage.path, loaded.info, stage.params_hash)
    summary = extraction.metadata[extraction.metadata["kind"] != "axis"]
    stage.mark_done({
        "timings": extraction.timings,
        "n_vectors": len(extraction.vectors),
        "n_separating": int(summary["separates"].sum()),
        **{key: value for key, value in extraction.info.items() if key not in ("questions",)},
    })
    return load_trait_vectors(stage.path)


# -- reading vectors back -----------------------------------------------------------------------------
@dataclass
class TraitVectors:
    """Trait directions with their metadata, read from ``<run>/traits/vectors.safetensors``.

    Like repeng's ``ControlVector``: a direction object that knows which model, layers and method
    produced it. Each vector is the raw mean difference ``[L, H]`` for every layer; ``layer_of``
    gives the layer chosen for it by held-out separation.

    Example (notebook 03 projects checkpoints onto the vectors)::

        from traitspace.extract import load_trait_vectors
        from traitspace.core.hooks import capture_conversations

        traits = load_trait_vectors(config.run_dir)          # or the traits/ folder, or the file
        traits.names[:3]                                     # ['cheerful', 'melancholic', 'anxious']
        traits.layer_of("cheerful")                          # e.g. 14
        u = traits.unit("cheerful")                          # Tensor[H], unit length, at its layer
        U = traits.unit_matrix(["cheerful", "calm"], 14)     # Tensor[2, H], both at layer 14
        acts = capture_conversations(loaded, conversations, layers=traits.layers_needed(),
                                     pooling=traits.info["pooling"])
        scores = traits.project(acts)                        # DataFrame [n conversations, T traits]
    """

    vectors: dict[str, torch.Tensor]
    metadata: pd.DataFrame  # one row per vector, indexed by name (columns: METADATA_COLUMNS)
    info: dict[str, Any]  # the file header: model, mode, pooling, layer convention, ...
    path: Path | None = None

    @property
    def names(self) -> list[str]:
        """Vector names in stored order: persona traits, alignment traits, then ``assistant_axis``."""
        return list(self.vectors)

    @property
    def trait_names(self) -> list[str]:
        """Names of the trait vectors (everything but the Assistant Axis)."""
        return [name for name in self.vectors if name != AXIS_NAME]

    @property
    def num_layers(self) -> int:
        return int(next(iter(self.vectors.values())).shape[0])

    def __len__(self) -> int:
        return len(self.vectors)

    def __contains__(self, name: object) -> bool:
        return name in self.vectors

    def _check(self, name: str) -> None:
        if name not in self.vectors:
            close = difflib.get_close_matches(name, self.names, n=3)
            raise KeyError(f"no trait vector {name!r}" + (f"; close matches: {', '.join(close)}" if close else ""))

    def layer_of(self, name: str) -> int:
        """The layer chosen for ``name`` at extraction."""
        self._check(name)
        return int(self.metadata.loc[name, "layer"])

    def vector(self, name: str, layer: int | None = None) -> torch.Tensor:
        """Raw mean difference ``[H]`` at ``layer`` (default: :meth:`layer_of`)."""
        self._check(name)
        layer = self.layer_of(name) if layer is None else resolve_layers([layer], self.num_layers)[0]
        return self.vectors[name][layer]

    def unit(self, name: str, layer: int | None = None) -> torch.Tensor:
        """Unit-length direction ``[H]`` at ``layer`` (default: :meth:`layer_of`)."""
        vector = self.vector(name, layer)
        return vector / vector.norm()

    def unit_matrix(self, names: Sequence[str] | None = None, layers: int | Sequence[int] | None = None) -> torch.Tensor:
        """Unit directions stacked ``[T, H]``.

        ``names``: default all traits (without the axis). ``layers``: None = each vector at its own
        layer; an int = every vector at that layer; a sequence = one layer per name.
        """
        names = list(self.trait_names if names is None else names)
        if layers is None:
            per_name: list[int | None] = [None] * len(names)
        elif isinstance(layers, int):
            per_name = [layers] * len(names)
        else:
            per_name = list(layers)
            if len(per_name) != len(names):
                raise ValueError(f"{len(per_name)} layers given for {len(names)} names")
        return torch.stack([self.unit(name, layer) for name, layer in zip(names, per_name)])

    def layers_needed(self, names: Sequence[str] | None = None) -> list[int]:
        """The layers to capture so that :meth:`project` can score ``names`` (default: all vectors)."""
        return sorted({self.layer_of(name) for name in (self.names if names is None else names)})

    def project(self, activations: Mapping[int, torch.Tensor | np.ndarray], names: Sequence[str] | None = None) -> pd.DataFrame:
        """Projections ``activation . unit`` of captured activations, each vector at its own layer.

        Args:
            activations: ``{layer: [n, H]}`` as returned by ``capture_conversations`` (must contain
                every layer in :meth:`layers_needed`).
            names: vectors to project on (default: all, the axis included).

        Returns:
            DataFrame ``[n, T]`` with one column per name; higher = more like the trait's
            positive side (for ``assistant_axis``: more assistant-like).
        """
        names = list(self.names if names is None else names)
        columns = {}
        for name in names:
            layer = self.layer_of(name)
            if layer not in activations:
                raise KeyError(f"{name} needs layer {layer}; captured layers: {sorted(activations)}")
            values = activations[layer]
            values = values.numpy() if isinstance(values, torch.Tensor) else np.asarray(values)
            columns[name] = trait_math.project(values, self.vectors[name][layer].numpy())
        return pd.DataFrame(columns)

    def separating(self) -> list[str]:
        """Trait names whose held-out AUROC reached the threshold."""
        table = self.metadata
        return [name for name in self.trait_names if bool(table.loc[name, "separates"])]


def _find_vectors_file(path: str | Path) -> Path:
    path = Path(path)
    for candidate in (path, path / VECTORS_FILE, path / "traits" / VECTORS_FILE):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no {VECTORS_FILE} at {path}, {path / VECTORS_FILE} or {path / 'traits' / VECTORS_FILE}")


def load_trait_vectors(path: str | Path) -> TraitVectors:
    """Read trait vectors from a run folder, its ``traits/`` folder, or the safetensors file."""
    from safetensors import safe_open

    file = _find_vectors_file(path)
    with safe_open(str(file), framework="pt") as handle:
        header = handle.metadata() or {}
        if header.get("format") != FORMAT_VERSION:
            raise ValueError(f"{file}: not a traitspace trait-vector file (format {header.get('format')!r})")
        vectors = {name: handle.get_tensor(name) for name in handle.keys()}
    records = json.loads(header["vectors"])
    metadata = pd.DataFrame(records, columns=list(METADATA_COLUMNS)).set_index("trait", drop=False)
    order = [record["trait"] for record in records]
    info: dict[str, Any] = {}
    for key, value in header.items():
        if key in ("vectors",):
            continue
        try:
            info[key] = json.loads(value)
        except json.JSONDecodeError:
            info[key] = value
    return TraitVectors(vectors={name: vectors[name] for name in order}, metadata=metadata, info=info, path=file)


def write_summary(vectors: TraitVectors, folder: str | Path) -> Path:
    """A short human-readable summary next to the vectors (used by the notebook)."""
    table = vectors.metadata
    traits = table[table["kind"] != "axis"]
    lines = [
        f"vectors: {len(vectors)} ({len(traits)} traits + assistant_axis)",
        f"mode: {vectors.info.get('mode')}, pooling: {vectors.info.get('pooling')}",
        f"shared layer: {vectors.info.get('shared_layer')}",
        f"separating (held-out AUROC >= threshold): {int(traits['separates'].sum())} / {len(traits)}",
    ]
    return atomic_write_text(Path(folder) / "summary.txt", "\n".join(lines) + "\n")
