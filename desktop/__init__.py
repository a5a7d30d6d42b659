"""Finetune Desk: the app (GUI and CLI). Never imports torch; talks to the trainer through
`trainer.config` and `trainer.protocol` and the job directory."""
