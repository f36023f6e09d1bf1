"""Encoder analyses that explain *why* a fine-tuning mode is (or is not) robust under visual shift
(``dreamshift analyze``; Jones, Zhou & Pattinson 2025 ran them off-repo).

One job a file:

- :mod:`~encoders.analysis.frames`: seeded env frames (and ground-truth foreground masks from MuJoCo
  segmentation) that every analysis reads.
- :mod:`~encoders.analysis.sources`: the encoders compared -- the pretrained end point
  (:func:`mbrl.merge.pretrained_encoder_state`), a run's fine-tuned encoder and a random-init control.
- :mod:`~encoders.analysis.attention`: last-block CLS attention of ViT encoders, DINO-style mass thresholding.
- :mod:`~encoders.analysis.jaccard`: attention-mask vs foreground-mask Jaccard index and the overlay PNG.
- :mod:`~encoders.analysis.knn`: cosine k-NN classifier; :mod:`~encoders.analysis.forgetting`: its accuracy on
  a labelled image set, pretrained vs fine-tuned features.
- :mod:`~encoders.analysis.cka`: linear CKA; :mod:`~encoders.analysis.drift`: CKA per block between the
  pretrained and fine-tuned encoder.
- :mod:`~encoders.analysis.report`: atomic JSON + JSONL output (one record per measurement).

Shift-severity calibration lives in :mod:`shifts.calibration`, world-model diagnostics in
:mod:`mbrl.diagnostics`, the command line in :mod:`mbrl.cli_analyze`.
"""
