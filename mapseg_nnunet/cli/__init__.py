"""Console scripts; each parses arguments and calls the library."""
import argparse


def add_progress_flag(parser: argparse.ArgumentParser) -> None:
    """``--no_pbar`` as nnU-Net's commands spell it."""
    parser.add_argument("--no_pbar", action="store_true", help="Disable progress bars.")
