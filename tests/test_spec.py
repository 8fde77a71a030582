"""Study files: expansion, precedence, labels, run ids and one-line errors (no training)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from chargpt.config import Budget
from chargpt.corpus import corpus_fingerprint
from chargpt.study.spec import (
    PlannedRun,
    Study,
    StudyError,
    budget_str,
    expand,
    load_recipe,
    load_study,
    parse_study,
    plan_rows,
)
from chargpt.study.sweep import DOTTED_KEYS, derive_label


def write(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, text: str) -> Study:
    return load_study(write(tmp_path, text))


def error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(StudyError) as info:
        load_study(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message[len(f"{path}: ") :]


def col(study: Study, key: str) -> list:
    section, name = key.split(".")
    return [getattr(getattr(r.config, section), name) for r in study.runs]


# ----- expansion -----------------------------------------------------------------------


def test_minimal_study_is_one_default_run(tmp_path: Path) -> None:
    study = load(tmp_path, "name: smoke\n")
    assert study.name == "smoke" and study.description == "" and study.skipped == ()
    assert study.path == tmp_path / "x.yaml" and study.raw == {"name": "smoke"}
    (run,) = study.runs
    assert isinstance(run, PlannedRun) and run.index == 0
    assert run.label == "L4-H4-C128-T64" and run.config.budget.max_steps == 2000
    assert len(run.run_id) == 10


def test_grid_is_a_cartesian_product_last_key_fastest(tmp_path: Path) -> None:
    study = load(
        tmp_path,
        """
        name: g
        grid:
          model.n_layer: [2, 4, 6]
          train.batch_size: [8, 16]
        """,
    )
    assert len(study.runs) == 6
    assert col(study, "model.n_layer") == [2, 2, 4, 4, 6, 6]
    assert col(study, "train.batch_size") == [8, 16] * 3
    assert [r.index for r in study.runs] == list(range(6))


def test_zip_groups_vary_together_and_multiply(tmp_path: Path) -> None:
    study = load(
        tmp_path,
        """
        name: z
        grid: {model.n_layer: [2, 4]}
        zip:
          - model.n_embd: [64, 128, 256]
            optim.lr: [2e-3, 1e-3, 5e-4]
          - train.batch_size: [8, 16]
        """,
    )
    assert len(study.runs) == 2 * 3 * 2
    pairs = {(r.config.model.n_embd, r.config.optim.lr) for r in study.runs}
    assert pairs == {(64, 0.002), (128, 0.001), (256, 0.0005)}
    assert isinstance(study.runs[0].config.optim.lr, float)  # '2e-3' arrives as a string


def test_runs_nested_and_dotted_keys_with_labels(tmp_path: Path) -> None:
    study = load(
        tmp_path,
        """
        name: r
        runs:
          - label: tiny
            model: {n_layer: 2}
          - {label: wide, model.n_embd: 256, optim.lr: 1e-3}
          - {model.n_head: 8, model: {n_layer: 1}}
        """,
    )
    assert [r.label for r in study.runs] == ["tiny", "wide", "L1-H8-C128-T64"]
    assert col(study, "model.n_layer") == [2, 4, 1]
    assert col(study, "model.n_embd") == [128, 256, 128]
    assert col(study, "optim.lr")[1] == 0.001


def test_seeds_multiply_every_point_and_share_its_label(tmp_path: Path) -> None:
    study = load(
        tmp_path,
        """
        name: s
        base: {train: {seed: 7}}
        grid: {model.n_layer: [2, 4]}
        seeds: [0, 1, 2]
        """,
    )
    assert len(study.runs) == 6
    assert col(study, "train.seed") == [0, 1, 2, 0, 1, 2]
    assert [r.label for r in study.runs] == ["L2-H4-C128-T64"] * 3 + ["L4-H4-C128-T64"] * 3
    assert len({r.run_id for r in study.runs}) == 6


def test_precedence_base_runs_grid_seeds(tmp_path: Path) -> None:
    study = load(
        tmp_path,
        """
        name: p
        base:
          model: {n_layer: 1, n_embd: 64, dropout: 0.1}
          optim: {lr: 1e-2}
          train: {seed: 5, batch_size: 4}
        runs:
          - {model.n_layer: 2, optim.lr: 3e-3}
        grid: {model.n_embd: [32]}
        seeds: [11]
        """,
    )
    (run,) = study.runs
    cfg = run.config
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.model.dropout) == (2, 32, 0.1)
    assert cfg.optim.lr == 0.003 and cfg.train.seed == 11 and cfg.train.batch_size == 4
    # a runs entry's key that grid, zip or seeds also set would be overridden in every
    # point: an error rather than a value that silently never applies
    for clash, where in (("grid: {model.n_layer: [3]}", "grid"), ("seeds: [11]", "seeds")):
        key = "model.n_layer: 2" if where == "grid" else "train.seed: 9"
        message = error(tmp_path, f"name: p\nruns: [{{{key}}}]\n{clash}\n")
        assert f"runs[0].{key.split(':')[0]}: also set in {where}" in message, message


def test_base_budget_replaces_the_default_budget(tmp_path: Path) -> None:
    study = load(tmp_path, "name: b\nbase: {budget: {max_flops: 1e13}}\n")
    budget = study.runs[0].config.budget
    assert budget.max_flops == 1e13 and budget.max_steps is None
    assert budget_str(budget) == "1e13 FLOPs"


# ----- labels ----------------------------------------------------------------------------


def test_shared_derived_labels_get_the_differing_swept_values(tmp_path: Path) -> None:
    study = load(
        tmp_path,
        """
        name: l
        grid:
          model.n_layer: [2, 4]
          optim.lr: [1e-3, 3e-3]
          budget.max_steps: [100]
        seeds: [0, 1]
        """,
    )
    labels = [r.label for r in study.runs]
    assert labels[:4] == ["L2-H4-C128-T64 lr=0.001"] * 2 + ["L2-H4-C128-T64 lr=0.003"] * 2
    assert "L4-H4-C128-T64 lr=0.003" in labels
    assert len(set(labels)) == 4  # unique except for seeds


def test_explicit_labels_shared_by_grid_points_are_disambiguated(tmp_path: Path) -> None:
    study = load(
        tmp_path,
        """
        name: l
        runs: [{label: tiny, model.n_layer: 1}]
        grid: {budget.max_tokens: [1e5, 2.5e6]}
        """,
    )
    assert [r.label for r in study.runs] == ["tiny max_tokens=1e5", "tiny max_tokens=2.5e6"]


def test_same_explicit_label_on_two_runs_entries(tmp_path: Path) -> None:
    runs = "runs: [{label: a, optim.lr: 1e-3}, {label: a, optim.lr: 2e-3}]\n"
    study = load(tmp_path, "name: l\n" + runs)
    assert [r.label for r in study.runs] == ["a lr=0.001", "a lr=0.002"]


def test_labels_ignore_seed_sweeps_in_the_grid(tmp_path: Path) -> None:
    study = load(tmp_path, "name: l\ngrid: {train.seed: [1, 2]}\n")
    assert [r.label for r in study.runs] == ["L4-H4-C128-T64"] * 2


def test_derive_label() -> None:
    study = parse_study({"name": "d", "base": {"model": {"n_layer": 6, "block_size": 256}}})
    assert derive_label(study.runs[0].config) == "L6-H4-C128-T256"


# ----- run ids ---------------------------------------------------------------------------

BASE = """
name: ids
description: id checks
base:
  model: {n_layer: 2, n_embd: 64}
  budget: {max_steps: 100}
  sample: {temperatures: [0.8]}
