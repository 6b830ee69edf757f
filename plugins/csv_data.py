"""The ``csv`` data source: numbers from a delimited text file, target and features chosen by column.

The table is parsed by pandas' C parser in one call. When that parse finds anything but finite
numbers, a second pass over the file with the ``csv`` module says where: only a file with a
problem pays for it, and the two passes number the rows alike (blank lines skipped, quoted cells
honoured), so every message names the line a text editor shows.
"""

from __future__ import annotations

import csv
import logging
import math
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional

import numpy as np
import torch
from omegaconf import MISSING

from framework import Component, ConfigError, DataConfig, DataError, Dataset, hookimpl

log = logging.getLogger(__name__)

HEADER_CHOICES = ("auto", "true", "false")
MISSING_CHOICES = ("error", "drop")
# pandas writes its index column with an empty header cell; read back and written again, it is "Unnamed: 0".
PANDAS_INDEX_NAMES = ("", "Unnamed: 0")


@dataclass
class CsvConfig(DataConfig):
    path: str = MISSING
    target: Optional[str] = None  # column name or index (negative counts from the end); null: last
    features: Optional[List[str]] = None  # column names or indices; null: every column but the target
    header: Optional[str] = "auto"  # auto (a first row without numbers is a header) | true | false
    missing: str = "error"  # an empty cell: error (name its line and column) | drop (drop its row)
    delimiter: str = ","


@dataclass
class Columns:
    """The file's columns as the first row gives them: header names, or none."""

    names: list[str]  # header cells, stripped; "" for an unnamed column
    header: bool
    first_line: int  # the file line of the first row (the header when there is one)

    def label(self, index: int) -> str:
        """How a message names a column: by name under a header, else by index."""
        name = self.names[index] if self.header else ""
        return repr(name) if name else str(index)

    def key(self, index: int) -> str:
        """How a user names a column in data.features: by name when it has one, else by index."""
        return (self.names[index] if self.header else "") or str(index)

    def listing(self) -> str:
        if not self.header:
            return f"{len(self.names)} columns, 0 to {len(self.names) - 1} (no header)"
        return ", ".join(self.key(index) for index in range(len(self.names)))


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def unreadable(path: Path, error: OSError) -> DataError:
    return DataError(f"cannot read data.path={path}: {error.strerror or error}")


def regular_file(config_path: str) -> Path:
    """The path of a regular file, or a DataError: a device or a FIFO could be read without end."""
    path = Path(config_path).expanduser()
    try:
        mode = path.stat().st_mode
    except OSError as error:
        raise unreadable(path, error) from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a device, FIFO or socket)"
        raise DataError(f"data.path={path} is {kind}; give the path of a CSV file")
    return path


