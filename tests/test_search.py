"""``cropseg search`` (issue 18, item 8): trials scored by spatial CV on the training scene only, the test
scene read only for the one final test, a wall-time budget on a controllable clock, trials as child runs
of a sweep-like parent that ``cropseg compare`` reads. Scenes are tiny and SYNTHETIC (cropseg.testing);
runs, store (sqlite) and files are real."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from cropseg.cli import main
from cropseg.search import SearchOptions, search, search_values
from cropseg.testing import local_overrides, write_tiny_scene

FAST = ["tracking.log_model=false", "postprocessor=[median_blur]", "parallel.backend=serial"]
#: a small space: two quick classifiers, two feature sets, two kernels
SMALL = {"classifiers": ["knn", "logistic_regression"], "features": ["bands", "indices"], "kernels": [1, 5]}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    d = tmp_path_factory.mktemp("search-scenes")
    return write_tiny_scene(d, name="train", seed=1, noise=0.08), write_tiny_scene(d, name="test", seed=2, noise=0.08)


def _overrides(scenes, uri: str, cache: Path) -> list[str]:
    return [*local_overrides(*scenes)[:-1], f"tracking.uri={uri}", f"cache_dir={cache}", *FAST]


@pytest.fixture(scope="module")
def parallel_search(scenes, tmp_path_factory, store_template):
    """Four trials, two at a time, with every access to the test scene's files recorded by phase."""
    d = tmp_path_factory.mktemp("search")
    uri = store_template.copy(d)
    train, test = scenes
    test_files = {str(Path(p).resolve()) for p in (test.image, test.ground_truth, test.metadata)}
    events: list[tuple[str, str]] = []
    phase = {"now": "setup"}

    import geopandas
    import pyogrio
    import rasterio

    def spy(module, name):  # noqa: ANN001, ANN202
        real = getattr(module, name)

        def wrapper(path, *args, **kwargs):  # noqa: ANN001, ANN202
            try:
                resolved = str(Path(path).resolve())
            except TypeError:
                resolved = str(path)
            if resolved in test_files:
                events.append((phase["now"], f"{name} {Path(resolved).name}"))
            return real(path, *args, **kwargs)

        return wrapper

    lines: list[str] = []

    def progress(line: str) -> None:
        lines.append(line)
        if line.startswith("cropseg search:"):  # said once the setup is done, right before the trials
            phase["now"] = "trials"

    def before_final() -> None:
        assert not list(d.rglob("test_labels.tif"))  # the test scene was never labelled
        phase["now"] = "final"

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rasterio, "open", spy(rasterio, "open"))
        mp.setattr(geopandas, "read_file", spy(geopandas, "read_file"))
        mp.setattr(pyogrio, "read_info", spy(pyogrio, "read_info"))
        result = search(
            _overrides(scenes, uri, d / "cache"),
            SearchOptions(minutes=30, trials=4, jobs=2, posthoc_test=2, **SMALL),
            output_dir=d / "out",
            progress=progress,
            before_final=before_final,
        )
    return result, uri, events, lines, d


def test_trials_never_read_the_test_scene(parallel_search):
    result, _, events, lines, _ = parallel_search
    repeats = sum("repeats trial" in ln for ln in lines)  # a configuration proposed again is not rerun
    assert len(result.trials) + repeats == 4
    assert [e for e in events if e[0] == "trials"] == []
    # the spies see the test scene's files: the preflight checks them, the final run reads them
    assert any(e[0] == "setup" for e in events)
    final = {what for phase, what in events if phase == "final"}
    assert "open test.tif" in final and any("test_ground_truth.geojson" in w for w in final)
    assert sum(ln.startswith("trial ") for ln in lines) == 4  # a progress line per trial


