"""The ``csv`` data source: numbers from a delimited text file, target column chosen by name or index."""

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from omegaconf import MISSING

from framework import Component, DataConfig, DataError, Dataset, hookimpl


@dataclass
class CsvConfig(DataConfig):
    path: str = MISSING
    target: Optional[str] = None  # column name or index (negative counts from the end); null: last
    header: Optional[bool] = None  # null: a first row with any non-number is a header
    delimiter: str = ","


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def read_rows(path: Path, delimiter: str) -> list[tuple[int, list[str]]]:
    """(line number, cells) for every non-blank row."""
    try:
        with path.open(newline="") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            return [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except OSError as error:
        raise DataError(f"cannot read data.path={path}: {error.strerror or error}") from None
    except (csv.Error, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not a readable CSV file: {error}") from None


def target_index(target: str | None, names: list[str], path: Path) -> int:
    width = len(names)
    if target is None:
        return width - 1
    if target in names:
        return names.index(target)
    try:
        index = int(target)
    except ValueError:
        raise DataError(f"data.target={target!r} is not a column of {path}; columns: {', '.join(names)}") from None
    if not -width <= index < width:
        raise DataError(f"data.target={index} is out of range: {path} has {width} columns")
    return index % width


def csv_table(config: CsvConfig, *, dtype) -> Dataset:
    path = Path(config.path).expanduser()
    rows = read_rows(path, config.delimiter)
    if not rows:
        raise DataError(f"{path} holds no rows")
    first_line, first = rows[0]
    header = config.header
    if header is None:
        header = any(_number(cell) is None for cell in first)
    names = [cell.strip() for cell in first] if header else [str(i) for i in range(len(first))]
    body = rows[1:] if header else rows
    if not body:
        raise DataError(f"{path} has a header but no data rows")
    width = len(names)
    if width < 2:
        raise DataError(f"{path} has {width} column; it needs at least one feature and one target")
    values = []
    for line, row in body:
        if len(row) != width:
            raise DataError(f"{path}, line {line}: {len(row)} cells where the first row has {width}")
        numbers = []
        for column, cell in zip(names, row):
            number = _number(cell)
            if number is None:
                raise DataError(f"{path}, line {line}, column {column!r}: {cell!r} is not a number")
            numbers.append(number)
        values.append(numbers)
    table = torch.tensor(values, dtype=dtype)
    target = target_index(config.target, names, path)
    features = torch.cat([table[:, :target], table[:, target + 1:]], dim=1)
    return Dataset(features, table[:, target], source=str(path))


@hookimpl
def framework_components():
    return [Component("data", "csv", csv_table, CsvConfig,
                      help="a CSV file (data.path); target column data.target, default the last")]
