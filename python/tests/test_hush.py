"""The hush package on files it makes: every exposed flow, its errors, and
DataFrame/Arrow inputs against the equivalent file."""

import csv
import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import hush

from conftest import ML_MAPPING

# Small, fast training settings; the same for every compared run.
PARAMS = {"rank": 4, "iterations": 4}


def rows_of(path: Path) -> int:
    with open(path, newline="") as f:
        return sum(1 for _ in csv.reader(f)) - 1


def without_run_facts(metrics: dict) -> dict:
    """Metrics minus what differs between two runs of the same model (its id, timings)."""
    return {k: v for k, v in metrics.items() if k not in ("model_id", "train_seconds")}


# ---- synth and extract ------------------------------------------------------


def test_synth_writes_a_storefront(tmp_path):
    summary = hush.synth(tmp_path / "s", subjects=50, items=20, seed=1)
    assert summary["subjects"] == 50
    assert summary["items"] == 20
    for name in ("events.csv", "consent.csv", "items.csv", "erasure_requests.csv"):
        assert (tmp_path / "s" / name).is_file(), name
    assert rows_of(tmp_path / "s" / "events.csv") == summary["events"]


def test_synth_refuses_an_unknown_format(tmp_path):
    with pytest.raises(hush.InputError, match="format: `parquet` is not one of"):
        hush.synth(tmp_path, format="parquet")


def test_research_extraction_reads_every_row_and_is_research_only(movielens, research):
    assert research.research_only
    report = research.report
    assert report["rows_in"] == rows_of(movielens)
    assert report["research_data"] is True
    assert research.n_subjects == report["subjects"] > 0
    assert research.n_interactions == report["interactions"] > 0
    assert research.n_items == len(research.items) == report["items"]


def test_feature_set_saves_and_loads_with_its_report(tmp_path, research):
    research.save(tmp_path / "f.hfs")
    assert (tmp_path / "f.report.json").is_file()
    loaded = hush.load_features(tmp_path / "f.hfs")
    assert loaded.items == research.items
    assert loaded.n_interactions == research.n_interactions
    assert loaded.report == research.report


def test_dataframe_and_arrow_inputs_give_the_files_model_and_metrics(movielens, research):
    frame = pd.read_csv(movielens)
    from_frame = hush.extract(
        frame, mapping=ML_MAPPING, research_data=True, feedback="explicit", sampling_seed=5
    )
    table = pa.Table.from_pandas(frame, preserve_index=False)
    from_table = hush.extract(
        table, mapping=ML_MAPPING, research_data=True, feedback="explicit", sampling_seed=5
    )
    for other in (from_frame, from_table):
        assert other.items == research.items
        assert other.n_subjects == research.n_subjects
        assert other.n_interactions == research.n_interactions
        assert other.report["dropped_events"] == research.report["dropped_events"]
    models = [
        hush.train(s, epsilon=2.0, noise_seed=9, split="holdout:0.2:42", params=PARAMS)
        for s in (research, from_frame, from_table)
    ]
    for model in models[1:]:
        np.testing.assert_array_equal(model.item_factors, models[0].item_factors)
        assert without_run_facts(model.metrics) == without_run_facts(models[0].metrics)


def test_a_malformed_row_raises_with_its_row_and_field():
    frame = pd.DataFrame(
        {
            "subject_id": ["a", "b", "c"],
            "item_id": ["i1", "i2", "i3"],
            "value": [1.0, 1.0, 1.0],
            "timestamp": ["2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z", "not a time"],
        }
    )
    with pytest.raises(hush.InputError) as caught:
        hush.extract(frame, research_data=True, strict=True)
    assert "<DataFrame>:3: field `timestamp`" in str(caught.value)
    # Lenient: one bad row in three is more than the allowed fraction.
    with pytest.raises(hush.InputError, match=r"1 of 3 input rows are malformed"):
        hush.extract(frame, research_data=True)


def test_an_arrow_table_names_its_bad_row_too():
    table = pa.table({"subject_id": ["a", ""], "item_id": ["i1", "i2"], "timestamp": ["1700000000", "1700000001"]})
    with pytest.raises(hush.InputError, match=r"<Arrow table>:2: field `subject_id`"):
        hush.extract(table, research_data=True, strict=True)


