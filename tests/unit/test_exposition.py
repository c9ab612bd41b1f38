"""The Prometheus text parser: what it accepts, what it skips, and that it never raises."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from state.engine_metrics.exposition import parse_exposition

WANTED = frozenset({"a", "b:c", "x_total"})


def test_reads_labels_values_and_ignores_comments_timestamps_and_unwanted_names() -> None:
    text = (
        "# HELP a something\n# TYPE a gauge\n"
        'a{model_name="m",engine="0"} 1.5 1712345678000\n'
        "b:c 2e3\n"
        "  x_total{}  7  \n"
        'unwanted_metric{le="0.1"} garbage here\n'
        "# EOF\n"
    )
    exp = parse_exposition(text, WANTED)
    assert [(dict(s.labels), s.value) for s in exp.series("a")] == [({"model_name": "m", "engine": "0"}, 1.5)]
    assert exp.series("b:c")[0].value == 2000.0
    assert exp.series("x_total")[0].value == 7.0
    assert exp.names() == {"a", "b:c", "x_total"}
    assert exp.malformed_lines == 0  # lines of metrics nobody asked for are not even looked at


def test_label_values_may_hold_escapes_commas_braces_and_spaces() -> None:
    text = 'a{path="C:\\\\dir",quote="say \\"hi\\"",nl="x\\ny",odd="{a, b} c"} 3\n'
    [sample] = parse_exposition(text, WANTED).series("a")
    assert dict(sample.labels) == {"path": "C:\\dir", "quote": 'say "hi"', "nl": "x\ny", "odd": "{a, b} c"}


def test_special_float_values_parse_but_series_keeps_only_finite_ones() -> None:
    exp = parse_exposition('a{i="1"} NaN\na{i="2"} +Inf\na{i="3"} -Inf\na{i="4"} 0.25\n', WANTED)
    assert len(exp.samples["a"]) == 4
    assert [s.value for s in exp.series("a")] == [0.25]


def test_malformed_wanted_lines_are_skipped_and_counted() -> None:
    bad = [
        "a",  # no value
        "a {",  # no value, stray brace
        'a{x="1" 2',  # unclosed label block
        "a{x=1} 2",  # unquoted label value
        'a{x="1" y="2"} 3',  # missing comma
        'a{1x="1"} 2',  # bad label name
        "a 1_000",  # python float accepts this, Prometheus does not
        "a 1 2 3",  # too many fields
        "a one",
    ]
    exp = parse_exposition("\n".join([*bad, "a 9"]) + "\n", WANTED)
    assert exp.malformed_lines == len(bad)
    assert exp.first_malformed == "a"
    assert [s.value for s in exp.series("a")] == [9.0]


def test_windows_line_endings_and_blank_lines_are_fine() -> None:
    exp = parse_exposition("\r\n\r\na 1\r\nb:c 2\r\n", WANTED)
    assert exp.series("a")[0].value == 1.0
    assert exp.series("b:c")[0].value == 2.0


@given(st.text(max_size=400))
def test_never_raises_on_arbitrary_text(text: str) -> None:
    exp = parse_exposition(text, WANTED)
    assert exp.malformed_lines >= 0


label_values = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
samples = st.lists(
    st.tuples(
        st.sampled_from(sorted(WANTED)),
        st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,6}", fullmatch=True), label_values, max_size=3),
        st.floats(allow_nan=False, allow_infinity=False, width=64),
    ),
    max_size=8,
)


def render(name: str, labels: dict[str, str], value: float) -> str:
    def escape(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    block = ",".join(f'{k}="{escape(v)}"' for k, v in labels.items())
    return f"{name}{{{block}}} {value!r}" if labels else f"{name} {value!r}"


@given(samples)
def test_well_formed_samples_round_trip_exactly(items: list[tuple[str, dict[str, str], float]]) -> None:
    text = "\n".join(render(*item) for item in items)
    exp = parse_exposition(text, WANTED)
    assert exp.malformed_lines == 0
    parsed = [(name, dict(s.labels), s.value) for name in sorted(WANTED) for s in exp.samples.get(name, [])]
    expected = [item for name in sorted(WANTED) for item in items if item[0] == name]
    assert len(parsed) == len(expected)
    for (p_name, p_labels, p_value), (e_name, e_labels, e_value) in zip(parsed, expected, strict=True):
        assert (p_name, p_labels) == (e_name, e_labels)
        assert p_value == e_value or (math.isnan(p_value) and math.isnan(e_value))
