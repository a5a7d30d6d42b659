"""The bundled trainer of Finetune Desk.

`trainer.config` and `trainer.protocol` are the torch-free contract the app imports; everything
else runs in the trainer's own process (`python -m trainer ...`) and imports torch lazily.
"""
