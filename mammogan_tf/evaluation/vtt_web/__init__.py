"""Visual Turing test in the browser: ``mammogan vtt serve|invite|export``.

A study folder written by ``mammogan vtt make`` (``key.csv``, ``study.json``,
``observers/images/*.png``) is served by a small Flask application under waitress. Readers open
a personal link (``/r/<token>/``), rate one image at a time, and every answer is committed to
``STUDY_DIR/vtt.sqlite3`` (SQLite, WAL) before it is acknowledged. The owner's link
(``/o/<token>/``) shows the scores as they arrive.

Modules: ``study`` (load and check a study folder, strip images, per-reader order), ``store``
(SQLite: tokens, opaque image ids, answers, export), ``app`` (routes), ``server`` (bind, warn,
run).
"""

DEFAULT_PORT = 8765
"""Port of ``mammogan vtt serve`` and of the links ``mammogan vtt invite`` prints by default."""
