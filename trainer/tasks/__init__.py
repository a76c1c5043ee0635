"""Tasks: one config module (trainer/tasks/configs/, no TensorFlow) and one Task module each.

Adding a task: write both modules and add one line here (see trainer/registry.py).
"""

SPECS = (
    "trainer.tasks.configs.text_classification",
    "trainer.tasks.configs.forecasting",
    "trainer.tasks.configs.multistep_forecasting",
    "trainer.tasks.configs.text_generation",
    "trainer.tasks.configs.translation",
)
