"""The analyses of trained encoders, world models and shifts (``dreamshift analyze``). The encoder analyses
explain *why* a fine-tuning mode is (or is not) robust under visual shift (Jones, Zhou & Pattinson 2025 ran them
off-repo).

One job a file:

- :mod:`~experiments.analysis.frames`: seeded env frames (and ground-truth foreground masks from MuJoCo
  segmentation) that every analysis reads.
- :mod:`~experiments.analysis.sources`: the encoders compared -- the pretrained end point
  (:func:`mbrl.runs.merge.pretrained_encoder_state`), a run's fine-tuned encoder and a random-init control.
- :mod:`~experiments.analysis.attention`: last-block CLS attention of ViT encoders, DINO-style mass thresholding.
- :mod:`~experiments.analysis.jaccard`: attention-mask vs foreground-mask Jaccard index and the overlay PNG.
- :mod:`~experiments.analysis.knn`: cosine k-NN classifier; :mod:`~experiments.analysis.forgetting`: its accuracy on
  a labelled image set, pretrained vs fine-tuned features.
- :mod:`~experiments.analysis.cka`: linear CKA; :mod:`~experiments.analysis.drift`: CKA per block between the
  pretrained and fine-tuned encoder.
- :mod:`~experiments.analysis.report`: atomic JSON + JSONL output (one record per measurement).

Shift-severity calibration lives in :mod:`experiments.analysis.calibration`, world-model diagnostics in
:mod:`experiments.analysis.diagnostics`, the command line in :mod:`dreamshift.analyze`.
"""
