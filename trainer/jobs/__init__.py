"""Job specs for running `seqtrain train` on clusters.

`render.py` turns a validated config plus a few cluster flags into a
ready-to-submit spec (Kubeflow TFJob, Kubernetes Indexed Job, Vertex AI
CustomJob, GKE TPU slice). `cli.py` is the `seqtrain job` click group.
The specs hold no logic: every pod runs the same `seqtrain train` command a
person runs locally, and the trainer reads its role from the environment
(see trainer/cluster.py).
"""