def test_a_missing_column_is_named():
    frame = pd.DataFrame({"subject_id": ["a"], "timestamp": ["1700000000"]})
    with pytest.raises(hush.InputError, match=r"field `item_id`: column is missing"):
        hush.extract(frame, research_data=True)


def test_an_unknown_setting_is_named(movielens):
    with pytest.raises(hush.InputError, match="snapshot_when"):
        hush.extract(movielens, format="movielens-csv", research_data=True, snapshot_when="now")


def test_consented_data_without_a_store_is_refused(shop):
    with pytest.raises(hush.StoreError, match="consent ledger"):
        hush.extract(shop / "events.csv")


def test_a_missing_file_raises_the_command_lines_message(tmp_path):
    with pytest.raises(hush.HushError, match="nowhere.csv"):
        hush.extract(tmp_path / "nowhere.csv", research_data=True)


# ---- train --------------------------------------------------------------------


def test_dp_training_on_research_data_is_never_releasable(research):
    model = hush.train(research, epsilon=4.0, params=PARAMS)
    privacy = model.meta["privacy"]
    assert "dp" in json.dumps(privacy).lower()
    assert model.meta["data"]["research_only"] is True
    assert any("research" in reason for reason in model.not_releasable_because)
    factors = model.item_factors
    assert isinstance(factors, np.ndarray)
    assert factors.dtype == np.float32
    assert factors.shape == (research.n_items, model.rank) == (research.n_items, 4)
    assert model.metrics is None
    assert "-DP" in model.guarantee


def test_the_twin_has_no_guarantee_and_noise_changes_dp_factors(research):
    twin = hush.train(research, non_private=True, params=PARAMS)
    assert "non-private" in twin.guarantee
    dp = hush.train(research, epsilon=1.0, noise_seed=1, params=PARAMS)
    assert not np.array_equal(twin.item_factors, dp.item_factors)
    again = hush.train(research, epsilon=1.0, noise_seed=1, params=PARAMS)
    np.testing.assert_array_equal(dp.item_factors, again.item_factors)


def test_training_needs_exactly_one_privacy_choice(research):
    with pytest.raises(hush.InputError, match="choose a privacy budget"):
        hush.train(research)
    with pytest.raises(hush.InputError, match="choose a privacy budget"):
        hush.train(research, epsilon=1.0, non_private=True)
    with pytest.raises(hush.HushError, match="epsilon"):
        hush.train(research, epsilon=-1.0)


def test_a_split_model_is_for_evaluation_only(research):
    with pytest.raises(hush.InputError, match="a model trained on a split is for evaluation"):
        hush.train(research, epsilon=1.0, split="holdout:0.2:1", purpose="release")
    model = hush.train(research, epsilon=1.0, split="holdout:0.2:1", params=PARAMS)
    assert model.meta["purpose"] == "evaluation"
    assert model.metrics["k"] == 10
    assert model.metrics["research_only"] is True


def test_train_writes_the_model_and_its_card_and_refuses_to_overwrite(tmp_path, research):
    out = tmp_path / "m.hmdl"
    model = hush.train(research, epsilon=2.0, split="holdout:0.2:3", params=PARAMS, out=out)
    assert str(out) in model.files
    for suffix in ("card.md", "card.html", "evaluation.md", "evaluation.json"):
        assert (tmp_path / f"m.{suffix}").is_file(), suffix
    with pytest.raises(hush.InputError, match="force=True"):
        hush.train(research, epsilon=2.0, params=PARAMS, out=out)
    hush.train(research, epsilon=2.0, params=PARAMS, out=out, force=True)
    loaded = hush.load_model(out)
    assert loaded.model_id != model.model_id


def test_training_releases_the_gil(research):
    done = threading.Event()
    result = {}

    def work():
        result["model"] = hush.train(research, non_private=True, params={"rank": 16, "iterations": 40})
        done.set()

    worker = threading.Thread(target=work)
    ticks = 0
    worker.start()
    started = time.perf_counter()
    while not done.is_set():
        ticks += 1
    elapsed = time.perf_counter() - started
    worker.join()
    assert "model" in result
    # Had training held the GIL, this loop could not have run during it.
    assert elapsed > 0.01 and ticks > 1000, (elapsed, ticks)


