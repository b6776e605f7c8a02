"""``python -m mammogan_tf`` is the ``mammogan`` command."""
import sys

from mammogan_tf.cli import main

sys.exit(main())
