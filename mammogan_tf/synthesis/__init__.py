"""Synthesis: sampling trained generators and exporting marked synthetic patches.

- ``sampling``: ``load_generator(run_dir, checkpoint)``, ``latent_vectors``, ``generate_batches``
  (image i of a seed is the same whatever the batching).
- ``export``: provenance records, 16-bit PNG with text chunks, synthetic DICOM.
- ``synthesize``: ``run_synthesize`` (the ``mammogan synthesize`` stage: shards, PNG or DICOM
  plus a ``synthesize`` manifest); from a run or from an export (``model_export.load_export``).
- ``contextual`` / ``contextual_stage``: contextual (Wu et al.) runs: real source patches ->
  generator -> post-processing -> marked patches with source provenance (``--from``).
- ``postprocess``, ``reinsert``, ``full_images``: the paper's post-processing, blending a patch
  back into its image, and ``--reinsert`` (full mammograms + an extended lesion table).
- ``model_export``: ``export_model`` (the ``mammogan export`` stage: ``.keras``, SavedModel with
  the serving signature, optional ONNX) and ``load_export``.
- ``model_card``: ``build_model_card`` / ``render_model_card`` (``model_card.json``, ``MODEL_CARD.md``).
"""
