"""Fixtures: synthetic storefronts made by the package itself (never ../shared)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import hush

ML_MAPPING = "subject=userId,item=movieId,value=rating,timestamp=timestamp,kind=,default_kind=rating"


@pytest.fixture(scope="session")
def movielens(tmp_path_factory) -> Path:
    """A MovieLens-shaped research data set: ``ratings.csv`` (userId, movieId, rating, timestamp)."""
    out = tmp_path_factory.mktemp("ml")
    hush.synth(out, subjects=150, items=60, mean_events=20, seed=11, format="movielens-csv")
    return out / "ratings.csv"


@pytest.fixture(scope="session")
def research(movielens) -> hush.FeatureSet:
    """The research data set, extracted with a fixed sampling seed."""
    return hush.extract(
        movielens, format="movielens-csv", research_data=True, feedback="explicit", sampling_seed=5
    )


@pytest.fixture(scope="session")
def shop(tmp_path_factory) -> Path:
    """A synthetic storefront: events.csv, consent.csv, items.csv, erasure_requests.csv."""
    out = tmp_path_factory.mktemp("shop")
    hush.synth(out, subjects=200, items=40, mean_events=10, seed=3)
    return out


def hush_binary() -> str:
    """The ``hush`` command line (``HUSH_BIN``, else the workspace's build, else PATH)."""
    candidates = [os.environ.get("HUSH_BIN")]
    root = Path(__file__).resolve().parents[2]
    target = Path(os.environ.get("CARGO_TARGET_DIR", root / "target"))
    candidates += [str(target / "debug" / "hush"), shutil.which("hush")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail("the store tests need the hush binary: build it (cargo build) or set HUSH_BIN")


@pytest.fixture()
def store(tmp_path, shop):
    """A store with the storefront's consent records imported by the command line: (db, run)."""
    binary = hush_binary()
    db = str(tmp_path / "hush.db")

    def run(*args: str) -> str:
        done = subprocess.run(
            [binary, "--db", db, "--quiet", *args], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    run("init")
    run("consent", "import", str(shop / "consent.csv"))
    return db, run
