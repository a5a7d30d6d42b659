"""Guards on the private transformers API the trainer overrides (trainer/recipe.py).

`JobTrainer._save_checkpoint` replaces SFTTrainer's and calls `Trainer._save_checkpoint`
directly. Both are private: an upgrade may change them without notice, and a changed signature
would break checkpointing (and so cancel and resume) only at the first save of a real run.
These tests fail first, saying what changed, so the override is read again before it is trusted.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from trainer.recipe import SAVE_CHECKPOINT_PARAMETERS, job_trainer_class


def _parameters(function: Callable[..., Any]) -> list[tuple[str, str, bool]]:
    """(name, kind, has a default) of each parameter: what a caller and an override rely on."""
    return [
        (p.name, p.kind.name, p.default is not inspect.Parameter.empty)
        for p in inspect.signature(function).parameters.values()
    ]


EXPECTED = [(name, "POSITIONAL_OR_KEYWORD", False) for name in SAVE_CHECKPOINT_PARAMETERS]


def test_transformers_save_checkpoint_signature_is_the_one_the_override_was_written_for() -> None:
    import transformers
    from transformers import Trainer

    found = _parameters(Trainer._save_checkpoint)
    assert found == EXPECTED, (
        f"transformers {transformers.__version__} changed the private method "
        f"Trainer._save_checkpoint: its parameters are now {found}, but JobTrainer's override "
        f"in trainer/recipe.py was written for {EXPECTED} "
        f"(signature now: {inspect.signature(Trainer._save_checkpoint)}). Read the new "
        "Trainer._save_checkpoint, adapt the override, then update SAVE_CHECKPOINT_PARAMETERS."
    )


def test_the_trainer_still_calls_save_checkpoint_with_model_and_trial() -> None:
    import transformers
    from transformers import Trainer

    source = inspect.getsource(Trainer)
    assert "self._save_checkpoint(model, trial)" in source, (
        f"transformers {transformers.__version__}: Trainer no longer calls "
        "`self._save_checkpoint(model, trial)`; check how it saves checkpoints now and whether "
        "JobTrainer._save_checkpoint in trainer/recipe.py is still called."
    )


def test_sft_trainer_and_our_override_agree_with_the_trainer() -> None:
    import trl
    from trl import SFTTrainer  # type: ignore[attr-defined]

    job_trainer = job_trainer_class()
    assert job_trainer.__mro__[1] is SFTTrainer
    assert _parameters(job_trainer._save_checkpoint) == EXPECTED
    # SFTTrainer's override is the one JobTrainer skips; if it takes other parameters, what
    # it adds has to be looked at again.
    if "_save_checkpoint" in vars(SFTTrainer):
        found = _parameters(SFTTrainer._save_checkpoint)
        assert found == EXPECTED, (
            f"trl {trl.__version__} changed SFTTrainer._save_checkpoint: parameters {found}, "
            f"expected {EXPECTED}; JobTrainer in trainer/recipe.py skips it, check that it "
            "still only adds the model card."
        )
