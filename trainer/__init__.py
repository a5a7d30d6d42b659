"""The bundled trainer of Finetune Desk.

`trainer.config`, `trainer.protocol` and `trainer.reports` are the torch-free contract the app
imports; everything else runs in the trainer's own process (`python -m trainer ...`) and
imports torch lazily: `trainer.run` (a run's lifecycle), `trainer.recipe` (the config turned
into the training stack's objects), `trainer.launch` and `trainer.strategy` (several
processes), `trainer.data` (reading and checking datasets), `trainer.doctor`, `trainer.demo`.
"""
