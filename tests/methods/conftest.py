"""Fixtures the recipe tests share: one torch thread, phantom images, interrupted training
runs and ``flipseg train RECIPE`` commands driven through the recipe's own parser."""

import argparse
import contextlib
from typing import Any, Callable

import pytest
import torch

from flipseg.data import phantom_dataset_2d
from flipseg.errors import FlipsegError


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks run fastest (and steadiest on a busy machine) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def phantoms(request):
    """2D phantoms (40 x 48) with masks and boxes; a test module sets ``N_PHANTOMS`` for
    another count than 12."""
    return phantom_dataset_2d(getattr(request.module, "N_PHANTOMS", 12), seed=3, shape=(40, 48))


@pytest.fixture
def interrupted_after(monkeypatch):
    """``with interrupted_after(n): train(...)``: the training run inside is killed
    (KeyboardInterrupt) right after its log holds ``n`` rows, i.e. after everything of
    that epoch was saved; the block expects the interrupt."""
    from flipseg.methods import training

    real = training.write_log

    @contextlib.contextmanager
    def after(n_rows: int):
        def write_then_stop(path, rows):
            real(path, rows)
            if len(rows) == n_rows:
                raise KeyboardInterrupt

        monkeypatch.setattr(training, "write_log", write_then_stop)
        try:
            with pytest.raises(KeyboardInterrupt):
                yield
        finally:
            monkeypatch.setattr(training, "write_log", real)

    return after


class RecipeCli:
    """``flipseg train RECIPE ARGV``, parsed by the recipe's own parser and run by its command."""

    def __init__(self, recipe: str, add_parser: Callable, command: Callable, bad_out: Any) -> None:
        self.recipe, self.add_parser, self.command, self.bad_out = recipe, add_parser, command, bad_out

    def parse(self, argv: list[str]) -> argparse.Namespace:
        parser = argparse.ArgumentParser(prog="flipseg train")
        self.add_parser(parser.add_subparsers(dest="recipe", required=True).add_parser(self.recipe))
        return parser.parse_args([self.recipe, *argv])

    def __call__(self, argv: list[str]) -> int:
        return self.command(self.parse(argv))

    def expect_errors(self, errors: dict[str, list[str]]) -> None:
        """Each argv (``--out`` added when missing) fails with a one-line error matching its key."""
        for message, argv in errors.items():
            argv = argv if "--out" in argv else [*argv, "--out", str(self.bad_out)]
            with pytest.raises(FlipsegError, match=message) as info:
                self(argv)
            assert "\n" not in str(info.value)


@pytest.fixture
def recipe_cli(tmp_path):
    """``recipe_cli("pseudo", add_pseudo_args, train_pseudo_cli)`` -> a :class:`RecipeCli`."""

    def make(recipe: str, add_parser: Callable, command: Callable) -> RecipeCli:
        return RecipeCli(recipe, add_parser, command, tmp_path / "bad")

    return make
