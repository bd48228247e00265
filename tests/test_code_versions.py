"""Every change to a stage's code is a reviewed decision about its stored results: the lock
(``tests/code_versions.lock.json``) must match the sources and versions of
:mod:`traitspace.core.code_versions`, or the test says which stages to consider and how to re-lock."""
import json

import pytest

from code_lock import LOCK_FILE, current_lock, differences, stage_sources
from traitspace.core.code_versions import CODE_VERSIONS, SOURCES, code_version


def test_every_versioned_stage_names_its_sources_and_they_exist():
    assert set(SOURCES) == set(CODE_VERSIONS)
    for stage in SOURCES:
        assert stage_sources(stage), stage


def test_a_stage_closes_over_what_it_imports_from_the_package_even_inside_functions():
    realign = {str(path.name) for path in stage_sources("realign")}
    assert "stats.py" in realign  # the recovery intervals (core.stats) are part of the realign stage's code
    training = {path.as_posix().split("lib/")[-1] for path in stage_sources("finetune.training")}
    assert "traitspace/finetune/trainer.py" in training and "traitspace/sae/stage.py" not in training


def test_the_lock_matches_the_sources_and_versions():
    report = differences(json.loads(LOCK_FILE.read_text()), current_lock())
    if report:
        listed = "\n".join(f"  {stage}: " + "; ".join(lines) for stage, lines in report.items())
        pytest.fail("stage code changed since tests/code_versions.lock.json:\n" + listed + "\nFor each stage whose "
                    "stored results these changes alter, bump its number in lib/traitspace/core/code_versions.py "
                    "(a rerun then recomputes it); then re-lock: python tests/code_lock.py --update")


def test_differences_name_edited_added_and_removed_files_and_a_version_change():
    locked = {"sae": {"code_version": 1, "files": {"a.py": "1", "b.py": "2"}}}
    current = {"sae": {"code_version": 2, "files": {"a.py": "9", "c.py": "3"}}}
    assert differences(locked, current) == {"sae": ["edited a.py", "now imports c.py", "no longer imports b.py",
                                                    "version 1 -> 2"]}
    assert differences(locked, locked) == {}


def test_an_unknown_stage_name_is_a_clear_error():
    with pytest.raises(KeyError, match="no code version for stage 'nope'"):
        code_version("nope")


def test_a_measurement_fingerprint_changes_with_its_code_version_from_version_2_on(monkeypatch):
    from traitspace.core import code_versions

    monkeypatch.setitem(code_versions.CODE_VERSIONS, "behavior.preference", 1)
    assert code_versions.versioned("abc", "behavior.preference") == "abc"  # parts stored earlier stay fresh
    monkeypatch.setitem(code_versions.CODE_VERSIONS, "behavior.preference", 2)
    assert code_versions.versioned("abc", "behavior.preference") == "abc+code-v2"


def test_a_preference_measured_by_older_code_is_measured_again(tmp_path, tiny_llama, monkeypatch):
    from traitspace.behavior import preference
    from traitspace.core import code_versions
    from traitspace.core.checkpoints import Checkpoint
    from traitspace.core.parts import CheckpointParts

    pairs = preference.load_preference_pairs(max_questions=1, max_style_questions=1)
    base, parts = [Checkpoint("em", 0, None, 0)], CheckpointParts(tmp_path / "preference")
    measured = []
    score_pairs = preference.score_pairs
    monkeypatch.setattr(preference, "score_pairs", lambda *args, **kwargs: measured.append(1) or score_pairs(*args, **kwargs))

    def measure_again() -> int:
        preference.measure_checkpoints(tiny_llama, base, pairs, parts, "settings", progress=False)
        return len(measured)

    assert measure_again() == 1 and measure_again() == 1  # the second run reads the stored part
    monkeypatch.setitem(code_versions.CODE_VERSIONS, "behavior.preference", code_versions.code_version("behavior.preference") + 1)
    assert measure_again() == 2
