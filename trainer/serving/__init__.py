"""Serving: what an export holds besides its SavedModel, and the code behind the inference commands.

TF-free (the CLI imports them to parse and dispatch):
  metadata.py     the one export metadata file, `export/assets.extra/seqtrain.json`
  inference.py    which task a run is, which command serves it, `-` / @FILE inputs

Import TensorFlow (imported when a command runs or a task exports):
  char_sampler.py the stateful character sampler and `seqtrain generate`
  translator.py   the string-to-string seq2seq graph and `seqtrain translate`
  classifier.py   `seqtrain predict` on a text_classification export
  forecaster.py   `seqtrain predict` on a (multistep_)forecasting export
"""
