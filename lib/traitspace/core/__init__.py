"""The shared core every stage builds on: params, model loading, chat formatting, activation hooks,
sampling, artifacts (atomic writes, manifests, per-checkpoint parts), checkpoints, statistics,
trait and trajectory maths, plots. Nothing here knows about a particular stage's outputs."""
