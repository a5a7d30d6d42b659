"""The trainer's modules form no import cycle, counting imports made inside functions.

`trainer.run` (the run's lifecycle) starts `trainer.launch` (the multi-process supervisor),
which must not reach back into the run: what both need (the job folder's rules, the strategy's
training arguments) lives in modules of its own below them.
"""

from __future__ import annotations

import itertools

import grimp


def test_no_two_trainer_modules_reach_each_other() -> None:
    graph = grimp.build_graph("trainer")  # function-level imports included
    modules = sorted(graph.modules)
    both_ways = [
        (a, b)
        for a, b in itertools.combinations(modules, 2)
        if graph.chain_exists(importer=a, imported=b) and graph.chain_exists(importer=b, imported=a)
    ]
    assert both_ways == []


def test_run_reaches_launch_and_launch_does_not_reach_run() -> None:
    graph = grimp.build_graph("trainer")
    assert graph.chain_exists(importer="trainer.run", imported="trainer.launch")
    assert not graph.chain_exists(importer="trainer.launch", imported="trainer.run")
    assert not graph.chain_exists(importer="trainer.launch", imported="trainer.recipe")