def test_trials_and_the_chosen_run_are_children_of_one_sweep_parent(parallel_search, tmp_path, capsys):
    result, uri, _, lines, _ = parallel_search
    client = MlflowClient(uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["cropseg.sweep"] == "true"
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{result.parent_run_id}'", max_results=100
    )
    trials = [c for c in children if "cropseg.search.trial" in c.data.tags]
    assert len(trials) == len(result.trials) and len(children) == len(trials) + 1
    for t in trials:
        assert t.info.status == "FINISHED"
        assert not any(k.startswith("test_") for k in t.data.metrics)  # trials are never tested
        assert 0 < t.data.metrics["cv_crop_f1"] <= 1 and t.data.metrics["cv_score"] == t.data.metrics["cv_crop_f1"]
    best_cv = max(t.data.metrics["cv_crop_f1"] for t in trials)
    chosen = client.get_run(result.final_run_id)
    assert chosen.info.status == "FINISHED"
    assert chosen.data.metrics["search_cv_score"] == pytest.approx(best_cv)
    test = chosen.data.metrics["test_crop_f1"]
    assert chosen.data.metrics["cv_test_gap"] == pytest.approx(best_cv - test)
    assert result.gap == pytest.approx(best_cv - test)
    m = chosen.data.metrics
    assert 0 < m["cv_at_test_share"] <= 1
    assert m["cv_test_gap_at_test_share"] == pytest.approx(m["cv_at_test_share"] - test)
    assert parent.data.tags["cropseg.best_run_id"] == result.final_run_id
    # the chosen configuration is the best trial's: same classifier and features
    best = max(trials, key=lambda t: t.data.metrics["cv_crop_f1"])
    for stage in ("classifier", "features"):
        assert chosen.data.tags[f"cropseg.{stage}"] == best.data.tags[f"cropseg.{stage}"]
    # refit at the decision threshold the trial's CV chose (KNN and logistic regression give probabilities)
    assert float(chosen.data.params["fit.threshold"]) == pytest.approx(best.data.metrics["cv_threshold"], abs=1e-6)
    assert result.best.threshold == pytest.approx(best.data.metrics["cv_threshold"])
    assert "CV - test" in lines[-1]

    code = main(["compare", "--tracking-uri", uri, "--sweep", "latest", "--out", str(tmp_path / "cmp")])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    assert "different test data" not in err  # untested trials do not form a test group of their own
    with open(tmp_path / "cmp" / "comparison.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert rows[0]["run id"] == result.final_run_id and rows[0]["vs top"] == "top"
    assert sum(int(r["runs (seeds)"]) for r in rows) == len(children)


def test_posthoc_test_scores_the_best_trials_after_the_choice(parallel_search):
    """--posthoc-test 2: the two best trials by CV refit and tested once each, after the choice (the test
    scene's files are opened only in the final phase, above); the chosen trial's post-hoc score, computed
    apart from the ordinary run, equals that run's test score."""
    result, uri, _, lines, _ = parallel_search
    client = MlflowClient(uri)
    assert result.best.number in result.posthoc and len(result.posthoc) == min(2, len(result.trials))
    tested = [r.score for r in result.trials if r.number in result.posthoc]
    assert all(r.score <= min(tested) for r in result.trials if r.number not in result.posthoc)  # the best by CV
    chosen = client.get_run(result.final_run_id)
    assert result.posthoc[result.best.number] == pytest.approx(chosen.data.metrics["test_crop_f1"], abs=1e-9)
    by_number = {r.number: r for r in result.trials}
    for number, score in result.posthoc.items():
        m = client.get_run(by_number[number].run_id).data.metrics
        assert m["posthoc_test_crop_f1"] == pytest.approx(score)
        assert m["posthoc_cv_test_gap"] == pytest.approx(by_number[number].score - score)
    untested = [r for r in result.trials if r.number not in result.posthoc]
    for r in untested:
        assert "posthoc_test_crop_f1" not in client.get_run(r.run_id).data.metrics
    parent = client.get_run(result.parent_run_id).data
    best_test = max(result.posthoc.values())
    assert parent.metrics["posthoc_best_test_crop_f1"] == pytest.approx(best_test)
    assert parent.metrics["posthoc_chosen_minus_best"] == pytest.approx(result.posthoc[result.best.number] - best_test)
    assert parent.metrics["posthoc_chosen_minus_best"] <= 0
    # said after the choice and the chosen run's test, never before
    chosen_at = next(i for i, ln in enumerate(lines) if ln.startswith("chosen: trial"))
    posthoc_at = [i for i, ln in enumerate(lines) if ln.startswith("post-hoc")]
    assert len(posthoc_at) == len(result.posthoc) + 2 and min(posthoc_at) > chosen_at
    table = client.download_artifacts(result.parent_run_id, "posthoc_test.json")
    assert "test_crop_f1" in Path(table).read_text()


def test_budget_on_a_controllable_clock(scenes, tmp_path, store_template):
    """Each trial 'takes' 25 s of a fake clock: a one-minute budget starts trials at 0, 25 and 50 s and no
    more; the chosen one is still refit and tested."""
    uri = store_template.copy(tmp_path)
    now = {"t": 1000.0}
    lines: list[str] = []

    def progress(line: str) -> None:
        lines.append(line)
        if line.startswith("trial "):
            now["t"] += 25.0

    result = search(
        _overrides(scenes, uri, tmp_path / "cache"),
        SearchOptions(minutes=1, jobs=1, **SMALL),
        output_dir=tmp_path / "out",
        clock=lambda: now["t"],
        progress=progress,
    )
    assert sum(ln.startswith("trial ") for ln in lines) == 3 and 1 <= len(result.trials) <= 3
    assert result.times["deadline"] == 1060.0 and result.times["final"] >= result.times["deadline"]
    assert result.final_run_id and 0 <= result.test_score <= 1


def test_a_spent_budget_stops_a_trial_between_folds(scenes, tmp_path):
    from cropseg.config import compose
    from cropseg.pipeline import build_stages
    from cropseg.search import _Budget, pipeline_cv
    from cropseg.targets import get_target

    cfg = compose([*local_overrides(*scenes), f"cache_dir={tmp_path / 'cache'}", *FAST])
    st = build_stages(cfg)
    train = st.source.load(tmp_path / "cache").train
    labels = st.labeler.label(train, tmp_path / "labels.tif")
    calls = []

    def spent() -> bool:
        calls.append(1)
        return len(calls) > 1  # the budget ends after the first fold

    with pytest.raises(_Budget):
        pipeline_cv(cfg, st.registry, train, labels, get_target("crop_f1"), 3, tmp_path, spent)
    assert len(calls) == 2
    cv = pipeline_cv(cfg, st.registry, train, labels, get_target("crop_f1"), 3, tmp_path)
    assert 0 < cv.score <= 1 and 0 < cv.raw_score <= 1 and len(cv.fold_scores) == 3
    assert cv.confusion.shape == (2, 2) and get_target("crop_f1").score(cv.confusion) == cv.score


def test_a_trial_chooses_its_decision_threshold_on_out_of_fold_probabilities(scenes, tmp_path):
    """Each trial's classifier is fitted without a CV of its own (``classifier.cv=none``), so the search's CV
    chooses the threshold: a strongly regularised logistic regression, whose crop probabilities all stay
    under 0.5, maps no crop at the fixed 0.5 (crop F1 0) and a useful map at the chosen cut."""
    from cropseg.config import compose
    from cropseg.pipeline import build_stages
    from cropseg.search import TrialResult, pipeline_cv
    from cropseg.targets import get_target

    base = [o for o in local_overrides(*scenes) if "k_grid" not in o]
    lr = ["classifier=logistic_regression", "classifier.grid.C=[1e-6]", "classifier.cv=none", "train.balance=false"]
    scores = {}
    for threshold in ("auto", "0.5"):
        cfg = compose([*base, f"cache_dir={tmp_path / 'cache'}", *FAST, *lr, f"classifier.threshold={threshold}"])
        st = build_stages(cfg)
        train = st.source.load(tmp_path / "cache").train
        labels = st.labeler.label(train, tmp_path / "labels.tif")
        work = tmp_path / threshold
        work.mkdir()
        scores[threshold] = pipeline_cv(cfg, st.registry, train, labels, get_target("crop_f1"), 3, work)
    fixed, auto = scores["0.5"], scores["auto"]
    assert fixed.threshold is None and fixed.score == 0.0 and fixed.confusion[:, 1].sum() == 0  # no crop mapped
    assert auto.threshold is not None and 0 < auto.threshold < 0.5 and auto.score > 0.3
    trial = TrialResult(0, lr, "lr", auto.score, auto.raw_score, auto.fold_scores, 1.0, threshold=auto.threshold)
    assert trial.refit_overrides == [*lr, f"classifier.threshold={auto.threshold!r}"]
    assert float(compose([*base, *trial.refit_overrides]).classifier.threshold) == auto.threshold


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        (["classifier=knn"], "classifier=knn: classifier is searched by cropseg search"),
        (["--minutes", "0"], "--minutes: a positive number"),
        (["--kernels", "4"], "--kernels: odd positive integers"),
        (["--classifiers", "nosuch"], "nosuch"),
        (["--classifiers", "knn,unet"], "--classifiers: unet is a patch model"),
        (["--posthoc-test", "-1"], "--posthoc-test: 0 or more trials"),
    ],
)
def test_bad_options_are_one_line(args, msg, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["search", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("cropseg: error: ") and msg in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_ends_the_search_killed(sig, scenes, tmp_path, store_template):
    """A real ``cropseg search`` process stopped during its trials: the parent and every trial run end
    (KILLED, none RUNNING), one line on stderr, exit 130 / 143, no training labels or trial folders left."""
    uri = store_template.copy(tmp_path)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "cropseg.cli", "search", "--minutes", "30", "--jobs", "1", "--output-dir", str(out)]
    cmd += ["--classifiers", "knn", "--features", "bands", *_overrides(scenes, uri, tmp_path / "cache")]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:  # the first trial's progress line: trials are running
        if line.startswith("trial "):
            break
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == (130 if sig == signal.SIGINT else 143), err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("cropseg: ")
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("cropseg").experiment_id], max_results=100)
    parent = next(r for r in runs if r.data.tags.get("cropseg.sweep") == "true")
    assert parent.info.status == "KILLED" and "signal" in parent.data.tags["cropseg.error"]
    assert all(r.info.status != "RUNNING" for r in runs)
    assert not (out / "search_labels").exists() and not (out / "trials").exists() and (out / "FAILED.txt").is_file()


