"""Parity cells from plain observations: every verdict evaluate_cells can give, and the matrix."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync_ci.errors import ContractError
from sync_ci.parity import (
    MISSING,
    PAIRS,
    Observation,
    behind_count,
    evaluate_cells,
    file_digest,
    matrix_cells,
    mirror_path,
)
from sync_ci.report import Result

A = "a" * 64
B = "b" * 64
C = "c" * 64


def seen(artifact: str = "f", **digests: str | None) -> list[Observation]:
    return [Observation(artifact=artifact, surface=s, digest=d) for s, d in digests.items()]


def cells(results: list[Result]) -> dict[str, tuple[str, str]]:
    """pair name -> (status, detail) for one artifact."""
    return {str(r.observed["pair"]): (r.status, r.detail) for r in results}


def test_all_three_surfaces_agree() -> None:
    results = evaluate_cells(seen(bucket=A, worker=A, mirror=A))
    assert cells(results) == {
        "bucket~worker": ("pass", A[:12]),
        "worker~mirror": ("pass", A[:12]),
        "bucket~mirror": ("pass", A[:12]),
    }
    assert [r.id for r in results] == [
        "parity:f:bucket~worker",
        "parity:f:worker~mirror",
        "parity:f:bucket~mirror",
    ]
    assert results[0].title == "f bucket = worker"
    assert results[0].observed == {
        "artifact": "f",
        "pair": "bucket~worker",
        "bucket": A,
        "worker": A,
    }


def test_a_differing_worker_fails_both_of_its_pairs() -> None:
    assert cells(evaluate_cells(seen(bucket=A, worker=B, mirror=A))) == {
        "bucket~worker": ("fail", f"sha256 differs: {A[:12]} vs {B[:12]}"),
        "worker~mirror": ("fail", f"sha256 differs: {B[:12]} vs {A[:12]}"),
        "bucket~mirror": ("pass", A[:12]),
    }


def test_missing_names_the_side_it_is_missing_on() -> None:
    assert cells(evaluate_cells(seen(bucket=A, worker=MISSING, mirror=A))) == {
        "bucket~worker": ("fail", "missing on worker"),
        "worker~mirror": ("fail", "missing on worker"),
        "bucket~mirror": ("pass", A[:12]),
    }


def test_an_unobserved_surface_skips_its_pairs_only() -> None:
    assert cells(evaluate_cells(seen(worker=A, mirror=A))) == {
        "bucket~worker": ("skip", "bucket not observed"),
        "worker~mirror": ("pass", A[:12]),
        "bucket~mirror": ("skip", "bucket not observed"),
    }
    assert cells(evaluate_cells(seen(bucket=A, worker=A))) == {
        "bucket~worker": ("pass", A[:12]),
        "worker~mirror": ("skip", "mirror not observed"),
        "bucket~mirror": ("skip", "mirror not observed"),
    }
    # None is "not looked at", the same as no observation.
    assert cells(evaluate_cells(seen(bucket=None, worker=A, mirror=A))) == cells(
        evaluate_cells(seen(worker=A, mirror=A))
    )


def test_agreeing_on_the_wrong_bytes_fails_against_expected() -> None:
    results = evaluate_cells(seen(bucket=B, worker=B, mirror=B), expected={"f": A})
    assert {pair: status for pair, (status, _) in cells(results).items()} == dict.fromkeys(
        ("bucket~worker", "worker~mirror", "bucket~mirror"), "fail"
    )
    assert cells(results)["bucket~worker"][1] == f"both {B[:12]}, expected {A[:12]}"
    # An expectation for another artifact judges nothing here.
    assert {r.status for r in evaluate_cells(seen(bucket=B, worker=B), expected={"g": A})} == {
        "pass",
        "skip",
    }


@pytest.mark.parametrize(
    ("mirror", "detail"),
    [(MISSING, "mirror behind: not pulled yet"), (B, "mirror behind: an older copy")],
)
def test_a_lagging_mirror_is_behind_not_failed(mirror: str, detail: str) -> None:
    observations = seen(bucket=A, worker=A, mirror=mirror)
    lenient = cells(evaluate_cells(observations, expected={"f": A}, behind_ok=("mirror",)))
    assert lenient == {
        "bucket~worker": ("pass", A[:12]),
        "worker~mirror": ("skip", detail),
        "bucket~mirror": ("skip", detail),
    }
    strict = cells(evaluate_cells(observations, expected={"f": A}))
    assert strict["worker~mirror"][0] == strict["bucket~mirror"][0] == "fail"


def test_behind_ok_does_not_excuse_a_wrong_other_side() -> None:
    # The mirror may lag, but here the Worker serves bytes nobody expects: that is a sync fault.
    results = cells(
        evaluate_cells(seen(bucket=A, worker=C, mirror=B), expected={"f": A}, behind_ok=("mirror",))
    )
    assert results["bucket~worker"][0] == "fail"
    assert results["worker~mirror"][0] == "fail"
    assert results["bucket~mirror"] == ("skip", "mirror behind: an older copy")
    # Nor a missing lagging side when the other side is missing too.
    both_gone = cells(evaluate_cells(seen(worker=MISSING, mirror=MISSING), behind_ok=("mirror",)))
    assert both_gone["worker~mirror"] == ("fail", "missing on worker")


def test_cells_per_artifact_in_order_and_the_behind_count() -> None:
    observations = [
        *seen("one", bucket=A, worker=A, mirror=MISSING),
        *seen("two", bucket=B, worker=B, mirror=A),
        *seen("three", bucket=C, worker=C, mirror=C),
    ]
    results = evaluate_cells(observations, behind_ok=("mirror",))
    assert len(results) == 3 * len(PAIRS)
    assert [r.observed["artifact"] for r in results[:: len(PAIRS)]] == ["one", "two", "three"]
    assert behind_count(results) == 2
    rows, columns, marks = matrix_cells(results)
    assert rows == ["one", "two", "three"]
    assert columns == ["bucket~worker", "worker~mirror", "bucket~mirror"]
    assert marks[("one", "bucket~worker")] == "ok"
    assert marks[("two", "worker~mirror")] == "-"
    assert marks[("three", "bucket~mirror")] == "ok"


def test_no_observations_no_cells() -> None:
    assert evaluate_cells([]) == []


def test_file_digest_and_mirror_path(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.bin").write_bytes(b"abc")
    assert file_digest(tmp_path / "d" / "x.bin") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert file_digest(tmp_path / "absent") == MISSING
    assert mirror_path(tmp_path, "d/x.bin") == (tmp_path / "d" / "x.bin").resolve()
    for name in ("../escape", "/etc/passwd", "d//x", ""):
        with pytest.raises(ContractError):
            mirror_path(tmp_path, name)
