"""``diffusekit run masked:text --prompt``: the prompt is kept character for character, each ``_``
and everything after the prompt is written by the model; bad prompts are one-line errors."""

import pytest
from diffusekit.testing.cli import assert_one_line_error, run_cli

PROMPT = "HAMLET. To be, or not to be: that is the ________\n"


def test_a_prompt_is_kept_and_its_blanks_and_the_rest_are_filled(tmp_path):
    result = run_cli(
        "run", "masked:text", "--prompt", PROMPT, "--num", "3", "--out", "o", "--no-progress", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    samples = (tmp_path / "o" / "samples.txt").read_text(encoding="utf-8")[:-1].split("\n\n----\n\n")
    assert len(samples) == 3
    for sample in samples:
        assert len(sample) == 128 and "\u2591" not in sample  # every position is a character
        assert all(s == p for s, p in zip(sample, PROMPT, strict=False) if p != "_")
    blanks = [i for i, c in enumerate(PROMPT) if c == "_"]
    assert len({"".join(s[i] for i in blanks) + s[len(PROMPT) :] for s in samples}) == 3  # seeds per sample differ


@pytest.mark.parametrize(
    ("prompt", "words"),
    [
        ("x" * 129, "129 characters, more than the model's window of 128"),
        ("To be, or not to b\u00e9", "character 19: '\u00e9' is not in the model's alphabet"),
        ("", "the prompt is empty"),
    ],
)
def test_a_bad_prompt_is_a_one_line_error_naming_the_place(tmp_path, prompt, words):
    assert words in assert_one_line_error(run_cli("run", "masked:text", "--prompt", prompt, cwd=tmp_path))
    assert not (tmp_path / "outputs").exists()


def test_prompt_and_input_exclude_each_other_and_sudoku_takes_no_prompt(tmp_path):
    (tmp_path / "p.txt").write_text("." * 81 + "\n", encoding="utf-8")
    args = ("run", "masked:sudoku", "--input", "p.txt", "--prompt", "x")
    assert "give one of them" in assert_one_line_error(run_cli(*args, cwd=tmp_path))
    assert "takes no prompt" in assert_one_line_error(run_cli("run", "masked:sudoku", "--prompt", "1", cwd=tmp_path))
