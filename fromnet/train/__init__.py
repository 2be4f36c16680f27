"""The training program behind `fromnet train`: what it runs, kept apart from the library it trains.

One file per concern: ``data`` (shards -> seeded micro-batches), ``params`` + ``configs/`` (settings and the
paper's recipes), ``loop`` (the run: state, schedule, checkpoints, validation), ``partial_fc`` (the classifier
sharded over ranks), ``distributed`` (process group), ``progress`` (bar, metrics.jsonl) and ``bench``.
The library it trains (``fromnet.models``, ``fromnet.losses``, ``fromnet.eval``) knows nothing of it.
"""