def file_rows(path: Path, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(file line, cells) of every row that is not blank, as pandas' parser counts rows."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            for row in reader:
                # pandas skips empty and whitespace-only lines, and nothing else (",," is a row).
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                yield reader.line_num, row
    except OSError as error:
        raise unreadable(path, error) from None
    except (csv.Error, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not a readable CSV file: {error}") from None


def choice(value: Optional[str], key: str, choices: tuple[str, ...]) -> str:
    """The setting, one of ``choices`` (the first when null)."""
    # Hydra reads data.header=true as a boolean, which the string field holds as "True".
    text = choices[0] if value is None else str(value).strip().lower()
    if text not in choices:
        raise ConfigError(f"data.{key}={value!r} is not one of {' | '.join(choices)}")
    return text


def read_columns(path: Path, delimiter: str, header_setting: str) -> Columns:
    first = next(file_rows(path, delimiter), None)
    if first is None:
        raise DataError(f"{path} holds no rows")
    line, cells = first
    if header_setting == "auto":
        # A row with any number in it is data: a header-less file whose first row has an empty
        # cell ("1,") must not lose that row to a header.
        header = any(cell.strip() for cell in cells) and all(_number(cell) is None for cell in cells)
    else:
        header = header_setting == "true"
    columns = Columns([cell.strip() for cell in cells], header, line)
    if len(columns.names) < 2:
        raise DataError(f"{path} has {len(columns.names)} column; it needs at least one feature and one target")
    return columns


# The round-trip parser gives every number the float Python's float() gives; pandas' default
# parser can be one unit in the last place off (seen with pandas 3.0.6). pandas 3.1 deprecates
# the option (its default is exact there), so its warning is silenced where it is used.
EXACT_FLOATS = {"float_precision": "round_trip"}


def parse_numbers(path: Path, config: CsvConfig, columns: Columns) -> np.ndarray:
    """The table as float64 (rows, columns), NaN where a cell is empty or not a number."""
    # Imported here, not with the module: every run registers this plugin, and pandas' import
    # (about 0.2 s and 30 MB) is paid only by the runs that read a CSV file.
    import pandas as pd

    width = len(columns.names)
    options = dict(
        sep=config.delimiter, header=0 if columns.header else None, names=list(range(width)),
        engine="c", skip_blank_lines=True, encoding="utf-8",
        # Only an empty cell is missing: "NA", "null" and the like are text, refused as not a number.
        keep_default_na=False, na_values=[""],
        **EXACT_FLOATS,
    )
    try:
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*float_precision", category=Warning)
                return pd.read_csv(path, dtype=np.float64, **options).to_numpy()
        except pd.errors.ParserError:
            raise
        except ValueError:
            # Some cell is not a number: parse again as text, only to find where.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*float_precision", category=Warning)
                text = pd.read_csv(path, dtype=str, **options)
            return text.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    except pd.errors.ParserError as error:
        # A row with more cells than the first: find its line (a row with fewer is padded with
        # NaN, and found with the other non-finite rows).
        check_rows(path, config.delimiter, columns, np.empty((0, width)), np.empty(0, dtype=np.int64), drop=False)
        raise DataError(f"{path} is not a table of {width} columns: {error}") from None
    except pd.errors.EmptyDataError:
        return np.empty((0, width))
    except UnicodeDecodeError as error:
        raise DataError(f"{path} is not a readable CSV file: {error}") from None


def cell_problem(cell: str) -> str:
    """Why a cell the parser could not take as a finite number is refused."""
    if not cell.strip():
        return "missing"
    number = _number(cell)
    if number is not None and math.isnan(number):
        return f"{cell!r} is NaN (not a number)"
    if number is not None and math.isinf(number):
        return f"{cell!r} is infinite (or too large for a float)"
    return f"{cell!r} is not a number"


def check_rows(path: Path, delimiter: str, columns: Columns, table: np.ndarray, bad_rows: np.ndarray, *,
               drop: bool) -> np.ndarray:
    """Go through the file's rows: raise for the first problem, or return the rows to drop.

    ``bad_rows`` are the data rows (0-based, as in ``table``) that hold a value that is not a
    finite number; every row's number of cells is checked too. With data.missing=drop, returns
    the rows whose only problem is an empty cell.
    """
    width = len(columns.names)
    wanted = set(bad_rows.tolist())
    dropped = []
    rows = file_rows(path, delimiter)
    if columns.header:
        next(rows)
    for index, (line, cells) in enumerate(rows):
        if len(cells) != width:
            raise DataError(f"{path}, line {line}: {len(cells)} cells where the first row has {width}")
        if index not in wanted:
            continue
        problems = [(column, cell_problem(cells[column])) for column in np.flatnonzero(~np.isfinite(table[index]))]
        refused = [(column, problem) for column, problem in problems if problem != "missing"]
        if refused or not drop:
            column, problem = (refused or problems)[0]
            raise DataError(row_message(path, line, columns, column, problem))
        dropped.append(index)
        if len(dropped) == len(wanted):
            break
    if len(dropped) != len(wanted):
        # The two passes counted rows differently; never go on with values that are not numbers.
        raise DataError(f"{path} holds {len(wanted)} row(s) with cells that are not finite numbers, "
                        f"the first being data row {int(bad_rows[0]) + 1}")
    return np.asarray(dropped, dtype=np.int64)


def row_message(path: Path, line: int, columns: Columns, column: int, problem: str) -> str:
    where = f"{path}, line {line}, column {columns.label(column)}"
    if problem == "missing":
        return (f"{where}: the cell is empty (a missing value). Fill it in, or set data.missing=drop "
                "to leave out every row with an empty cell")
    message = f"{where}: {problem}; every cell must be a finite number"
    if line == columns.first_line and not columns.header:
        message += f" (if line {line} is a header, set data.header=true)"
    return message


def column_index(key: str, columns: Columns, path: Path, setting: str) -> int:
    """A column chosen by name, else by index (negative counts from the end)."""
    names, width = columns.names, len(columns.names)
    if columns.header and key in names:
        if names.count(key) > 1:
            raise DataError(f"{setting}: {path} has {names.count(key)} columns named {key!r}; "
                            f"choose by index instead. Columns: {columns.listing()}")
        return names.index(key)
    try:
        index = int(key)
    except ValueError:
        raise DataError(f"{setting}: {key!r} is not a column of {path}; columns: {columns.listing()}") from None
    if not -width <= index < width:
        raise DataError(f"{setting}: column {index} is out of range: {path} has {columns.listing()}")
    return index % width


def choose_columns(config: CsvConfig, columns: Columns, path: Path) -> tuple[int, list[int]]:
    """(target column, feature columns) from data.target and data.features."""
    width = len(columns.names)
    target = width - 1 if config.target is None else column_index(str(config.target), columns, path, f"data.target={config.target}")
    if config.features is None:
        return target, [index for index in range(width) if index != target]
    if not config.features:
        raise DataError(f"data.features is empty; list at least one column of {path}: {columns.listing()}")
    features = [column_index(str(key), columns, path, f"data.features={list(config.features)}") for key in config.features]
    if target in features:
        raise DataError(f"data.features lists the target column {columns.label(target)} of {path}; a column "
                        f"is either the target or a feature. Columns: {columns.listing()}")
    if len(set(features)) != len(features):
        raise DataError(f"data.features={list(config.features)} names a column of {path} twice; "
                        f"columns: {columns.listing()}")
    return target, features


def refuse_pandas_index(table: np.ndarray, columns: Columns, features: list[int], config: CsvConfig, path: Path) -> None:
    """Refuse to train on the index column DataFrame.to_csv writes, unless data.features asks for it.

    Trained as a feature, the row number makes the fit diverge, and the message then blames the
    learning rate.
    """
    if config.features is not None or not columns.header or 0 not in features:
        return
    if columns.names[0] not in PANDAS_INDEX_NAMES or not np.array_equal(table[:, 0], np.arange(len(table))):
        return
    others = ",".join(columns.key(index) for index in features if index != 0)
    raise DataError(
        f"{path}: the first column has no name and counts 0, 1, 2, ...: it looks like the index that "
        "pandas writes with DataFrame.to_csv, and it is not taken as a feature unless you say so. "
        f"To leave it out, choose the features (data.features=[{others}]) or write the file with "
        "to_csv(index=False); to keep it, list it in data.features (as 0) or give it a name in the header."
    )


def csv_table(config: CsvConfig, *, dtype) -> Dataset:
    header_setting = choice(config.header, "header", HEADER_CHOICES)
    drop_missing = choice(config.missing, "missing", MISSING_CHOICES) == "drop"
    path = regular_file(config.path)
    columns = read_columns(path, config.delimiter, header_setting)
    table = parse_numbers(path, config, columns)
    if len(table) == 0:
        raise DataError(f"{path} has a header but no data rows")
    target, features = choose_columns(config, columns, path)
    refuse_pandas_index(table, columns, features, config, path)
    bad_rows = np.flatnonzero(~np.isfinite(table).all(axis=1))
    if len(bad_rows):
        dropped = check_rows(path, config.delimiter, columns, table, bad_rows, drop=drop_missing)
        log.warning("data.missing=drop: left out %d of %d rows of %s, each with an empty cell",
                    len(dropped), len(table), path)
        table = np.delete(table, dropped, axis=0)
        if len(table) == 0:
            raise DataError(f"{path}: every row has an empty cell, so data.missing=drop leaves no data")
    values = torch.from_numpy(table)
    return Dataset(values[:, features].to(dtype), values[:, target].to(dtype), source=str(path))


@hookimpl
def framework_components():
    return [Component("data", "csv", csv_table, CsvConfig,
                      help="a CSV file (data.path); target column data.target (default the last), "
                           "features data.features (default the others)")]
