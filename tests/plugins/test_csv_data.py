"""The csv data source: what it reads, which columns it takes, and what it refuses, with where."""

from __future__ import annotations

import json
import logging
import os
import random

import numpy as np
import pandas as pd
import pytest
import torch

from framework import ConfigError, DataError
from framework_plugins.csv_data import CsvConfig, csv_table
from tests.conftest import run_cli

F32 = torch.float32
F64 = torch.float64


def write(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def load(path, dtype=F32, **settings):
    return csv_table(CsvConfig(path=path, **settings), dtype=dtype)


# ------------------------------------------------------------------------------- what is read, and how


def test_csv_with_header_takes_the_last_column_as_target(tmp_path):
    data = load(write(tmp_path, "a,b,y\n1,2,3\n4,5,6\n\n"))
    assert data.features.tolist() == [[1, 2], [4, 5]] and data.targets.tolist() == [3, 6]
    assert data.features.dtype == F32 and data.targets.dtype == F32


def test_csv_target_by_name_or_index_and_without_header(tmp_path):
    path = write(tmp_path, "y,a\n3,1\n6,4\n")
    assert load(path, target="y").targets.tolist() == [3, 6]
    headless = write(tmp_path, "3;1\n6;4\n", "headless.csv")
    data = load(headless, target="0", delimiter=";")
    assert data.targets.tolist() == [3, 6] and data.features.tolist() == [[1], [4]]
    assert load(headless, target="-2", delimiter=";").targets.tolist() == [3, 6]
    with pytest.raises(DataError, match="columns: y, a"):
        load(path, target="z")
    with pytest.raises(DataError, match="out of range"):
        load(path, target="2")


def test_float64_values_are_those_python_reads(tmp_path):
    rng = random.Random(3)
    rows = [[rng.uniform(-1e3, 1e3) for _ in range(3)] for _ in range(500)]
    text = "".join(",".join(repr(value) for value in row) + "\n" for row in rows)
    data = load(write(tmp_path, "a,b,y\n" + text), dtype=F64)
    assert data.features.tolist() == [row[:2] for row in rows]
    assert data.targets.tolist() == [row[2] for row in rows]
    as_float32 = load(write(tmp_path, "a,b,y\n" + text, "again.csv"), dtype=F32)
    assert torch.equal(as_float32.features, torch.tensor([row[:2] for row in rows], dtype=F64).to(F32))


def test_blank_lines_are_skipped_and_lines_still_counted_as_an_editor_does(tmp_path):
    path = write(tmp_path, "\na,y\n\n1,2\n   \n3,4\n\n5,x\n")
    with pytest.raises(DataError, match=r"line 8, column 'y': 'x' is not a number"):
        load(path)
    data = load(write(tmp_path, "\na,y\n\n1,2\n   \n3,4\n", "fine.csv"))
    assert data.features.tolist() == [[1], [3]] and data.targets.tolist() == [2, 4]


def test_quoted_cells_windows_line_ends_and_a_byte_order_mark_are_read(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes('\ufeff"a","y"\r\n"1","2"\r\n3,4\r\n'.encode())
    data = load(str(path), target="y")
    assert data.features.tolist() == [[1], [3]] and data.targets.tolist() == [2, 4]


# ------------------------------------------------------------------------------------------ the header


@pytest.mark.parametrize("text", ["1,\n2,4\n3,6\n4,8\n", "1,2\n2,4\n3,6\n4,8\n"])
def test_auto_never_takes_a_row_with_a_number_as_the_header(tmp_path, text):
    path = write(tmp_path, text)
    reference = pd.read_csv(path, header=None).dropna()
    data = load(path, missing="drop")
    assert data.features.tolist() == reference[[0]].to_numpy().tolist()
    assert data.targets.tolist() == reference[1].tolist()


def test_a_first_row_with_an_empty_cell_is_a_missing_value_on_line_one(tmp_path):
    path = write(tmp_path, "1,\n2,4\n3,6\n4,8\n")
    with pytest.raises(DataError, match=r"line 1, column 1: the cell is empty .*data\.missing=drop"):
        load(path)


def test_header_true_and_false_are_obeyed(tmp_path):
    numeric = write(tmp_path, "1,2\n3,4\n5,6\n")
    assert load(numeric, header="true").targets.tolist() == [4, 6]
    assert load(numeric, header="True").targets.tolist() == [4, 6]  # data.header=true on the command line
    named = write(tmp_path, "a,y\n3,4\n", "named.csv")
    with pytest.raises(DataError, match=r"line 1, column 0: 'a' is not a number.*data\.header=true"):
        load(named, header="false")
    with pytest.raises(ConfigError, match=r"data\.header='yes' is not one of auto \| true \| false"):
        load(named, header="yes")


def test_a_header_but_no_data_rows_is_refused(tmp_path):
    with pytest.raises(DataError, match="has a header but no data rows"):
        load(write(tmp_path, "a,y\n\n"))
    with pytest.raises(DataError, match="no rows"):
        load(write(tmp_path, "\n", "empty.csv"))


# -------------------------------------------------------------------------------------------- columns


def test_features_are_chosen_by_name_or_index_in_the_order_given(tmp_path):
    path = write(tmp_path, "a,b,c,y\n1,2,3,4\n5,6,7,8\n")
    frame = pd.read_csv(path)
    data = load(path, features=["c", "0"])
    assert data.features.tolist() == frame[["c", "a"]].to_numpy().tolist()
    assert data.targets.tolist() == frame["y"].tolist()
    data = load(path, target="a", features=["-1", "b"])
    assert data.features.tolist() == frame[["y", "b"]].to_numpy().tolist()


@pytest.mark.parametrize(("settings", "message"), [
    ({"features": ["a", "z"]}, r"'z' is not a column of .*; columns: a, b, y"),
    ({"features": ["a", "y"]}, r"lists the target column 'y'.*Columns: a, b, y"),
    ({"features": ["a", "0"]}, r"names a column .* twice"),
    ({"features": []}, r"data\.features is empty"),
    ({"features": ["7"]}, r"column 7 is out of range"),
])
def test_bad_feature_choices_are_refused_with_the_columns(tmp_path, settings, message):
    with pytest.raises(DataError, match=message):
        load(write(tmp_path, "a,b,y\n1,2,3\n"), **settings)


def test_a_pandas_index_column_is_refused_with_the_ways_out(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(6, 3)), columns=["a", "b", "y"])
    path = tmp_path / "written.csv"
    frame.to_csv(path)  # keeps the index, as the default does
    with pytest.raises(DataError, match=r"first column has no name and counts 0, 1, 2.*"
                                        r"data\.features=\[a,b\].*to_csv\(index=False\)"):
        load(str(path))
    data = load(str(path), features=["a", "b"], dtype=F64)
    assert data.features.numpy().tolist() == frame[["a", "b"]].to_numpy().tolist()
    assert data.targets.numpy().tolist() == frame["y"].tolist()
    kept = load(str(path), features=["0", "a", "b"], dtype=F64)
    assert kept.features[:, 0].tolist() == list(range(6))
    frame.to_csv(path, index=False)
    assert load(str(path)).features.shape == (6, 2)


def test_an_index_read_back_and_written_again_is_refused_too(tmp_path):
    path = write(tmp_path, "Unnamed: 0,a,y\n0,5,1\n1,3,2\n2,8,3\n")
    with pytest.raises(DataError, match="looks like the index"):
        load(path)


@pytest.mark.parametrize("text", ["step,a,y\n0,5,1\n1,3,2\n", ",a,y\n3,5,1\n1,3,2\n", "0,5,1\n1,3,2\n"])
def test_a_named_or_non_counting_or_headerless_first_column_is_a_feature(tmp_path, text):
    assert load(write(tmp_path, text)).features.shape == (2, 2)


# ------------------------------------------------------------------------------ missing and bad values


def test_an_empty_cell_is_named_by_line_and_column(tmp_path):
    path = write(tmp_path, "a,b,y\n1,2,3\n\n4,,6\n")
    with pytest.raises(DataError, match=r"line 4, column 'b': the cell is empty"):
        load(path)


def test_missing_drop_leaves_out_those_rows_and_says_how_many(tmp_path, caplog):
    text = "a,b,y\n1,2,3\n4,,6\n7,8,9\n,,\n10,11,12\n"
    path = write(tmp_path, text)
    reference = pd.read_csv(path).dropna()
    with caplog.at_level(logging.INFO):
        data = load(path, missing="drop")
    assert data.features.tolist() == reference[["a", "b"]].to_numpy().tolist()
    assert data.targets.tolist() == reference["y"].tolist()
    assert "left out 2 of 5 rows" in caplog.text
    with pytest.raises(DataError, match="leaves no data"):
        load(write(tmp_path, "a,y\n1,\n,2\n", "holes.csv"), missing="drop")
    clean = write(tmp_path, "a,y\n1,2\n", "clean.csv")
    with pytest.raises(ConfigError, match=r"data\.missing='skip' is not one of error \| drop"):
        load(clean, missing="skip")


def test_drop_does_not_hide_a_short_row_or_a_bad_cell(tmp_path):
    with pytest.raises(DataError, match=r"line 3: 2 cells where the first row has 3"):
        load(write(tmp_path, "a,b,y\n1,,3\n4,5\n"), missing="drop")
    with pytest.raises(DataError, match=r"line 3, column 'y': 'x' is not a number"):
        load(write(tmp_path, "a,b,y\n1,,3\n4,5,x\n", "x.csv"), missing="drop")


@pytest.mark.parametrize(("cell", "what"), [("nan", "NaN"), ("NaN", "NaN"), ("inf", "infinite"),
                                           ("-Infinity", "infinite"), ("1e999", "infinite")])
def test_nan_and_inf_are_named_by_line_and_column(tmp_path, cell, what):
    with pytest.raises(DataError, match=rf"line 4, column 'y': '{cell}' is {what}"):
        load(write(tmp_path, f"a,y\n1,2\n\n3,{cell}\n"), missing="drop")
    with pytest.raises(DataError, match=rf"line 2, column 0: '{cell}' is {what}"):
        load(write(tmp_path, f"1,2\n{cell},3\n", "headless.csv"))


@pytest.mark.parametrize(("text", "message"), [
    ("a,y\n1,2\n3,x\n", r"data\.csv, line 3, column 'y': 'x' is not a number"),
    ("a,y\n1,2\n3,NA\n", r"data\.csv, line 3, column 'y': 'NA' is not a number"),
    ("a,b,y\n1,2,3\n4,5\n", r"data\.csv, line 3: 2 cells where the first row has 3"),
    ("a,b,y\n1,2,3\n\n4,5,6,7\n", r"data\.csv, line 4: 4 cells where the first row has 3"),
], ids=["text", "NA-is-text", "short-row", "long-row"])
def test_errors_name_the_file_and_line(tmp_path, text, message):
    with pytest.raises(DataError, match=message):
        load(write(tmp_path, text))


# ------------------------------------------------------------------------------------ what is opened


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"cannot read data.path=.*missing\.csv: No such file"):
        load(str(tmp_path / "missing.csv"))


