"""Tasks defined outside seqtrain, registered through SEQTRAIN_TASK_MODULES (docs/tasks.md)."""
