"""The base of every config section (kept apart so stage modules can define their sections
without importing ``mammogan_tf.config``, which assembles them)."""
from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Base of every config section: unknown keys are errors; values are re-checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