def test_only_regular_files_are_read(tmp_path):
    with pytest.raises(DataError, match=r"data\.path=/dev/zero is not a regular file"):
        load("/dev/zero")
    with pytest.raises(DataError, match=r"is a folder"):
        load(str(tmp_path))
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)  # opening it would wait for a writer for ever
    with pytest.raises(DataError, match=rf"data\.path={fifo} is not a regular file"):
        load(str(fifo))


# ----------------------------------------------------------------------------------- from the command line


def cli_run(tmp_path, *args):
    run_dir = tmp_path / "run"
    process = run_cli("+task=linear2d", "data=csv", f"hydra.run.dir={run_dir}", "trainer.max_steps=3", *args,
                      cwd=tmp_path)
    result = run_dir / "result.json"
    return process, json.loads(result.read_text()) if result.exists() else None


def test_cli_refuses_a_pandas_index_and_takes_the_features_given(tmp_path):
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [2.0, 1.0, 0.5], "y": [3.0, 3.0, 3.5]})
    frame.to_csv(tmp_path / "frame.csv")
    refused, _ = cli_run(tmp_path, f"data.path={tmp_path}/frame.csv")
    assert refused.returncode == 3, refused.stderr
    assert "error:" in refused.stderr and "to_csv(index=False)" in refused.stderr
    assert "Traceback" not in refused.stderr
    chosen, result = cli_run(tmp_path, f"data.path={tmp_path}/frame.csv", "data.features=[a,b]",
                             "data.header=true")
    assert chosen.returncode == 0, chosen.stderr
    assert result["status"] == "completed" and result["steps"] == 3


def test_cli_drops_missing_rows_when_asked_and_says_so(tmp_path):
    write(tmp_path, "1,,2\n2,4,5\n3,6,7\n4,8,9\n", "holes.csv")
    refused, _ = cli_run(tmp_path, f"data.path={tmp_path}/holes.csv")
    assert refused.returncode == 3 and "line 1, column 1: the cell is empty" in refused.stderr, refused.stderr
    dropped, result = cli_run(tmp_path, f"data.path={tmp_path}/holes.csv", "data.missing=drop")
    assert dropped.returncode == 0, dropped.stderr
    assert "left out 1 of 4 rows" in dropped.stdout + dropped.stderr
    assert result["status"] == "completed"


def test_cli_refuses_dev_zero_at_once(tmp_path):
    process, _ = cli_run(tmp_path, "data.path=/dev/zero")
    assert process.returncode == 3 and "/dev/zero is not a regular file" in process.stderr, process.stderr
