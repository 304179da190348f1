"""What every study of :mod:`benchmarks.studies` repeats: where its results go, its common command-line arguments,
the command it records, and its result files.

A study runs from the repository root as ``python -m benchmarks.studies.NAME`` and writes ``NAME.json`` and
``NAME.md`` (plots too, for some) to ``--out``, by default its own folder ``benchmarks/results/NAME/``."""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, List, Optional

from .cohort import PLANNERS

HERE = os.path.dirname(os.path.abspath(__file__))  # benchmarks/
REPO = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")  # RESULTS.md, results.json, FINDINGS.md, then one folder per study
WORK = os.path.join(REPO, "work_dirs", "benchmarks")  # the work folder python -m benchmarks.run uses


def results_folder(study: str) -> str:
    """``benchmarks/results/STUDY``: where a study's .md / .json / .png land by default."""
    return os.path.join(RESULTS, study)


def add_seed(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0)


def add_plans(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--plans", default=default, choices=sorted(PLANNERS))


def add_work_and_out(parser: argparse.ArgumentParser, study: str, work: str = WORK) -> None:
    """``--work`` (default: the benchmark's work folder, so trained models are shared) and ``--out`` (default:
    :func:`results_folder` of ``study``)."""
    parser.add_argument("--work", default=work)
    parser.add_argument("--out", default=results_folder(study))


def command_line(study: str, argv: Optional[List[str]] = None) -> str:
    """The command line a study's result records: ``python -m benchmarks.studies.STUDY ARGS``."""
    return f"python -m benchmarks.studies.{study} " + " ".join(argv if argv is not None else sys.argv[1:])


def save_result(out: str, name: str, result: dict, write_markdown: Callable[[str, dict], None],
                say: Callable[[str], None] = print) -> None:
    """A study's result: ``out/NAME.json`` and the report ``write_markdown(out, result)`` writes."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(result, f, indent=1)
    write_markdown(out, result)
    say(f"done: {os.path.join(out, name + '.md')}")