# ---- evaluate -----------------------------------------------------------------


def test_evaluate_returns_the_cli_metrics_and_a_group_table(research, tmp_path):
    metrics = hush.evaluate(research, epsilon=2.0, noise_seed=3, params=PARAMS, k=5, write_split=tmp_path / "split")
    for key in ("rmse", "mae", "precision_at_5", "recall_at_5", "ndcg_at_5", "coverage", "baselines"):
        assert key in metrics, key
    assert metrics["private"] is True
    assert metrics["epsilon"] <= 2.0 + 1e-9
    assert (tmp_path / "split" / "train.csv").is_file()
    assert rows_of(tmp_path / "split" / "train.csv") == metrics["interactions"]
    table = hush.evaluation_table(metrics)
    assert list(table["group"]) == ["heavy", "light", "medium", "head", "tail"]
    assert table["recall"].between(0, 1).all()
    # The same split as Parquet: the same rows, typed.
    hush.evaluate(research, epsilon=2.0, noise_seed=3, params=PARAMS, k=5,
                  write_split=tmp_path / "pq", split_format="parquet")
    for part in ("train", "test"):
        from_csv = pd.read_csv(tmp_path / "split" / f"{part}.csv", dtype={"item_id": str})
        from_parquet = pd.read_parquet(tmp_path / "pq" / f"{part}.parquet")
        assert list(from_parquet.columns) == ["subject_index", "item_id", "value"]
        assert str(from_parquet["subject_index"].dtype) == "uint32"
        assert from_csv["item_id"].tolist() == from_parquet["item_id"].tolist()
        assert from_csv["subject_index"].tolist() == from_parquet["subject_index"].tolist()
    with pytest.raises(hush.HushError, match="csv or parquet"):
        hush.evaluate(research, non_private=True, write_split=tmp_path / "x", split_format="xlsx")


def test_evaluate_a_model_file_and_refuse_one_of_other_data(research, tmp_path):
    out = tmp_path / "m.hmdl"
    hush.train(research, non_private=True, params=PARAMS, out=out)
    metrics = hush.evaluate(research, model=out)
    assert metrics["private"] is False
    other = hush.extract(
        pd.DataFrame({"subject_id": ["a", "b"], "item_id": ["x", "y"], "timestamp": ["1700000000", "1700000000"]}),
        research_data=True,
    )
    with pytest.raises(hush.InputError, match="the model has"):
        hush.evaluate(other, model=out, split="holdout:0.5:1")
    with pytest.raises(hush.HushError, match="holdout"):
        hush.evaluate(research, split="sideways", non_private=True)


# ---- sweep --------------------------------------------------------------------


def test_sweep_writes_its_report_and_resumes(research, tmp_path):
    results = hush.sweep(research, tmp_path / "sw", epsilons=[1, 4], seeds=1, params=PARAMS)
    table = results["table"]
    assert sorted(table["arm"].unique()) == ["baseline", "dp", "non_private"]
    assert len(table) == 1 + 1 + 2
    assert results["computed"] == 4 and results["reused"] == 0
    for name in ("results.json", "results.csv", "results.parquet", "report.html"):
        assert (tmp_path / "sw" / name).is_file()
    long = pd.read_parquet(tmp_path / "sw" / "results.parquet")
    assert len(long) == len(pd.read_csv(tmp_path / "sw" / "results.csv"))
    assert "sentence" in results["recommendation"]
    again = hush.sweep(research, tmp_path / "sw", epsilons=[1, 4], seeds=1, params=PARAMS)
    assert again["computed"] == 0 and again["reused"] == 4
    with pytest.raises(hush.InputError, match="--epsilons"):
        hush.sweep(research, tmp_path / "bad", epsilons=[0])


# ---- model inspect, dump, recommend -------------------------------------------


