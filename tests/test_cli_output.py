"""What the `kubedetect` commands print: a summary a person reads, the details in a log file, and
progress bars only on a terminal (redrawn into a pipe or a file, one bar becomes hundreds of
lines). The commands run as users run them, as processes with their output piped."""

from __future__ import annotations

import re

from test_data_support import kubedetect


def test_synth_into_a_pipe_draws_no_progress_bar_and_says_what_it_wrote(tmp_path):
    result = kubedetect("data", "synth", tmp_path / "voc", "--images", "40", "--seed", "3")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no bar: standard error is not a terminal
    assert re.fullmatch(
        rf"wrote 40 images to {re.escape(str(tmp_path / 'voc'))} "
        r"\(\d+ train, \d+ val; \d+ circles, \d+ squares, \d+ triangles\)\n",
        result.stdout,
    )


def test_quantize_shows_its_table_and_keeps_the_converters_chatter_in_a_log(
    trained_model, tmp_path
):
    out = tmp_path / "variants"
    result = kubedetect(
        "quantize",
        trained_model,
        out,
        "--mode",
        "float32,int8",
        "--calibration-images",
        "20",
        "--latency-runs",
        "5",
        "--report",
    )
    assert result.returncode == 0, result.stderr
    shown = result.stdout + result.stderr
    assert re.search(r"^\| int8 \| [\d.]+ \|", result.stdout, re.MULTILINE)  # the report's row
    assert f"the converter's log: {out / 'quantize.log'}" in result.stdout
    # TensorFlow's converter prints the saved model's signature and its own settings, from
    # Python and from C++: all of it in the log, none of it on the console.
    log = (out / "quantize.log").read_text()
    for chatter in ("Saved artifact at", "fully_quantize", "oneDNN"):
        assert chatter in log
        assert chatter not in shown
    assert len(shown.splitlines()) < 15, shown
