"""Evaluation as the paper reports it: `python -m zoomjax.eval {score,run}`.

* `loaders`: LRS-GRO, LRS-VQA, MME-RealWorld (remote sensing), XLRS-Bench, GeoLLaVA-8K -> `Question`s.
* `choices`: multiple-choice letters from free text.
* `metrics`: accuracy per type / category / higher level, APO IoU, stage-1 accuracy, crop statistics.
* `score`: predictions JSONL x annotations -> report dict / REPORT.json; `report`: the markdown table.
* `run`: the resumable, batched driver around an `answer_fn(questions) -> list[prediction dict]`.
"""
