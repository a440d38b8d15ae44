"""CSV files a person writes or exports (dataset manifests, reader-study readings), read strictly.

Layer 1 (data): imports only ``dermbench.data.sample``.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd

from dermbench.data.sample import DatasetError


def _separator(csv: Path) -> str:
    """``,``, or ``;`` / tab where the header line has that and no comma (Excel's export in many locales)."""
    try:
        with open(csv, encoding="utf-8-sig", errors="replace") as f:
            header = f.readline()
    except OSError as exc:
        raise DatasetError(f"{csv}: cannot be read ({exc})") from None
    if "," not in header:
        for sep in (";", "\t"):
            if sep in header:
                return sep
    return ","


def read_user_csv(csv: Path, what: str, header: str) -> pd.DataFrame:
    """A CSV a person wrote or exported (a manifest, reader-study readings) as strings, its separator taken
    from the header line (``,``, or ``;`` / tab as Excel writes in many locales). ``what`` and ``header``
    (the file's kind and the columns it needs) word the error on an empty file. A row with more fields
    than the header (an unquoted separator inside a caption, say) is an error naming the line: pandas
    would silently take its first fields as the index and shift every column."""
    sep = _separator(csv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(csv, dtype=str, keep_default_na=False, sep=sep, index_col=False)
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{csv}: the {what} is empty; it needs a header line {header} and one row per entry") from None
    except pd.errors.ParserWarning:  # the first data row is the long one
        raise _too_many_fields(csv, sep) from None
    except pd.errors.ParserError as exc:
        if "fields in line" in str(exc):  # a later row is the long one
            raise _too_many_fields(csv, sep) from None
        raise DatasetError(f"{csv}: not a readable CSV ({type(exc).__name__}: {exc})") from None
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{csv}: not a readable CSV ({type(exc).__name__}: {exc}); save it as UTF-8 CSV") from None


def _too_many_fields(csv: Path, sep: str) -> DatasetError:
    """The error for the first row with more fields than the header, naming its line."""
    import csv as csvlib

    where = str(csv)
    with open(csv, newline="", encoding="utf-8-sig") as f:
        rows = csvlib.reader(f, delimiter=sep)
        width = len(next(rows, []))
        for line, row in enumerate(rows, start=2):
            if len(row) > width:
                where = f"{csv}:{line}"
                break
    return DatasetError(f"{where}: more fields than the header; put values that contain {sep!r} in double quotes "
                        f"(\"a{sep} b\")")