def test_numeric_grids_are_searched_beyond_their_edges():
    """A run's grid is written for one CV; the search widens it (one round of grid extension each side)."""
    assert search_values([8, 16]) == [1, 2, 4, 8, 16, 32, 64, 128]
    assert search_values([3, 5, 7], (1, None)) == [1, 3, 5, 7, 9, 11, 13]
    assert search_values([0.1, 0.5], (None, 1.0))[-1] == 1.0  # a fraction stays a fraction
    assert search_values([8, 16, None]) == [1, 2, 4, 8, 16, None]  # null is the top end
    assert search_values(["sqrt", "log2"]) == ["sqrt", "log2"]


def test_progress_lines_from_parallel_trials_never_interleave():
    """``--jobs 2``: two trials' threads print at once; each line reaches the terminal whole (a 20-minute
    search on the hard preset printed "... (CV crop_f1 0.8516)trial 54 (46 done ..." when lines were
    written with ``print``, text and newline separately)."""
    import threading
    import time as _time

    from cropseg.search import line_printer

    class Slow:
        """A terminal whose every write lets the other thread run."""

        def __init__(self) -> None:
            self.text = ""

        def write(self, s: str) -> None:
            text = self.text
            _time.sleep(0.0005)
            self.text = text + s

        def flush(self) -> None:
            pass

    out = Slow()
    say = line_printer(stream=out)
    lines = [f"trial {t} line {i}" for t in range(2) for i in range(40)]

    def worker(t: int) -> None:
        for i in range(40):
            say(f"trial {t} line {i}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(out.text.splitlines()) == sorted(lines)
