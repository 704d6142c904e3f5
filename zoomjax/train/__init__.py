"""Sharded SFT: `python -m zoomjax.train [CONFIG.yaml] [key=value ...]`.

    config.py     frozen-dataclass run config, YAML + dotted overrides, validation (`load_config`)
    mesh.py       the (data, fsdp, tensor) mesh and logical-axis rules
    pieces.py     the typed single-sequence pieces (Piece, GrpoPiece; flax.struct pytrees)
    batching.py   a global batch as [A, S, b] single-sequence pieces; placement (multi-process aware)
    data.py       StepStream over the grain SFT pipeline (exact resume); the synthetic copy task
    sources.py    which data (`data.kind`), streams, held-out evaluation
    sft_data.py   Toy Earth (generated on first use) / LRS-GRO examples, answer accuracy via the loop
    loss.py       masked next-token cross-entropy as (sum, count)
    optim.py      AdamW + warmup/cosine, clipping, weight-decay mask, frozen vision tower
    state.py      TrainState;  step.py  the jitted step (accumulation, non-finite skip)
    checkpoint.py orbax CheckpointManager (async, keep-N, atomic), params export
    logger.py     tqdm / TensorBoard / JSONL;  flops.py  model FLOPs, device peaks, MFU
    trainer.py    build(...) and train(cfg): the loop, SIGTERM, resume
"""
