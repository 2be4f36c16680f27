"""The training program behind `fromnet train`: what it runs, kept apart from the library it trains.

One file per concern: ``data`` (shards -> seeded micro-batches), ``params`` + ``configs/`` (settings and the
paper's recipes), ``state`` (model, classifier, optimizers, scaler: what a step updates and a checkpoint holds),
``step`` (one step: forward, loss, backward over micro-batches, update), ``loop`` (settling a run and the loop
around the step), ``checkpoints`` (saving and resuming), ``runfolder`` (lock, leftovers, refusing to mix runs),
``stop`` (Ctrl-C and SIGTERM), ``memory`` (defaults that fit the machine), ``validate``, ``partial_fc`` (the
classifier sharded over ranks), ``distributed`` (process group), ``progress`` (bar, metrics.jsonl, loss curve)
and ``bench``. The library it trains (``fromnet.models``, ``fromnet.losses``, ``fromnet.eval``) knows nothing of it.
"""