runs:
  - {label: one}
"""


def test_run_id_is_stable_across_loads(tmp_path: Path) -> None:
    a = load_study(write(tmp_path, BASE, "a.yaml"))
    b = load_study(write(tmp_path, BASE, "b.yaml"))
    fingerprint = corpus_fingerprint(a.runs[0].config.data.corpus)
    assert a.runs[0].run_id == b.runs[0].run_id == a.runs[0].config.run_id(fingerprint)
    assert a.description == "id checks"


@pytest.mark.parametrize(
    "change",
    [
        "model.dropout: 0.1",
        "model.block_size: 32",
        "optim.beta2: 0.95",
        "train.eval_iters: 5",
        "train.seed: 3",
        "budget.max_steps: 101",
        "budget.max_seconds: 60",
        "data.corpus: synthetic",
        "data.val_fraction: 0.2",
    ],
)
def test_run_id_changes_with_any_config_value(tmp_path: Path, change: str) -> None:
    before = load_study(write(tmp_path, BASE, "a.yaml")).runs[0].run_id
    text = BASE.replace("{label: one}", "{label: one, " + change + "}")
    after = load_study(write(tmp_path, text, "b.yaml")).runs[0].run_id
    assert before != after


@pytest.mark.parametrize(
    "change", ["sample.temperatures: [0.5, 1.0]", "sample.seed: 4", "label: two"]
)
def test_run_id_ignores_sample_settings_and_label(tmp_path: Path, change: str) -> None:
    text = BASE.replace("{label: one}", "{label: one, " + change + "}")
    if change.startswith("label"):
        text = BASE.replace("{label: one}", "{" + change + "}")
    before = load_study(write(tmp_path, BASE, "a.yaml")).runs[0]
    after = load_study(write(tmp_path, text, "b.yaml")).runs[0]
    assert before.run_id == after.run_id
    assert before.config != after.config or before.label != after.label


# ----- errors ----------------------------------------------------------------------------


def test_missing_file_and_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(StudyError, match=r"nope\.yaml: no such file"):
        load_study(tmp_path / "nope.yaml")
    assert "expected a mapping" in error(tmp_path, "- a\n- b\n")
    assert "empty" in error(tmp_path, "")


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    message = error(tmp_path, "name: y\ngrid:\n  model.n_layer: [2, 4\n  optim.lr: [1]\n")
    assert message.startswith("line 4: YAML syntax error: ")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # PyYAML alone keeps the last value of a repeated key; chargpt refuses it at every level.
        (
            "name: y\nbase:\n  optim: {lr: 1e-3}\n  model: {n_layer: 2}\n  optim: {lr: 3e-3}\n",
            "duplicate key: 'optim' is given twice (lines 3 and 5)",
        ),
        ("name: y\nname: z\n", "duplicate key: 'name' is given twice (lines 1 and 2)"),
        (
            "name: y\nbase:\n  model:\n    n_layer: 2\n    n_layer: 4\n",
            "duplicate key: 'n_layer' is given twice (lines 4 and 5)",
        ),
        (
            "name: y\nruns:\n  - {label: a, model.n_layer: 1, model.n_layer: 2}\n",
            "duplicate key: 'model.n_layer' is given twice (lines 3 and 3)",
        ),
    ],
)
def test_duplicate_keys_are_refused_with_both_lines(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert error(tmp_path, text) == expected


def test_yaml_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    text = (
        "name: y\nbase:\n  model: &m {n_layer: 2, n_head: 2}\n"
        "runs:\n  - {label: a, model: {<<: *m, n_layer: 3}}\n"
    )
    study = load_study(write(tmp_path, text))
    assert study.runs[0].config.model.n_layer == 3 and study.runs[0].config.model.n_head == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: e\ngird: {model.n_layer: [2]}\n", "gird: unknown key (did you mean 'grid'?)"),
        ("grid: {model.n_layer: [2]}\n", "name: missing"),
        ("name: 'a b'\n", "name: must be"),
        ("name: '..'\n", "name: must be"),
        ("name: e\ndescription: [1]\n", "description: expected a string"),
        ("name: e\nskip_invalid: 1\n", "skip_invalid: expected true or false"),
        ("name: e\nskip_invalid: 0\n", "skip_invalid: expected true or false"),
    ],
)
def test_top_level_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error(tmp_path, text)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # unknown keys, with suggestions from the dotted keys
        (
            "grid: {model.n_layr: [2]}\n",
            "grid.model.n_layr: unknown key (did you mean 'model.n_layer'?)",
        ),
        ("grid: {n_layer: [2]}\n", "grid.n_layer: unknown key (did you mean 'model.n_layer'?)"),
        ("grid: {lr: [1]}\n", "grid.lr: unknown key (did you mean 'optim.lr'?)"),
        (
            "grid: {model: {n_layer: [2]}}\n",
            "grid.model: unknown key (use dotted keys such as 'model.n_layer')",
        ),
        ("zip: [{optim.lrr: [1]}]\n", "zip[0].optim.lrr: unknown key (did you mean 'optim.lr'?)"),
        ("runs: [{modle: {n_layer: 2}}]\n", "runs[0].modle: unknown key (did you mean 'model'?)"),
        (
            "runs: [{}, {model.n_embdd: 2}]\n",
            "runs[1].model.n_embdd: unknown key (did you mean 'model.n_embd'?)",
        ),
        (
            "runs: [{model: {n_heads: 2}}]\n",
            "runs[0].model.n_heads: unknown key (did you mean 'n_head'?)",
        ),
        (
            "base: {optim: {betta1: 0.8}}\n",
            "base.optim.betta1: unknown key (did you mean 'beta1'?)",
        ),
        ("base: {label: x}\n", "base.label: unknown key"),
        # wrong types
        ("grid: {model.n_layer: 2}\n", "grid.model.n_layer: expected a list of values, got 2"),
        ("grid: [model.n_layer]\n", "grid: expected a mapping"),
        ("grid: {model.n_layer: [2, x]}\n", "grid.model.n_layer[1]: expected an integer, got 'x'"),
        ("grid: {optim.lr: [1e-3, abc]}\n", "grid.optim.lr[1]: expected a number, got 'abc'"),
        ("runs: [{model.bias: 1}]\n", "runs[0].model.bias: expected true or false, got 1"),
        ("runs: {label: x}\n", "runs: expected a list"),
        ("runs: [3]\n", "runs[0]: expected a mapping"),
        ("runs: [{label: ''}]\n", "runs[0].label: expected a non-empty"),
        ("zip: {model.n_embd: [64]}\n", "zip: expected a list of groups"),
        (
            "zip: [{model.n_embd: [64, 128], optim.lr: [1e-3]}]\n",
            "zip[0].optim.lr: has 1 values but model.n_embd has 2",
        ),
        ("seeds: 3\n", "seeds: expected a list of integers"),
        ("seeds: [0, 1.5]\n", "seeds[1]: expected a non-negative integer, got 1.5"),
        ("seeds: [0, -1]\n", "seeds[1]: expected a non-negative integer"),
        ("seeds: [1, 1]\n", "seeds[1]: duplicate seed 1"),
        # empty
        ("grid: {model.n_layer: []}\n", "grid.model.n_layer: must list at least one value"),
        ("grid: {}\n", "grid: must not be empty"),
        ("runs: []\n", "runs: must list at least one run"),
        ("seeds: []\n", "seeds: must list at least one seed"),
        ("zip: []\n", "zip: must list at least one group"),
        # set in two places
        (
            "grid: {model.n_embd: [64]}\nzip: [{model.n_embd: [128]}]\n",
            "zip[0].model.n_embd: also set in grid",
        ),
        ("zip: [{optim.lr: [1]}, {optim.lr: [2]}]\n", "zip[1].optim.lr: also set in zip[0]"),
        ("grid: {train.seed: [1]}\nseeds: [0]\n", "grid.train.seed: also set by seeds"),
        ("runs: [{model: {n_layer: 2}, model.n_layer: 3}]\n", "runs[0].model.n_layer: set twice"),
        (
            "runs: [{label: a}, {label: w, train: {batch_size: 8}}]\n"
            "zip: [{model.block_size: [64, 128], train.batch_size: [16, 8]}]\n",
            "runs[1].train.batch_size: also set in zip[0], whose values would override it",
        ),
        (
            "runs: [{label: a, optim.lr: 2e-3}]\ngrid: {optim.lr: [1e-3, 3e-3]}\n",
            "runs[0].optim.lr: also set in grid",
        ),
        ("grid: {optim.lr: [1e-3, 0.001]}\n", "grid.optim.lr[1]: duplicate value 0.001"),
    ],
)
def test_errors_name_the_key_path(tmp_path: Path, body: str, expected: str) -> None:
    assert expected in error(tmp_path, "name: e\n" + body)


def test_impossible_values_name_the_point(tmp_path: Path) -> None:
    message = error(tmp_path, "name: e\ngrid: {model.n_head: [2, 3], model.n_embd: [128]}\n")
    assert message == (
        "grid point {model.n_head: 3, model.n_embd: 128}: "
        "model.n_embd: must be divisible by n_head=3, got 128"
    )
    runs = "name: e\nruns: [{}, {}, {model: {n_head: 3, n_embd: 100}}]\n"
    assert error(tmp_path, runs) == "runs[2].model.n_embd: must be divisible by n_head=3, got 100"
    base = error(tmp_path, "name: e\nbase: {model.n_layer: 0}\n")
    assert base.startswith("base.model.n_layer: must be")
    both = error(tmp_path, "name: e\nruns: [{model.n_head: 3}]\ngrid: {model.n_layer: [1]}\n")
    assert both.startswith("runs[0], grid point {model.n_layer: 1}: model.n_embd: must be")


def test_duplicate_points_name_both(tmp_path: Path) -> None:
    same = "name: e\nruns: [{model.n_layer: 2}, {label: b, model.n_layer: 2}]\n"
    message = error(tmp_path, same)
    assert message.startswith("runs[1]: resolves to the same run as runs[0] (run_id ")
    sample_only = "name: e\nruns: [{}, {sample.seed: 3}]\n"
    assert "runs[1]: resolves to the same run as runs[0]" in error(tmp_path, sample_only)
    explicit_default = (
        "name: e\nruns: [{}]\ngrid: {model.n_layer: [2, 4]}\nzip: [{model.n_embd: [128, 128]}]\n"
    )
    assert "same run as runs[0], grid point {model.n_layer: 2, model.n_embd: 128}" in error(
        tmp_path, explicit_default
    )


def test_skip_invalid_records_the_invalid_points(tmp_path: Path) -> None:
    study = load(
        tmp_path,
        """
        name: s
        skip_invalid: true
        grid: {model.n_head: [2, 3, 4], model.n_embd: [64, 128]}
        seeds: [0, 1]
        """,
    )
    assert len(study.runs) == 2 * 2 * 2  # n_head 3 divides neither width
    assert [r.index for r in study.runs] == list(range(8))
    why = "model.n_embd: must be divisible by n_head=3"
    assert study.skipped == tuple(
        (f"grid point {{model.n_head: 3, model.n_embd: {c}}}", f"{why}, got {c}") for c in (64, 128)
    )


def test_skip_invalid_still_fails_when_every_point_is_invalid(tmp_path: Path) -> None:
    message = error(tmp_path, "name: s\nskip_invalid: true\ngrid: {model.n_head: [3, 5]}\n")
    first = "first: grid point {model.n_head: 3}"
    assert message.startswith(f"every point is invalid (2 of 2 skipped); {first}")


def test_skip_invalid_does_not_hide_key_errors(tmp_path: Path) -> None:
    text = "name: s\nskip_invalid: true\ngrid: {model.n_hed: [3]}\n"
    assert "unknown key" in error(tmp_path, text)


def test_parse_study_and_expand_are_pure() -> None:
    data = {"name": "p", "grid": {"optim.lr": ["1e-3", "2e-3"]}, "seeds": [0, 1]}
    study = parse_study(data, "mem.yaml")
    assert study.path is None and len(study.runs) == 4
    runs, skipped = expand(data)
    assert [r.run_id for r in runs] == [r.run_id for r in study.runs] and skipped == ()
    with pytest.raises(StudyError, match=r"^mem\.yaml: seeds\[0\]: "):
        parse_study({"name": "p", "seeds": ["a"]}, "mem.yaml")
    with pytest.raises(StudyError, match=r"^<study>: grid"):
        expand({"grid": 3})


def test_dotted_keys_cover_every_section() -> None:
    assert {
        "model.n_layer",
        "optim.lr",
        "train.seed",
        "budget.max_flops",
        "data.corpus",
        "sample.temperatures",
    } <= set(DOTTED_KEYS)


# ----- plan rows and budgets -------------------------------------------------------------


def test_plan_rows(tmp_path: Path) -> None:
    study = load(tmp_path, "name: p\nruns: [{label: a}, {label: b, model.vocab_size: 10}]\n")
    rows = plan_rows(study)
    assert list(rows[0])[:4] == ["run_id", "label", "n_layer", "n_head"]
    assert rows[0]["run_id"] == study.runs[0].run_id and rows[0]["label"] == "a"
    assert rows[0]["n_params"] is None and rows[0]["flops_per_token"] is None
    assert rows[1]["n_params"] > 0  # vocab_size set in the config itself
    with_vocab = plan_rows(study, vocab_size=65)
    assert with_vocab[0]["vocab_size"] == 65 and with_vocab[1]["vocab_size"] == 10
    assert with_vocab[0]["n_params"] > with_vocab[0]["n_params_non_embedding"] > 0
    assert with_vocab[0]["flops_per_token"] > 6 * with_vocab[0]["n_params_non_embedding"]
    assert set(rows[0]) == set(with_vocab[0])


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"max_steps": 2000}, "2000 steps"),
        ({"max_flops": 1e13}, "1e13 FLOPs"),
        ({"max_seconds": 60.0}, "60 s"),
        ({"max_seconds": 0.5}, "0.5 s"),
        ({"max_tokens": 1_000_000}, "1e6 tokens"),
        ({"max_steps": 123457}, "123457 steps"),
        (
            {"max_steps": 5000, "max_flops": 2.5e12, "max_seconds": 90.0},
            "5000 steps | 2.5e12 FLOPs | 90 s",
        ),
    ],
)
def test_budget_str(kwargs: dict, expected: str) -> None:
    assert budget_str(Budget(**kwargs)) == expected


def test_load_recipe_takes_one_run_with_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, "name: r\nbase:\n  model: {n_layer: 2}\n  budget: {max_steps: 10}\n")
    run = load_recipe(path, {"model.attn_impl": "sdpa", "budget": {"max_tokens": 640}})
    assert (run.model.n_layer, run.model.attn_impl) == (2, "sdpa")
    assert (run.budget.max_steps, run.budget.max_tokens) == (None, 640)
    with pytest.raises(StudyError, match=r"budget\.max_steps: must be positive"):
        load_recipe(path, {"budget.max_steps": 0})
    two = write(tmp_path, "name: r\ngrid: {optim.lr: [1e-3, 2e-3]}\n", "two.yaml")
    with pytest.raises(StudyError, match="a recipe plans one run, this file plans 2"):
        load_recipe(two)
    dup = write(tmp_path, "name: r\nbase:\n  optim: {lr: 1}\n  optim: {lr: 2}\n", "dup.yaml")
    with pytest.raises(StudyError, match="duplicate key: 'optim'"):
        load_recipe(dup)
