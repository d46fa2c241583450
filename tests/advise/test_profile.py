"""Reading profiles: defaults, strictness, errors that name the key, price overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from nearline.insights.advise.profile import ProfileError, load_profile, parse_profile

EXAMPLES = Path(__file__).parents[2] / "examples" / "advise"


def test_defaults_apply_to_paths_that_do_not_set_them() -> None:
    profile = parse_profile(
        {
            "name": "x",
            "defaults": {"delay_cost_per_second_usd": 0.5, "peak_to_average": 2},
            "paths": [
                {
                    "name": "a",
                    "requests_per_day": 10,
                    "time_to_first_useful_ms": {"p50_ms": 1, "p95_ms": 2},
                },
                {
                    "name": "b",
                    "requests_per_day": 10,
                    "peak_to_average": 7,
                    "time_to_first_useful_ms": {"p50_ms": 1, "p95_ms": 2},
                },
            ],
        }
    )
    a, b = profile.paths
    assert (a.delay_cost_per_second_usd, a.peak_to_average) == (0.5, 2)
    assert (b.delay_cost_per_second_usd, b.peak_to_average) == (0.5, 7)


def test_steps_give_the_latency_when_none_is_measured() -> None:
    profile = parse_profile(
        {
            "name": "x",
            "paths": [
                {
                    "name": "agent",
                    "requests_per_day": 1,
                    "steps": [
                        {"name": "plan", "latency": {"p50_ms": 100, "p95_ms": 300}},
                        {"name": "tool", "latency": {"p50_ms": 50, "p95_ms": 80}, "repeat": 3},
                    ],
                }
            ],
        }
    )
    latency = profile.paths[0].computed_latency
    # 100 + 3 x 50 = 250 ms; 300 + 3 x 80 = 540 ms
    assert latency.p50_s == pytest.approx(0.25)
    assert latency.p95_s == pytest.approx(0.54)


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        ([{"name": "a", "requests_per_day": 1}], "time_to_first_useful_ms, or a latency"),
        (
            [
                {
                    "name": "a",
                    "requests_per_day": 1,
                    "typo": 1,
                    "time_to_first_useful_ms": {"p50_ms": 1, "p95_ms": 2},
                }
            ],
            "paths.0.typo",
        ),
        (
            [
                {
                    "name": "a",
                    "requests_per_day": 1,
                    "time_to_first_useful_ms": {"p50_ms": 3, "p95_ms": 2},
                }
            ],
            "p50_ms must not exceed",
        ),
        (
            [
                {
                    "name": "a",
                    "requests_per_day": 1,
                    "repeated_share": 1.5,
                    "time_to_first_useful_ms": {"p50_ms": 1, "p95_ms": 2},
                }
            ],
            "repeated_share",
        ),
        ([], "paths"),
    ],
)
def test_bad_profiles_name_the_problem(paths: list[object], message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        parse_profile({"name": "x", "paths": paths})


def test_duplicate_path_names_are_rejected() -> None:
    path = {
        "name": "a",
        "requests_per_day": 1,
        "time_to_first_useful_ms": {"p50_ms": 1, "p95_ms": 2},
    }
    with pytest.raises(ProfileError, match="unique"):
        parse_profile({"name": "x", "paths": [path, path]})


def test_prices_can_be_overridden_and_are_validated() -> None:
    profile = load_profile(EXAMPLES / "support-chatbot.yaml")
    cheaper = profile.with_prices({"instance_hour_usd": 1.25})
    assert cheaper.prices.instance_hour_usd == 1.25
    assert cheaper.prices.batch_instance_hour_usd == profile.prices.batch_instance_hour_usd
    with pytest.raises(ProfileError, match="batch_api_discount"):
        profile.with_prices({"batch_api_discount": 2.0})


def test_json_profiles_and_unreadable_files(tmp_path: Path) -> None:
    source = tmp_path / "p.json"
    source.write_text(
        '{"name": "j", "paths": [{"name": "a", "requests_per_day": 1, '
        '"time_to_first_useful_ms": {"p50_ms": 1, "p95_ms": 2}}]}'
    )
    assert load_profile(source).name == "j"
    with pytest.raises(ProfileError, match="cannot read"):
        load_profile(tmp_path / "missing.yaml")


@pytest.mark.parametrize("name", ["support-chatbot.yaml", "fraud-scoring.yaml"])
def test_shipped_examples_are_valid(name: str) -> None:
    assert load_profile(EXAMPLES / name).paths