def test_inspect_dump_card_and_recommend(research, tmp_path):
    out = tmp_path / "m.hmdl"
    model = hush.train(research, epsilon=4.0, params=PARAMS, out=out)
    info = hush.inspect(out)
    assert info["items"] == research.n_items and info["rank"] == 4
    dumped = hush.dump(out)
    np.testing.assert_array_equal(dumped["item_factors"], model.item_factors)
    assert dumped["items"] == model.items
    assert len(dumped["item_bias"]) == research.n_items
    assert "DP" in hush.card(out) or "differential" in hush.card(out).lower()
    assert hush.card(out, html=True).lstrip().lower().startswith("<!doctype html")
    history = model.items[:3]
    recs = hush.recommend(out, history + ["no-such-item"], k=5)
    assert list(recs.columns) == ["rank", "item", "score"]
    assert list(recs["rank"]) == [1, 2, 3, 4, 5]
    assert not set(recs["item"]) & set(history)
    assert recs["score"].is_monotonic_decreasing
    assert recs.attrs["unknown_items"] == ["no-such-item"]
    assert recs.attrs["personalized"] is True
    popular = hush.recommend(model, ["no-such-item"], k=3)
    assert popular.attrs["personalized"] is False and len(popular) == 3
    with pytest.raises(hush.InputError, match="--values has 1 entries but --items has 3"):
        hush.recommend(model, history, values=[5.0])


def test_a_broken_model_file_raises_a_model_error(tmp_path):
    bad = tmp_path / "bad.hmdl"
    bad.write_bytes(b"not a model")
    with pytest.raises(hush.ModelError):
        hush.load_model(bad)


# ---- the consent ledger and the budget ------------------------------------------


def test_store_extraction_applies_consent_and_dp_training_spends_the_budget(store, shop, tmp_path):
    db, run = store
    data = hush.extract(shop / "events.csv", store=db, catalogue=shop / "items.csv")
    assert not data.research_only
    report = data.report
    dropped_subjects = sum(report["dropped_subjects"].values())
    assert dropped_subjects > 0, report["dropped_subjects"]
    assert report["rows_in"] == rows_of(shop / "events.csv")
    # The budget is the store's: no store, no training.
    with pytest.raises(hush.StoreError, match="budget"):
        hush.train(data, epsilon=1.0, params=PARAMS)
    model = hush.train(data, epsilon=1.0, params=PARAMS, store=db, out=tmp_path / "release.hmdl")
    assert model.not_releasable_because == []
    spent = json.loads(run("budget", "show", "--json"))
    release = [row for row in spent if row["purpose"] == "release"]
    assert release and release[0]["spent_rho"] > 0
    runs = json.loads(run("budget", "runs", "--json"))
    assert [r["model_id"] for r in runs if r["state"] == "committed"] == [model.model_id]
    # Past the lifetime cap (epsilon 10): refused before any noise is drawn.
    with pytest.raises(hush.BudgetError, match="would exceed the lifetime budget"):
        hush.train(data, epsilon=50.0, params=PARAMS, store=db)
    runs_after = json.loads(run("budget", "runs", "--json"))
    assert len(runs_after) == len(runs)


def test_dataframe_events_with_a_store_match_the_file(store, shop):
    db, _ = store
    from_file = hush.extract(shop / "events.csv", store=db)
    frame = pd.read_csv(shop / "events.csv", dtype=str, keep_default_na=False)
    from_frame = hush.extract(frame, store=db)
    assert from_frame.items == from_file.items
    assert from_frame.n_interactions == from_file.n_interactions
    assert from_frame.report["dropped_subjects"] == from_file.report["dropped_subjects"]
    assert from_frame.report["dropped_events"] == from_file.report["dropped_events"]


# ---- the README's example -----------------------------------------------------


def test_the_readme_python_example_runs(tmp_path, monkeypatch):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n## Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "README.md has a ## Python section with a ```python block"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})


def test_every_error_class_is_a_hush_error():
    for cls in (hush.InputError, hush.BudgetError, hush.StoreError, hush.ModelError, hush.FileError):
        assert issubclass(cls, hush.HushError)
        assert cls.__module__ == "hush"
    assert issubclass(hush.HushError, Exception)
